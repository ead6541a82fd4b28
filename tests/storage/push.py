"""The storage contract, part six: push delivery state (``IPushStore``): leases,
deliveries taken from a subscription's position, settlements and counters."""

from __future__ import annotations

from typing import Any

import pytest_twisted

from qgate.core.model import Delivery, NewMessage, PushStats, Settlement
from tests.storage.base import NOW, T, make_queue, put
from tests.storage.subscriptions import subscribe

A, B = "dispatcher-a", "dispatcher-b"


async def leased(store: Any, owner: str, now: float = NOW, lease: float = 30.0) -> list[str]:
    return [held.subscription.id for held in await store.lease_push(owner, lease, 100, now)]


class PushContract:
    @pytest_twisted.ensureDeferred
    async def test_one_owner_at_a_time_holds_a_subscription_until_its_lease_ends(self, store):
        await make_queue(store)
        await subscribe(store, "s1")
        held = await store.lease_push(A, 30.0, 10, NOW)
        assert [(h.tenant, h.subscription.id, h.expires_at) for h in held] == [(T, "s1", NOW + 30)]
        assert await leased(store, B, NOW + 10) == []
        assert await leased(store, A, NOW + 20) == ["s1"]  # renewed to NOW + 50
        assert await leased(store, B, NOW + 49) == []
        assert await leased(store, B, NOW + 50) == ["s1"]
        assert await leased(store, A, NOW + 51) == []

    @pytest_twisted.ensureDeferred
    async def test_a_released_lease_is_free_at_once(self, store):
        await make_queue(store)
        await subscribe(store, "s1")
        await leased(store, A)
        assert await store.release_push(B, ["s1"]) == 0
        assert await store.release_push(A, ["s1"]) == 1
        assert await leased(store, B, NOW + 1) == ["s1"]

    @pytest_twisted.ensureDeferred
    async def test_leases_skip_expired_subscriptions_and_respect_the_limit(self, store):
        await make_queue(store)
        await subscribe(store, "s1", ttl=5)
        await subscribe(store, "s2", "http://hooks.example/b")
        await subscribe(store, "s3", "http://hooks.example/c")
        assert [h.subscription.id for h in await store.lease_push(A, 30.0, 1, NOW + 6)] == ["s2"]
        assert await leased(store, A, NOW + 6) == ["s2", "s3"]

    @pytest_twisted.ensureDeferred
    async def test_taking_records_deliveries_and_moves_the_position(self, store):
        await make_queue(store)
        await put(store, b"before")
        await subscribe(store, "s1")
        delayed = NewMessage(b"later", delay=20)
        m1, m2, m3 = await put(store, b"one", delayed, b"three", now=NOW + 1)
        assert await store.take_deliveries(T, "q", "s1", A, 10, NOW + 2) == []  # no lease
        await leased(store, A, NOW + 2)
        taken = await store.take_deliveries(T, "q", "s1", A, 2, NOW + 2)
        assert taken == [Delivery(m1, 0, NOW + 2, NOW + 2), Delivery(m2, 0, NOW + 21, NOW + 2)]
        assert (await store.get_subscription(T, "q", "s1", NOW + 2)).marker == m2
        assert await store.take_deliveries(T, "q", "s1", A, 10, NOW + 3) == [
            Delivery(m3, 0, NOW + 3, NOW + 3)
        ]
        assert await store.take_deliveries(T, "q", "s1", A, 10, NOW + 3) == []
        pending = await store.pending_deliveries(T, "q", "s1", NOW + 3)
        assert [p.marker for p in pending] == [m1, m2, m3]

    @pytest_twisted.ensureDeferred
    async def test_another_owner_takes_nothing_while_the_lease_lives(self, store):
        await make_queue(store)
        await subscribe(store, "s1")
        await put(store, b"one")
        await leased(store, A)
        assert await store.take_deliveries(T, "q", "s1", B, 10, NOW + 1) == []
        assert len(await store.take_deliveries(T, "q", "s1", A, 10, NOW + 1)) == 1

    @pytest_twisted.ensureDeferred
    async def test_each_subscription_of_a_queue_takes_every_message(self, store):
        await make_queue(store)
        await subscribe(store, "s1")
        await subscribe(store, "s2", "http://hooks.example/b")
        markers = await put(store, b"one", b"two")
        await leased(store, A)
        for sid in ("s1", "s2"):
            taken = await store.take_deliveries(T, "q", sid, A, 10, NOW)
            assert [t.marker for t in taken] == markers

    @pytest_twisted.ensureDeferred
    async def test_settling_counts_and_removes_deliveries(self, store):
        await make_queue(store)
        await subscribe(store, "s1")
        m1, m2, m3 = await put(store, b"one", b"two", b"three")
        await leased(store, A)
        await store.take_deliveries(T, "q", "s1", A, 10, NOW)
        settle = store.settle_delivery
        assert await settle(T, "q", "s1", m1, Settlement.DELIVERED, 0.0, None, NOW)
        assert not await settle(T, "q", "s1", m1, Settlement.DELIVERED, 0.0, None, NOW)
        assert await settle(T, "q", "s1", m2, Settlement.RETRY, NOW + 9, "HTTP 503", NOW)
        assert await settle(T, "q", "s1", m3, Settlement.GIVEN_UP, 0.0, "HTTP 410", NOW)
        assert await store.pending_deliveries(T, "q", "s1", NOW) == [Delivery(m2, 1, NOW + 9, NOW)]
        assert await store.push_stats(T, "q", "s1", NOW) == PushStats(
            delivered=1, failed=2, given_up=1, pending=1, lag=0, last_error="HTTP 410"
        )

    @pytest_twisted.ensureDeferred
    async def test_settlements_sent_together_each_count_once(self, store):
        await make_queue(store)
        await subscribe(store, "s1")
        markers = await put(store, b"one", b"two", b"three")
        await leased(store, A)
        await store.take_deliveries(T, "q", "s1", A, 10, NOW)
        how = [Settlement.DELIVERED, Settlement.DELIVERED, Settlement.RETRY, Settlement.GIVEN_UP]
        targets = [markers[0], markers[0], markers[1], markers[2]]
        calls = [  # not awaited one by one: the SQL writer commits them in one batch
            store.settle_delivery(T, "q", "s1", m, h, NOW + 5, "HTTP 500", NOW)
            for m, h in zip(targets, how, strict=True)
        ]
        assert [await c for c in calls] == [True, False, True, True]
        stats = await store.push_stats(T, "q", "s1", NOW)
        assert (stats.delivered, stats.failed, stats.given_up, stats.pending) == (1, 2, 1, 1)

    @pytest_twisted.ensureDeferred
    async def test_lag_counts_live_messages_not_yet_taken(self, store):
        await make_queue(store)
        await subscribe(store, "s1")
        await put(store, b"one", b"two", b"three")
        await put(store, NewMessage(b"short", ttl=5))
        assert (await store.push_stats(T, "q", "s1", NOW)).lag == 4
        assert (await store.push_stats(T, "q", "s1", NOW + 6)).lag == 3
        assert await store.push_stats(T, "q", "nope", NOW) is None

    @pytest_twisted.ensureDeferred
    async def test_deliveries_go_with_their_subscription(self, store):
        await make_queue(store)
        await subscribe(store, "s1")
        await put(store, b"one")
        await leased(store, A)
        await store.take_deliveries(T, "q", "s1", A, 10, NOW)
        await store.delete_subscription(T, "q", "s1")
        await subscribe(store, "s1", now=NOW + 1)  # the same id again: a new subscription
        assert await store.pending_deliveries(T, "q", "s1", NOW + 1) == []
