"""The storage contract, part three: claims (leases, renewal, release, ack) and
dead-lettering."""

from __future__ import annotations

import pytest_twisted

from qgate.core.model import Claim, NewMessage, QueueOptions
from tests.storage.base import NOW, T, bodies, everything, lease, look, make_queue, markers_of, put


class ClaimContract:
    @pytest_twisted.ensureDeferred
    async def test_a_claim_leases_up_to_its_limit_highest_priority_first_then_fifo(self, store):
        await make_queue(store)
        published = [(b"p1-a", 1), (b"p5-a", 5), (b"p1-b", 1), (b"p9", 9), (b"p5-b", 5)]
        await put(store, *(NewMessage(body, priority=p) for body, p in published))
        first = await lease(store, "c1", 3, ttl=30.0)
        assert [m.body for m in first] == [b"p9", b"p5-a", b"p5-b"]
        assert {(m.claim_id, m.claim_expires, m.claim_count) for m in first} == {
            ("c1", NOW + 30, 1)
        }
        rest = await lease(store, "c2", 10)
        assert [m.body for m in rest] == [b"p1-a", b"p1-b"]
        assert await lease(store, "c3", 10) == []
        assert await store.get_claim(T, "q", "c3", NOW) is None  # an empty claim is no claim

    @pytest_twisted.ensureDeferred
    async def test_a_claimed_message_is_claimable_again_once_the_lease_ends(self, store):
        await make_queue(store)
        await put(store, b"job")
        [first] = await lease(store, "c1", ttl=30.0)
        assert await lease(store, "c2", now=NOW + 29.999) == []
        [second] = await lease(store, "c3", ttl=30.0, now=NOW + 30)
        assert (second.marker, second.claim_id, second.claim_count) == (first.marker, "c3", 2)
        assert second.claim_expires == NOW + 60

    @pytest_twisted.ensureDeferred
    async def test_a_claim_skips_delayed_and_expired_messages(self, store):
        await make_queue(store)
        await put(store, NewMessage(b"delayed", delay=10.0), NewMessage(b"short", ttl=5.0))
        assert await lease(store, "c1", now=NOW + 5) == []
        assert [m.body for m in await lease(store, "c2", now=NOW + 10)] == [b"delayed"]

    @pytest_twisted.ensureDeferred
    async def test_get_claim_shows_a_live_claim_and_the_messages_it_still_holds(self, store):
        await make_queue(store)
        a, b, c = await put(store, b"a", b"b", b"c")
        await lease(store, "c1", 3, ttl=20.0, grace=5.0)
        assert await store.ack(T, "q", "c1", [b], NOW) == [b]
        claim = await store.get_claim(T, "q", "c1", NOW + 1)
        assert isinstance(claim, Claim)
        assert (claim.id, claim.queue, claim.ttl, claim.grace) == ("c1", "q", 20.0, 5.0)
        assert (claim.created_at, claim.expires_at) == (NOW, NOW + 20)
        assert markers_of(list(claim.messages)) == [a, c]
        assert await store.get_claim(T, "q", "c1", NOW + 20) is None
        assert await store.get_claim(T, "q", "unknown", NOW) is None

    @pytest_twisted.ensureDeferred
    async def test_a_claim_keeps_its_messages_alive_for_lease_plus_grace(self, store):
        await make_queue(store)
        await put(store, NewMessage(b"short", ttl=10.0), NewMessage(b"long", ttl=500.0))
        held = await lease(store, "c1", ttl=30.0, grace=20.0)
        assert [m.expires_at for m in held] == [NOW + 50, NOW + 500]
        assert await bodies(store, now=NOW + 49) == [b"short", b"long"]  # lease over at 30
        assert await everything(store, now=NOW + 50) == [b"long"]

    @pytest_twisted.ensureDeferred
    async def test_renewing_a_live_claim_extends_its_lease_and_its_messages(self, store):
        await make_queue(store)
        await put(store, NewMessage(b"short", ttl=20.0))
        await lease(store, "c1", ttl=10.0)
        assert await store.renew_claim(T, "q", "c1", 30.0, 5.0, NOW + 8) is True
        claim = await store.get_claim(T, "q", "c1", NOW + 30)
        assert (claim.ttl, claim.grace, claim.expires_at) == (30.0, 5.0, NOW + 38)
        [m] = claim.messages
        assert (m.claim_expires, m.expires_at) == (NOW + 38, NOW + 43)
        assert await lease(store, "c2", now=NOW + 37) == []
        assert await store.renew_claim(T, "q", "c1", 30.0, 0.0, NOW + 38) is False  # ended
        assert await store.renew_claim(T, "q", "unknown", 30.0, 0.0, NOW) is False

    @pytest_twisted.ensureDeferred
    async def test_releasing_a_claim_makes_its_messages_claimable_at_once(self, store):
        await make_queue(store)
        await put(store, b"a", b"b")
        await lease(store, "c1", ttl=30.0)
        assert await store.release(T, "q", "c1", None, 0.0, NOW + 1) == 2
        assert await store.get_claim(T, "q", "c1", NOW + 1) is None
        again = await lease(store, "c2", now=NOW + 1)
        assert [(m.body, m.claim_count) for m in again] == [(b"a", 2), (b"b", 2)]
        assert await store.release(T, "q", "c1", None, 0.0, NOW + 1) == 0  # c1 holds nothing
        assert await store.release(T, "q", "unknown", None, 0.0, NOW) == 0

    @pytest_twisted.ensureDeferred
    async def test_releasing_some_markers_keeps_the_rest_of_the_claim(self, store):
        await make_queue(store)
        a, b, c = await put(store, b"a", b"b", b"c")
        await lease(store, "c1", ttl=30.0)
        assert await store.release(T, "q", "c1", [a, c, 999], 0.0, NOW) == 2
        claim = await store.get_claim(T, "q", "c1", NOW)
        assert markers_of(list(claim.messages)) == [b]
        assert markers_of(await lease(store, "c2")) == [a, c]
        assert await store.release(T, "q", "c1", [], 0.0, NOW) == 0
        assert await store.get_claim(T, "q", "c1", NOW) is not None

    @pytest_twisted.ensureDeferred
    async def test_an_undelivered_release_gives_the_claim_back_uncounted(self, store):
        await make_queue(store, max_claim_count=1, dead_letter_queue="dead")
        a, b, c = await put(store, b"a", b"b", b"c")
        await lease(store, "c1", 3)
        assert await store.release(T, "q", "c1", [a, b], 0.0, NOW, False) == 2  # counted
        assert await store.release(T, "q", "c1", [c], 0.0, NOW, True) == 1  # not counted
        assert await store.get_claim(T, "q", "c1", NOW) is None
        # a and b have been claimed once (max_claim_count): they move; c is claimed again
        # as if for the first time, and giving it back uncounted again keeps it at 0.
        [again] = await lease(store, "c2", 3, now=NOW + 1)
        assert (again.marker, again.claim_count) == (c, 1)
        assert await everything(store, "dead") == [b"a", b"b"]
        assert await store.release(T, "q", "c2", None, 0.0, NOW + 1, True) == 1
        [third] = await lease(store, "c3", now=NOW + 2)
        assert (third.marker, third.claim_count) == (c, 1)

    @pytest_twisted.ensureDeferred
    async def test_an_undelivered_release_only_uncounts_what_the_claim_still_holds(self, store):
        await make_queue(store)
        [a] = await put(store, b"a")
        await lease(store, "stale", ttl=10.0)
        await lease(store, "fresh", ttl=10.0, now=NOW + 10)  # claim_count 2 now
        assert await store.release(T, "q", "stale", None, 0.0, NOW + 11, True) == 0
        assert await store.release(T, "q", "fresh", None, 0.0, NOW + 11, True) == 1
        [m] = await lease(store, "next", now=NOW + 11)
        assert (m.marker, m.claim_count) == (a, 2)  # the first claim still counts

    @pytest_twisted.ensureDeferred
    async def test_a_release_with_a_delay_holds_the_messages_back_until_then(self, store):
        await make_queue(store)
        await put(store, b"retry-me")
        await lease(store, "c1")
        assert await store.release(T, "q", "c1", None, 10.0, NOW + 2) == 1
        assert await lease(store, "c2", now=NOW + 11.999) == []
        stats = await store.queue_stats(T, "q", NOW + 3)
        assert (stats.delayed, stats.claimed, stats.available) == (1, 0, 0)
        assert await store.next_wake(T, "q", NOW + 3) == NOW + 12
        assert [m.body for m in await lease(store, "c3", now=NOW + 12)] == [b"retry-me"]

    @pytest_twisted.ensureDeferred
    async def test_an_ack_deletes_only_what_the_claim_holds(self, store):
        await make_queue(store)
        a, b, c, d = await put(store, b"a", b"b", b"c", b"d")
        await lease(store, "c1", 2)
        await lease(store, "c2", 1)
        assert await store.ack(T, "q", "c1", [c, b, d, a, 999], NOW) == [a, b]  # marker order
        assert await store.ack(T, "q", "c1", [a], NOW) == []
        assert await store.ack(T, "q", "c2", [], NOW) == []
        assert await everything(store) == [b"c", b"d"]

    @pytest_twisted.ensureDeferred
    async def test_a_late_ack_after_another_claim_took_the_message_deletes_nothing(self, store):
        await make_queue(store)
        [a] = await put(store, b"a")
        await lease(store, "stale", ttl=10.0)
        await lease(store, "fresh", ttl=10.0, now=NOW + 10)
        assert await store.ack(T, "q", "stale", [a], NOW + 11) == []
        assert await store.release(T, "q", "stale", None, 0.0, NOW + 11) == 0
        assert await store.delete_messages(T, "q", [a], "stale", NOW + 11) == []
        assert await store.ack(T, "q", "fresh", [a], NOW + 11) == [a]

    @pytest_twisted.ensureDeferred
    async def test_an_ack_after_the_lease_ended_deletes_what_nobody_claimed_since(self, store):
        await make_queue(store)
        [a] = await put(store, b"a")
        await lease(store, "late", ttl=10.0)
        assert await store.ack(T, "q", "late", [a], NOW + 15) == [a]

    # -- dead-lettering --------------------------------------------------------------------

    @pytest_twisted.ensureDeferred
    async def test_a_message_claimed_max_claim_count_times_moves_to_the_dead_letter_queue(
        self, store
    ):
        options = dict(max_claim_count=2, dead_letter_queue="dead", dead_letter_ttl=500.0)
        await make_queue(store, **options)
        [poison, _] = await put(
            store,
            NewMessage(b"poison", content_type="text/x", headers={"h": "1"}, producer="p"),
            b"fine",
        )
        for i in range(2):
            [m] = await lease(store, f"c{i}", 1, now=NOW + i)
            assert m.marker == poison
            await store.release(T, "q", f"c{i}", None, 0.0, NOW + i)
        # The third claim moves the poison message and takes the next one in the same call.
        assert [m.body for m in await lease(store, "c2", 1, now=NOW + 10)] == [b"fine"]
        assert await store.get_messages(T, "q", [poison], NOW + 10) == []
        dead_queue = await store.get_queue(T, "dead")
        source = await store.get_queue(T, "q")
        assert dead_queue is not None and dead_queue.created_at == NOW + 10
        assert dead_queue.options.durable == source.options.durable  # it lives in this store
        [dead] = await look(store, "dead", now=NOW + 10, claimed=True, delayed=True)
        assert (dead.body, dead.content_type, dict(dead.headers), dead.producer) == (
            b"poison",
            "text/x",
            {"h": "1"},
            "p",
        )
        assert (dead.created_at, dead.available_at, dead.expires_at) == (NOW, NOW + 10, NOW + 510)
        assert (dead.claim_id, dead.claim_count) == (None, 2)

    @pytest_twisted.ensureDeferred
    async def test_dead_messages_move_in_the_order_the_claim_meets_them(self, store):
        await make_queue(store, max_claim_count=1, dead_letter_queue="dead")
        await put(store, NewMessage(b"low", priority=1), b"mid", NewMessage(b"high", priority=9))
        await lease(store, "c1")
        await store.release(T, "q", "c1", None, 0.0, NOW)
        assert await lease(store, "c2") == []
        assert await everything(store, "dead") == [b"high", b"mid", b"low"]

    @pytest_twisted.ensureDeferred
    async def test_without_a_dead_letter_ttl_a_dead_message_keeps_its_own_expiry(self, store):
        await make_queue(store, max_claim_count=1, dead_letter_queue="dead")
        await put(store, NewMessage(b"long", ttl=1000.0), NewMessage(b"short", ttl=40.0))
        await lease(store, "c1", ttl=30.0)
        await store.release(T, "q", "c1", None, 0.0, NOW + 1)
        assert await lease(store, "c2", now=NOW + 39.5) == []
        dead = await look(store, "dead", now=NOW + 39.5, claimed=True, delayed=True)
        # At least a second to live in the dead-letter queue, else its own expiry.
        assert [(m.body, m.expires_at) for m in dead] == [
            (b"long", NOW + 1000),
            (b"short", NOW + 40.5),
        ]

    @pytest_twisted.ensureDeferred
    async def test_dead_messages_join_an_existing_dead_letter_queue_as_it_is(self, store):
        await make_queue(store, "dead", default_ttl=77.0, metadata={"kept": True})
        await put(store, b"already-there", queue="dead")
        await make_queue(store, max_claim_count=1, dead_letter_queue="dead")
        await put(store, b"poison")
        await lease(store, "c1")
        await store.release(T, "q", "c1", None, 0.0, NOW)
        assert await lease(store, "c2") == []
        assert await everything(store, "dead") == [b"already-there", b"poison"]
        dead_queue = await store.get_queue(T, "dead")
        assert dead_queue.options == QueueOptions(default_ttl=77.0)
        assert dead_queue.metadata == {"kept": True}

    @pytest_twisted.ensureDeferred
    async def test_a_claim_that_dead_letters_names_the_queue_it_moved_into(self, store):
        woken: list[tuple[str, str]] = []
        moved: list[int] = []

        def dead_lettered(tenant: str, name: str, n: int) -> None:
            woken.append((tenant, name))
            moved.append(n)

        store.on_dead_letter(dead_lettered)
        await make_queue(store, max_claim_count=1, dead_letter_queue="dead")
        await make_queue(store, "dropping", max_claim_count=1)
        await put(store, b"poison", b"other")
        await put(store, b"dropped", queue="dropping")
        await lease(store, "c1")
        await lease(store, "d1", queue="dropping")
        await store.release(T, "q", "c1", None, 0.0, NOW)
        await store.release(T, "dropping", "d1", None, 0.0, NOW)
        assert woken == []  # claims and releases that move nothing wake nobody
        assert await lease(store, "c2") == []
        assert woken == [(T, "dead")]  # once per claim, however many it moved
        assert moved == [2]  # and how many: poison and other
        assert await lease(store, "d2", queue="dropping") == []
        assert woken == [(T, "dead")]  # dropped, not moved: no queue to wake

    @pytest_twisted.ensureDeferred
    async def test_without_a_dead_letter_queue_over_claimed_messages_are_dropped(self, store):
        await make_queue(store, max_claim_count=1)
        await put(store, b"once")
        await lease(store, "c1")
        await store.release(T, "q", "c1", None, 0.0, NOW)
        assert await lease(store, "c2") == []
        assert await everything(store) == []
        assert [q.name for q in await store.list_queues(T, None, 10)] == ["q"]

