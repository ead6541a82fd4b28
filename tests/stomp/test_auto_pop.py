"""``ack:auto`` on a queue takes its messages with one pop (claimed and deleted in one
step): no claim, no ack, so a durable message costs its INSERT and one DELETE."""

from __future__ import annotations

import json
from typing import Any

import pytest
from twisted.internet.task import Clock

from qgate.core.model import NewMessage, QueueOptions
from qgate.core.service import QueueService
from qgate.storage.memory import MemoryStorage
from tests.support.core import TEST_LIMITS
from tests.support.deferreds import fired
from tests.support.doubles import Delegating
from tests.support.schemas import USER_V1
from tests.support.stomp import Client, make_ctx


class CountedCalls(Delegating):
    """A memory store that records its pops, claims and acks (and does them)."""

    def __init__(self, target: Any) -> None:
        super().__init__(target)
        self.calls: list[tuple[str, int]] = []
        #: Each pop's ``prompt``.
        self.prompt: list[bool] = []

    def pop_messages(self, tenant: str, name: str, limit: int, now: float, **kw: Any) -> Any:
        self.calls.append(("pop", limit))
        self.prompt.append(kw.get("prompt", False))
        return self.target.pop_messages(tenant, name, limit, now, **kw)

    def claim(
        self, tenant: str, name: str, claim_id: str, limit: int, *args: Any, **kw: Any
    ) -> Any:
        self.calls.append(("claim", limit))
        return self.target.claim(tenant, name, claim_id, limit, *args, **kw)

    def ack_now(self, tenant: str, name: str, claim_id: str, markers: Any, now: float) -> Any:
        # The service acks a memory store synchronously (it still provides that interface).
        self.calls.append(("ack", len(markers)))
        return self.target.ack_now(tenant, name, claim_id, markers, now)


@pytest.fixture
def store() -> CountedCalls:
    return CountedCalls(MemoryStorage())


@pytest.fixture
def service(clock: Clock, store: CountedCalls) -> QueueService:
    return QueueService(clock, store, MemoryStorage(), limits=TEST_LIMITS)


def _client(service: QueueService) -> Client:
    client = Client(make_ctx(service, heartbeat_ms=0))
    client.connect()
    return client


def _publish(service: QueueService, *bodies: bytes) -> None:
    fired(service.publish("default", "q", [NewMessage(b) for b in bodies]))


def _claimed_and_total(service: QueueService, queue: str = "q") -> tuple[int, int]:
    stats = fired(service.queue_stats("default", queue))
    return stats.claimed, stats.total


def test_an_auto_ack_subscriber_gets_everything_in_order_by_pops_of_its_prefetch(service, store):
    bodies = [b"m%d" % i for i in range(8)]
    _publish(service, *bodies)
    client = _client(service)
    client.send("SUBSCRIBE", {"destination": "/queue/q", "id": "s", "prefetch-count": "3"})
    assert [m.body for m in client.messages()] == bodies
    assert _claimed_and_total(service) == (0, 0)
    # Batches of at most prefetch-count, one storage call each, then a parked wait.
    assert store.calls[:3] == [("pop", 3)] * 3
    assert {name for name, _ in store.calls} == {"pop"}
    # What it pops it only delivers: answered before the storage commits (SQL).
    assert set(store.prompt) == {True}


def test_an_auto_ack_subscriber_waits_for_what_is_published_after_subscribe(service, store):
    client = _client(service)
    client.send("SUBSCRIBE", {"destination": "/queue/q", "id": "s", "receipt": "r"})
    assert [f.command for f in client.read()] == ["RECEIPT"]
    assert service.waiting("default", "q") == 1
    _publish(service, b"later", b"and-later")
    assert [m.body for m in client.messages()] == [b"later", b"and-later"]
    assert _claimed_and_total(service) == (0, 0)
    assert {name for name, _ in store.calls} == {"pop"}
    assert service.waiting("default", "q") == 1  # parked again, nothing lost meanwhile


def test_a_message_claimed_and_given_back_before_is_popped_as_redelivered(service, store):
    _publish(service, b"again")
    first = _client(service)
    first.send("SUBSCRIBE", {"destination": "/queue/q", "id": "s", "ack": "client"})
    assert [m.body for m in first.messages()] == [b"again"]
    first.lose()  # unacked: back to the queue
    second = _client(service)
    second.send("SUBSCRIBE", {"destination": "/queue/q", "id": "s"})
    [m] = second.messages()
    assert (m.body, m.headers.get("redelivered")) == (b"again", "true")
    assert _claimed_and_total(service) == (0, 0)


def test_unsubscribed_auto_ack_takes_nothing_more(service, store):
    client = _client(service)
    client.send("SUBSCRIBE", {"destination": "/queue/q", "id": "s"})
    client.send("UNSUBSCRIBE", {"id": "s", "receipt": "u"})
    assert [f.command for f in client.read()] == ["RECEIPT"]
    assert service.waiting("default", "q") == 0
    _publish(service, b"kept")
    assert _claimed_and_total(service) == (0, 1)


def test_client_acks_and_dead_lettering_queues_keep_claims(service, store):
    fired(service.create_queue("default", "q", QueueOptions(max_claim_count=3)))
    _publish(service, b"a", b"b")
    auto = _client(service)
    auto.send("SUBSCRIBE", {"destination": "/queue/q", "id": "s"})
    assert [m.body for m in auto.messages()] == [b"a", b"b"]
    assert store.calls[0][0] == "claim"  # only claims count toward max_claim_count
    assert "pop" not in {name for name, _ in store.calls}
    store.calls.clear()
    fired(service.publish("default", "c", [NewMessage(b"c")]))
    client = _client(service)
    client.send("SUBSCRIBE", {"destination": "/queue/c", "id": "s", "ack": "client"})
    [m] = client.messages()
    client.send("ACK", {"id": m.headers["ack"]})
    names = [name for name, _ in store.calls]
    assert ("claim" in names, "ack" in names, "pop" in names) == (True, True, False)
    assert _claimed_and_total(service, "c") == (0, 0)


def test_schema_checked_queues_keep_claims_for_auto_ack(service, store):
    """Their bodies are converted after they are taken: a batch that fails to convert
    must go back to the queue, which a pop cannot do."""
    schema = json.dumps(USER_V1)
    fired(service.create_queue("default", "typed", QueueOptions(schema_text=schema)))
    fired(
        service.publish(
            "default",
            "typed",
            [NewMessage(b'{"id": 1, "name": "a"}', content_type="application/json")],
        )
    )
    auto = _client(service)
    auto.send("SUBSCRIBE", {"destination": "/queue/typed", "id": "s"})
    assert len(auto.messages()) == 1
    names = {name for name, _ in store.calls}
    assert "claim" in names and "pop" not in names
