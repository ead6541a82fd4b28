"""Property tests (hypothesis) of ordering, claim and TTL invariants, on memory and SQLite.

Each property is one coroutine run on both backends. A SQLite example costs real
transactions, so it gets fewer examples; its examples share one database, each on a queue
of its own.
"""

from __future__ import annotations

import itertools
from collections.abc import Iterator
from typing import Any

import pytest
import pytest_twisted
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from twisted.internet.task import Clock

from qgate.core.model import NewMessage
from qgate.core.service import QueueService
from qgate.storage.memory import MemoryStorage
from tests.support.core import TEST_LIMITS, make_clock
from tests.support.stores import open_store

T = "t"

new_messages = st.lists(
    st.builds(
        NewMessage,
        body=st.binary(max_size=8),
        priority=st.integers(0, 9),
        ttl=st.one_of(st.none(), st.integers(1, 100).map(float)),
        delay=st.one_of(st.none(), st.integers(0, 20).map(float)),
    ),
    min_size=1,
    max_size=40,
)

ON_MEMORY = settings(deadline=None)
#: The examples share the test's SQLite store (the fixture), on queues of their own.
ON_SQLITE = settings(
    max_examples=20, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
_queues = itertools.count()


class Run:
    """One example: a service on a fresh clock over ``durable``, and a queue of its own."""

    def __init__(self, durable: Any) -> None:
        self.clock: Clock = make_clock(1000)
        self.service = QueueService(self.clock, durable, MemoryStorage(), limits=TEST_LIMITS)
        self.queue = f"q{next(_queues)}"

    async def publish_all(self, batch: list[NewMessage], chunk: int) -> list[str]:
        ids: list[str] = []
        for i in range(0, len(batch), chunk):
            ids += await self.service.publish(T, self.queue, batch[i : i + chunk])
        return ids


@pytest.fixture
def sqlite(reactor: Any, tmp_path: Any) -> Iterator[Any]:
    store = open_store("sqlite", reactor, tmp_path, None)
    yield store
    pytest_twisted.blockon(store.close())


def on_memory_and_sqlite(prop: Any, memory_examples: int = 60, **strategies: Any) -> Any:
    """Two tests of the property ``prop(durable, **drawn)``: on memory, and on SQLite with
    fewer examples."""

    @settings(ON_MEMORY, max_examples=memory_examples)
    @given(**strategies)
    @pytest_twisted.ensureDeferred
    async def on_memory(**drawn: Any) -> None:
        await prop(MemoryStorage(), **drawn)

    @ON_SQLITE
    @given(**strategies)
    @pytest_twisted.ensureDeferred
    async def on_sqlite(sqlite: Any, **drawn: Any) -> None:
        await prop(sqlite, **drawn)

    return on_memory, on_sqlite


# -- claims come in priority order, each message once -----------------------------------------


async def claims_come_in_order(durable: Any, batch: list[NewMessage], chunk: int, take: int):
    run = Run(durable)
    service, q = run.service, run.queue
    batch = [NewMessage(m.body, priority=m.priority) for m in batch]  # no ttl/delay here
    ids = await run.publish_all(batch, chunk)
    expected = sorted(range(len(batch)), key=lambda i: (-batch[i].priority, int(ids[i])))
    seen: list[str] = []
    while claim := await service.claim(T, q, limit=take, ttl=30):
        seen += [m.id for m in claim.messages]
        await service.ack(T, q, claim.id, [m.id for m in claim.messages])
    assert seen == [ids[i] for i in expected]


(
    test_claims_come_in_priority_then_publish_order_and_each_message_once,
    test_claims_come_in_order_each_message_once_on_sqlite,
) = on_memory_and_sqlite(
    claims_come_in_order, batch=new_messages, chunk=st.integers(1, 10), take=st.integers(1, 7)
)


# -- nothing expired or delayed is handed out -----------------------------------------------


async def nothing_expired_or_delayed(durable: Any, batch: list[NewMessage], steps):
    run = Run(durable)
    service, q, clock = run.service, run.queue, run.clock
    start = clock.seconds()
    ids = await run.publish_all(batch, 10)
    born = dict(zip(ids, batch, strict=True))
    claimed_once: set[str] = set()
    for advance, take in steps:
        clock.advance(advance)
        now = clock.seconds()
        for m in await service.observe(T, q, limit=100, include_claimed=True):
            assert m.expires_at > now
        claim = await service.claim(T, q, limit=take, ttl=5)
        for m in claim.messages if claim else ():
            original = born[m.id]
            ttl = 3600.0 if original.ttl is None else original.ttl
            delay = 0.0 if original.delay is None else original.delay
            assert start + delay <= now
            # Before its first claim a message lives exactly its ttl.
            assert m.id in claimed_once or start + ttl > now
            claimed_once.add(m.id)


(
    test_nothing_expired_or_still_delayed_is_ever_handed_out,
    test_nothing_expired_or_delayed_is_handed_out_on_sqlite,
) = on_memory_and_sqlite(
    nothing_expired_or_delayed,
    batch=new_messages,
    steps=st.lists(st.tuples(st.integers(0, 30), st.integers(1, 5)), max_size=10),
)


# -- stats add up; one live claim per message -------------------------------------------------


async def stats_add_up(durable: Any, batch: list[NewMessage], actions: list[str]):
    run = Run(durable)
    service, q, clock = run.service, run.queue, run.clock
    await run.publish_all([NewMessage(m.body, priority=m.priority) for m in batch], 10)
    claims = []
    for action in actions:
        if action == "claim":
            claim = await service.claim(T, q, limit=3, ttl=10)
            if claim:
                claims.append(claim)
        elif action == "release" and claims:
            await service.release(T, q, claims.pop(0).id)
        elif action == "ack" and claims:
            c = claims.pop()
            await service.ack(T, q, c.id, [m.id for m in c.messages])
        elif action == "advance":
            clock.advance(4)
        stats = await service.queue_stats(T, q)
        assert stats.available + stats.claimed + stats.delayed == stats.total
        now = clock.seconds()
        found = await service.observe(T, q, limit=100, include_claimed=True)
        assert len([m for m in found if m.is_claimed(now)]) == stats.claimed


(
    test_stats_always_add_up_and_a_message_has_at_most_one_live_claim,
    test_stats_add_up_and_one_live_claim_per_message_on_sqlite,
) = on_memory_and_sqlite(
    stats_add_up,
    memory_examples=40,
    batch=new_messages,
    actions=st.lists(st.sampled_from(["claim", "release", "advance", "ack"]), max_size=30),
)
