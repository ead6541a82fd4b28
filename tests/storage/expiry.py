"""The storage contract, part four: time. Expiry is exact to the ``now`` a call is given;
``next_wake`` says when a waiter should look again; ``reap`` clears what has expired."""

from __future__ import annotations

import pytest_twisted

from qgate.core.model import NewMessage
from tests.storage.base import NOW, T, bodies, everything, lease, make_queue, put


class ExpiryContract:
    @pytest_twisted.ensureDeferred
    async def test_a_message_is_gone_exactly_at_its_ttl(self, store):
        await make_queue(store, default_ttl=100.0)
        [short, _] = await put(store, NewMessage(b"short", ttl=10.0), b"default")
        assert await everything(store, now=NOW + 9.999) == [b"short", b"default"]
        assert await everything(store, now=NOW + 10) == [b"default"]
        assert await store.get_messages(T, "q", [short], NOW + 10) == []
        assert (await store.queue_stats(T, "q", NOW + 10)).total == 1
        assert await everything(store, now=NOW + 100) == []
        assert await lease(store, "c1", now=NOW + 100) == []

    @pytest_twisted.ensureDeferred
    async def test_a_delayed_message_is_available_exactly_after_its_delay(self, store):
        await make_queue(store, default_delay=5.0)
        await put(store, b"queue-default", NewMessage(b"now", delay=0.0))
        assert [m.body for m in await lease(store, "c1")] == [b"now"]
        assert await lease(store, "c2", now=NOW + 4.999) == []
        assert await bodies(store, now=NOW + 4.999) == []
        assert [m.body for m in await lease(store, "c3", now=NOW + 5)] == [b"queue-default"]

    @pytest_twisted.ensureDeferred
    async def test_next_wake_is_when_the_next_delay_or_lease_ends(self, store):
        await make_queue(store)
        assert await store.next_wake(T, "q", NOW) is None
        a, b = await put(store, b"a", NewMessage(b"b", delay=20.0))
        assert await store.next_wake(T, "q", NOW) == NOW + 20
        await lease(store, "c1", ttl=8.0)  # takes a
        assert await store.next_wake(T, "q", NOW) == NOW + 8
        assert await store.next_wake(T, "q", NOW, a) == NOW + 20  # only markers above a
        assert await store.next_wake(T, "q", NOW + 8) == NOW + 20  # the lease is over
        assert await store.next_wake(T, "q", NOW + 20) is None
        assert await store.next_wake(T, "q", NOW, b) is None

    @pytest_twisted.ensureDeferred
    async def test_reap_deletes_expired_messages_up_to_its_limit(self, store):
        await make_queue(store)
        await make_queue(store, "other")
        await put(store, NewMessage(b"a", ttl=5.0), NewMessage(b"b", ttl=5.0), b"kept")
        await put(store, NewMessage(b"c", ttl=5.0), queue="other")
        assert await store.reap(NOW + 4, 10) == 0
        assert await store.reap(NOW + 5, 2) == 2
        assert await store.reap(NOW + 5, 10) == 1
        assert await store.reap(NOW + 5, 10) == 0
        assert await store.purge_queue(T, "q") == 1  # only "kept" was left to purge
        assert await store.purge_queue(T, "other") == 0

    @pytest_twisted.ensureDeferred
    async def test_an_expired_message_is_left_to_reap_by_claims_and_pops(self, store):
        await make_queue(store)
        await put(store, NewMessage(b"short", ttl=5.0), NewMessage(b"also", ttl=5.0), b"kept")
        assert [m.body for m in await lease(store, "c1", 1, now=NOW + 5)] == [b"kept"]
        assert await store.pop_messages(T, "q", 5, NOW + 5) == []
        assert await store.reap(NOW + 5, 10) == 2

    @pytest_twisted.ensureDeferred
    async def test_reap_keeps_a_message_whose_claim_keeps_it_alive(self, store):
        await make_queue(store)
        await put(store, NewMessage(b"short", ttl=5.0))
        await lease(store, "c1", ttl=30.0)
        assert await store.reap(NOW + 10, 10) == 0
        assert await everything(store, now=NOW + 10) == [b"short"]
        assert await store.reap(NOW + 30, 10) == 1

    @pytest_twisted.ensureDeferred
    async def test_reap_forgets_expired_claims(self, store):
        await make_queue(store)
        [a] = await put(store, b"a")
        await lease(store, "c1", ttl=10.0)
        await store.reap(NOW + 10, 10)
        # The claim is gone: releasing it returns nothing, though no one claimed a since.
        assert await store.release(T, "q", "c1", None, 0.0, NOW + 10) == 0
        assert [m.marker for m in await lease(store, "c2", now=NOW + 10)] == [a]
