"""The storage contract, part six: hand-off (``publish(..., handoff=)``, the offers a
waiting claim or pop carries) and acks of several claims and queues in one commit."""

from __future__ import annotations

from typing import Any

import pytest
import pytest_twisted
from twisted.internet.defer import gatherResults

from qgate.core.errors import QueueFull
from qgate.core.handoff import Handoff
from qgate.core.model import NewMessage
from tests.storage.base import NOW, T, bodies, everything, lease, make_queue, markers_of, put


async def offer(store: Any, handoff: Handoff, *messages: NewMessage, queue: str = "q") -> list[int]:
    markers: list[int] = await store.publish(T, queue, list(messages), NOW, None, handoff=handoff)
    return markers


def claimer(
    limit: int = 10, ttl: float = 30.0, grace: float = 0.0, claim_id: str = "h1"
) -> Handoff:
    return Handoff(limit, ttl, grace, claim_id)


class HandoffContract:
    @pytest_twisted.ensureDeferred
    async def test_a_publish_offered_to_a_claim_leases_its_first_messages_in_claim_order(
        self, store
    ):
        await make_queue(store)
        handoff = claimer(2, ttl=30.0, grace=5.0)
        sent = [NewMessage(b"a", priority=1), NewMessage(b"b", priority=9), NewMessage(b"c")]
        markers = await offer(store, handoff, *sent)
        assert len(markers) == 3
        assert [m.body for m in handoff.messages] == [b"b", b"c"]
        assert {(m.claim_id, m.claim_expires, m.claim_count) for m in handoff.messages} == {
            ("h1", NOW + 30, 1)
        }
        assert all(m.expires_at >= NOW + 35 for m in handoff.messages)
        assert markers_of(handoff.messages) == [markers[1], markers[2]]
        claim = await store.get_claim(T, "q", "h1", NOW)
        assert (claim.ttl, claim.grace, claim.expires_at) == (30.0, 5.0, NOW + 30)
        assert markers_of(list(claim.messages)) == [markers[1], markers[2]]
        assert await bodies(store) == [b"a"]  # the rest is available as usual
        assert not handoff.drained

    @pytest_twisted.ensureDeferred
    async def test_a_publish_handing_over_everything_leaves_the_queue_drained_until_the_lease_ends(
        self, store
    ):
        await make_queue(store)
        handoff = claimer(ttl=30.0)
        await offer(store, handoff, NewMessage(b"a"), NewMessage(b"later", delay=50.0))
        assert [m.body for m in handoff.messages] == [b"a"]
        assert (handoff.drained, handoff.wake_at) == (True, NOW + 30)
        assert await store.next_wake(T, "q", NOW) == NOW + 30
        assert [m.body for m in await lease(store, "c2", now=NOW + 30)] == [b"a"]

    @pytest_twisted.ensureDeferred
    async def test_a_publish_hands_nothing_while_the_queue_holds_a_claimable_message(self, store):
        await make_queue(store)
        await put(store, b"old")
        handoff = claimer()
        await offer(store, handoff, NewMessage(b"new", priority=9))
        assert (handoff.messages, handoff.drained) == ([], False)
        assert handoff.cancel()  # never taken: the waiter loses nothing by leaving
        assert await bodies(store) == [b"old", b"new"]

    @pytest_twisted.ensureDeferred
    async def test_an_offered_publish_after_an_unoffered_one_hands_nothing(self, store):
        await make_queue(store)
        handoff = claimer()
        # Submitted together: on SQL most likely one transaction, the earlier one first.
        first = store.publish(T, "q", [NewMessage(b"first")], NOW, None)
        second = store.publish(T, "q", [NewMessage(b"second")], NOW, None, handoff=handoff)
        await gatherResults([first, second])
        assert handoff.messages == []
        assert [m.body for m in await lease(store, "c1", 1)] == [b"first"]

    @pytest_twisted.ensureDeferred
    async def test_delayed_and_expired_messages_are_not_handed_over(self, store):
        await make_queue(store)
        handoff = claimer()
        await offer(store, handoff, NewMessage(b"delayed", delay=10.0))
        assert handoff.messages == []
        assert (handoff.drained, handoff.wake_at) == (True, NOW + 10)
        assert handoff.cancel()
        assert await everything(store) == [b"delayed"]

    @pytest_twisted.ensureDeferred
    async def test_a_publish_offered_to_a_pop_hands_its_messages_over_without_storing_them(
        self, store
    ):
        await make_queue(store)
        handoff = Handoff(5)
        markers = await offer(store, handoff, NewMessage(b"a"), NewMessage(b"b"))
        assert [(m.body, m.marker) for m in handoff.messages] == list(zip([b"a", b"b"], markers))
        assert {(m.claim_id, m.claim_count) for m in handoff.messages} == {(None, 0)}
        assert await everything(store) == []
        assert (await store.queue_stats(T, "q", NOW)).total == 0
        assert handoff.drained and handoff.wake_at is None
        assert await put(store, b"c") == [markers[-1] + 1]  # markers go on

    @pytest_twisted.ensureDeferred
    async def test_a_cancelled_offer_takes_nothing(self, store):
        await make_queue(store)
        handoff = claimer()
        assert handoff.cancel()
        await offer(store, handoff, NewMessage(b"a"))
        assert handoff.messages == []
        assert await bodies(store) == [b"a"]
        assert await store.get_claim(T, "q", "h1", NOW) is None

    @pytest_twisted.ensureDeferred
    async def test_a_handed_claim_renews_releases_and_acks_like_any_claim(self, store):
        await make_queue(store, max_claim_count=2)
        handoff = claimer(ttl=10.0)
        [marker] = await offer(store, handoff, NewMessage(b"a"))
        assert await store.renew_claim(T, "q", "h1", 20.0, 0.0, NOW + 5)
        assert (await store.get_claim(T, "q", "h1", NOW + 5)).expires_at == NOW + 25
        # Given back undelivered: this claim does not count toward dead-lettering.
        assert await store.release(T, "q", "h1", None, 0, NOW + 6, True) == 1
        [again] = await lease(store, "c2", now=NOW + 6)
        assert (again.marker, again.claim_count) == (marker, 1)
        second = claimer(claim_id="h2")
        await store.ack(T, "q", "c2", [marker], NOW + 6)
        [other] = await offer(store, second, NewMessage(b"b"))
        assert await store.ack(T, "q", "h2", [other], NOW + 7) == [other]
        assert await everything(store, now=NOW + 7) == []

    @pytest_twisted.ensureDeferred
    async def test_a_refused_publish_hands_nothing(self, store):
        await make_queue(store, max_messages=1)
        await put(store, b"held")
        await lease(store, "c1")
        handoff = Handoff(5)
        with pytest.raises(QueueFull):
            await offer(store, handoff, NewMessage(b"a"))
        assert handoff.messages == []
        assert handoff.cancel()

    @pytest_twisted.ensureDeferred
    async def test_a_claim_whose_offer_a_publish_took_takes_nothing(self, store):
        await make_queue(store)
        handoff = claimer()
        await offer(store, handoff, NewMessage(b"a"))
        await put(store, b"b")
        assert await store.claim(T, "q", "c1", 10, 30.0, 0.0, NOW, handoff=handoff) == []
        assert await store.pop_messages(T, "q", 10, NOW, handoff=handoff) == []
        assert await bodies(store) == [b"b"]

    @pytest_twisted.ensureDeferred
    async def test_a_claim_or_pop_that_finds_messages_spends_its_offer(self, store):
        await make_queue(store)
        await put(store, b"a", b"b")
        claiming, popping = claimer(), Handoff(1)
        [a] = await store.claim(T, "q", "c1", 1, 30.0, 0.0, NOW, handoff=claiming)
        [b] = await store.pop_messages(T, "q", 1, NOW, handoff=popping)
        assert (a.body, b.body) == (b"a", b"b")
        assert not claiming.take() and not popping.take()
        await offer(store, claiming, NewMessage(b"c"))
        assert claiming.messages == []
        assert await bodies(store) == [b"c"]

    @pytest_twisted.ensureDeferred
    async def test_acks_of_one_commit_delete_only_what_each_claim_still_holds(self, store):
        await make_queue(store)
        await make_queue(store, "r")
        a, b, c = await put(store, b"a", b"b", b"c")
        [x] = await put(store, b"x", queue="r")
        await lease(store, "c1", 1, ttl=5.0)
        await lease(store, "c2", 2)
        await lease(store, "c3", queue="r")
        [late] = await lease(store, "c4", 1, now=NOW + 5)  # c1's lease ended: c4 holds a
        assert late.marker == a
        acks = [
            store.ack(T, "q", "c1", [a], NOW + 6),
            store.ack(T, "q", "c2", [b, c, a], NOW + 6),
            store.ack(T, "r", "c3", [x], NOW + 6),
            store.ack(T, "r", "c2", [x], NOW + 6),
        ]
        assert await gatherResults(acks) == [[], [b, c], [x], []]
        assert await everything(store, now=NOW + 6) == [b"a"]
