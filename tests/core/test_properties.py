"""Property tests (hypothesis) of ordering, claim and TTL invariants, on the memory store."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st
from twisted.internet.task import Clock

from qgate.core.model import NewMessage
from qgate.core.service import QueueService
from qgate.storage.memory import MemoryStorage
from tests.support.core import TEST_LIMITS
from tests.support.deferreds import fired

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


def make_service() -> tuple[QueueService, Clock]:
    clock = Clock()
    clock.advance(1000)
    return QueueService(clock, MemoryStorage(), MemoryStorage(), limits=TEST_LIMITS), clock


def publish_all(service: QueueService, batch: list[NewMessage], chunk: int) -> list[str]:
    ids: list[str] = []
    for i in range(0, len(batch), chunk):
        ids += fired(service.publish(T, "q", batch[i : i + chunk]))
    return ids


@settings(max_examples=60, deadline=None)
@given(batch=new_messages, chunk=st.integers(1, 10), take=st.integers(1, 7))
def test_claims_come_in_priority_then_publish_order_and_each_message_once(batch, chunk, take):
    service, clock = make_service()
    batch = [NewMessage(m.body, priority=m.priority) for m in batch]  # no ttl/delay here
    ids = publish_all(service, batch, chunk)
    expected = sorted(range(len(batch)), key=lambda i: (-batch[i].priority, int(ids[i])))
    seen: list[str] = []
    while True:
        claim = fired(service.claim(T, "q", limit=take, ttl=30))
        if claim is None:
            break
        seen += [m.id for m in claim.messages]
        fired(service.ack(T, "q", claim.id, [m.id for m in claim.messages]))
    assert seen == [ids[i] for i in expected]


@settings(max_examples=60, deadline=None)
@given(
    batch=new_messages,
    steps=st.lists(st.tuples(st.integers(0, 30), st.integers(1, 5)), max_size=10),
)
def test_nothing_expired_or_still_delayed_is_ever_handed_out(batch, steps):
    service, clock = make_service()
    start = clock.seconds()
    ids = publish_all(service, batch, 10)
    born = {i: m for i, m in zip(ids, batch, strict=True)}
    claimed_once: set[str] = set()
    for advance, take in steps:
        clock.advance(advance)
        now = clock.seconds()
        for m in fired(service.observe(T, "q", limit=100, include_claimed=True)):
            assert m.expires_at > now
        claim = fired(service.claim(T, "q", limit=take, ttl=5))
        for m in claim.messages if claim else ():
            original = born[m.id]
            ttl = 3600.0 if original.ttl is None else original.ttl
            delay = 0.0 if original.delay is None else original.delay
            assert start + delay <= now
            # Before its first claim a message lives exactly its ttl.
            assert m.id in claimed_once or start + ttl > now
            claimed_once.add(m.id)


@settings(max_examples=40, deadline=None)
@given(
    batch=new_messages,
    actions=st.lists(st.sampled_from(["claim", "release", "advance", "ack"]), max_size=30),
)
def test_stats_always_add_up_and_a_message_has_at_most_one_live_claim(batch, actions):
    service, clock = make_service()
    publish_all(service, [NewMessage(m.body, priority=m.priority) for m in batch], 10)
    claims = []
    for action in actions:
        if action == "claim":
            claim = fired(service.claim(T, "q", limit=3, ttl=10))
            if claim:
                claims.append(claim)
        elif action == "release" and claims:
            fired(service.release(T, "q", claims.pop(0).id))
        elif action == "ack" and claims:
            c = claims.pop()
            fired(service.ack(T, "q", c.id, [m.id for m in c.messages]))
        elif action == "advance":
            clock.advance(4)
        stats = fired(service.queue_stats(T, "q"))
        assert stats.available + stats.claimed + stats.delayed == stats.total
        now = clock.seconds()
        live = [
            m
            for m in fired(service.observe(T, "q", limit=100, include_claimed=True))
            if m.is_claimed(now)
        ]
        assert len(live) == stats.claimed
