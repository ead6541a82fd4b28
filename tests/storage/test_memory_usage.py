"""What the transient (memory) store holds: bounded in total by ``max_bytes``
(``[queues] transient_max_bytes``), counted per tenant, and given back when a queue is
deleted or purged (no reference kept: tracemalloc sees the memory freed)."""

from __future__ import annotations

import gc
import tracemalloc

import pytest
from twisted.internet.task import Clock

from qgate.core.errors import QueueFull
from qgate.core.model import NewMessage, QueueOptions
from qgate.core.service import QueueService
from qgate.storage._memory_queue import MESSAGE_OVERHEAD
from qgate.storage.memory import MemoryStorage
from tests.support.core import TEST_LIMITS
from tests.support.deferreds import fired

TRANSIENT = QueueOptions(durable=False)


def _service(clock: Clock, max_bytes: int | None) -> tuple[QueueService, MemoryStorage]:
    transient = MemoryStorage(max_bytes=max_bytes)
    return QueueService(clock, MemoryStorage(), transient, limits=TEST_LIMITS), transient


def test_a_publish_past_transient_max_bytes_is_refused_naming_the_limit(clock: Clock) -> None:
    service, store = _service(clock, max_bytes=10 * (1000 + MESSAGE_OVERHEAD))
    fired(service.create_queue("t", "q", TRANSIENT))
    fired(service.publish("t", "q", [NewMessage(b"x" * 1000)] * 9))
    d = service.publish("t", "q", [NewMessage(b"x" * 1000)] * 2)
    with pytest.raises(QueueFull, match="transient_max_bytes"):
        fired(d)
    assert fired(service.queue_stats("t", "q")).total == 9  # nothing of the batch stored
    fired(service.publish("t", "q", [NewMessage(b"x" * 1000)]))
    assert store.held_bytes == 10 * (1000 + MESSAGE_OVERHEAD)


def test_every_tenant_counts_toward_the_one_bound(clock: Clock) -> None:
    service, store = _service(clock, max_bytes=4 * (100 + MESSAGE_OVERHEAD))
    for tenant in ("a", "b"):
        fired(service.create_queue(tenant, "q", TRANSIENT))
        fired(service.publish(tenant, "q", [NewMessage(b"y" * 100)] * 2))
    fired(service.create_queue("a", "other", TRANSIENT))
    with pytest.raises(QueueFull):
        fired(service.publish("a", "other", [NewMessage(b"y")]))
    assert store.tenant_bytes("a") == store.tenant_bytes("b") == 2 * (100 + MESSAGE_OVERHEAD)


def test_bytes_per_tenant_follow_pops_acks_purges_and_deletes(clock: Clock) -> None:
    service, store = _service(clock, max_bytes=None)
    one = 10 + MESSAGE_OVERHEAD + len("h") + len("v")
    fired(service.create_queue("t", "q", TRANSIENT))
    fired(service.publish("t", "q", [NewMessage(b"z" * 10, headers={"h": "v"})] * 4))
    assert store.tenant_bytes("t") == 4 * one
    fired(service.pop_messages("t", "q", 1))
    assert store.tenant_bytes("t") == 3 * one
    claim = fired(service.claim("t", "q", limit=1, ttl=30))
    assert claim is not None
    fired(service.ack("t", "q", claim.id, [m.id for m in claim.messages]))
    assert store.tenant_bytes("t") == 2 * one
    fired(service.purge_queue("t", "q"))
    assert store.tenant_bytes("t") == 0
    fired(service.publish("t", "q", [NewMessage(b"z" * 10, headers={"h": "v"})]))
    assert store.tenant_bytes("t") == one
    fired(service.delete_queue("t", "q"))
    assert store.tenant_bytes("t") == 0 and store.held_bytes == 0


@pytest.mark.parametrize("how", ["delete", "purge"])
def test_a_deleted_or_purged_transient_queue_gives_its_memory_back(clock: Clock, how: str) -> None:
    service, _ = _service(clock, max_bytes=None)
    fired(service.create_queue("t", "warm", TRANSIENT))
    fired(service.publish("t", "warm", [NewMessage(b"w" * 100)]))
    gc.collect()
    tracemalloc.start()
    try:
        before = tracemalloc.get_traced_memory()[0]
        fired(service.create_queue("t", "q", TRANSIENT))
        for i in range(200):
            batch = [NewMessage(bytes([i % 256]) * 10_000) for _ in range(10)]
            fired(service.publish("t", "q", batch))
        held = tracemalloc.get_traced_memory()[0] - before
        assert held > 20_000_000  # 2,000 bodies of 10 kB
        if how == "delete":
            fired(service.delete_queue("t", "q"))
        else:
            fired(service.purge_queue("t", "q"))
        gc.collect()
        left = tracemalloc.get_traced_memory()[0] - before
    finally:
        tracemalloc.stop()
    assert left < held / 100, f"{left} bytes of {held} still held"
