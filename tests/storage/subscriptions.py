"""The storage contract, part five: push subscriptions (``ISubscriptionStore``)."""

from __future__ import annotations

from typing import Any

import pytest
import pytest_twisted

from qgate.core.errors import SubscriptionExists, SubscriptionNotFound
from qgate.core.model import NewSubscription, Subscription, SubscriptionUpdate
from tests.storage.base import NOW, T, make_queue, put

HOOK = "http://hooks.example/a"


async def subscribe(
    store: Any,
    sid: str,
    subscriber: str = HOOK,
    *,
    ttl: int = 600,
    options: Any = None,
    queue: str = "q",
    tenant: str = T,
    now: float = NOW,
) -> tuple[Subscription, bool]:
    new = NewSubscription(sid, subscriber, ttl, {} if options is None else options)
    made: tuple[Subscription, bool] = await store.create_subscription(tenant, queue, new, now)
    return made


async def ids(store: Any, queue: str = "q", *, marker: Any = None, limit: int = 100, now=NOW):
    return [s.id for s in await store.list_subscriptions(T, queue, marker, limit, now)]


class SubscriptionContract:
    @pytest_twisted.ensureDeferred
    async def test_a_subscription_is_created_read_and_listed(self, store):
        await make_queue(store)
        options = {"name": "test", "nested": {"a": [1, 2.5, None, True]}}
        sub, created = await subscribe(store, "s1", ttl=3600, options=options)
        assert created
        assert sub == Subscription(
            id="s1",
            queue="q",
            subscriber=HOOK,
            ttl=3600,
            options=options,
            created_at=NOW,
            expires_at=NOW + 3600,
            confirmed=False,
            marker=0,
        )
        assert await store.get_subscription(T, "q", "s1", NOW + 5) == sub
        assert await store.list_subscriptions(T, "q", None, 10, NOW + 5) == [sub]
        assert sub.age(NOW + 5.9) == 5
        assert await store.get_subscription(T, "q", "nope", NOW) is None

    @pytest_twisted.ensureDeferred
    async def test_a_subscriber_has_one_live_subscription_per_queue(self, store):
        await make_queue(store)
        await make_queue(store, "other")
        await make_queue(store, tenant="t2")
        first, _ = await subscribe(store, "s1", ttl=600, options={"a": 1})
        again, created = await subscribe(store, "s2", ttl=99, options={"b": 2}, now=NOW + 1)
        assert (again, created) == (first, False)  # the existing one, unchanged
        assert await ids(store) == ["s1"]
        assert (await subscribe(store, "s3", queue="other"))[1] is True
        assert (await subscribe(store, "s4", tenant="t2"))[1] is True
        assert (await subscribe(store, "s5", "https://hooks.example/a"))[1] is True
        assert await ids(store) == ["s1", "s5"]

    @pytest_twisted.ensureDeferred
    async def test_a_new_subscription_is_positioned_after_the_messages_already_there(self, store):
        await make_queue(store)
        await put(store, b"a", b"b", b"c")
        await store.purge_queue(T, "q")  # markers never go back
        await put(store, b"d")
        sub, _ = await subscribe(store, "s1")
        assert sub.marker == 4
        assert (await store.get_subscription(T, "q", "s1", NOW)).marker == 4
        await put(store, b"e")
        assert (await store.get_subscription(T, "q", "s1", NOW)).marker == 4

    @pytest_twisted.ensureDeferred
    async def test_each_subscription_keeps_its_own_position_which_only_moves_forward(self, store):
        await make_queue(store)
        await subscribe(store, "s1", "http://one")
        await subscribe(store, "s2", "http://two")
        assert await store.advance_subscription(T, "q", "s1", 7, NOW) == 7
        assert await store.advance_subscription(T, "q", "s1", 3, NOW) == 7
        assert await store.advance_subscription(T, "q", "s2", 2, NOW) == 2
        assert (await store.get_subscription(T, "q", "s1", NOW)).marker == 7
        assert (await store.get_subscription(T, "q", "s2", NOW)).marker == 2
        assert await store.advance_subscription(T, "q", "nope", 9, NOW) is None

    @pytest_twisted.ensureDeferred
    async def test_subscriptions_list_by_id_after_the_marker(self, store):
        await make_queue(store)
        for sid in ["0c", "0a", "1b", "0b", "A0"]:
            await subscribe(store, sid, f"http://{sid}")
        assert await ids(store) == ["0a", "0b", "0c", "1b", "A0"]
        assert await ids(store, limit=2) == ["0a", "0b"]
        assert await ids(store, marker="0b", limit=2) == ["0c", "1b"]
        assert await ids(store, marker="0bb") == ["0c", "1b", "A0"]  # not an id: by order
        assert await ids(store, marker="A0") == []

    @pytest_twisted.ensureDeferred
    async def test_an_expired_subscription_is_gone_for_every_call(self, store):
        await make_queue(store)
        await subscribe(store, "s1", ttl=60)
        await subscribe(store, "s2", "http://other", ttl=600)
        end = NOW + 60
        assert await store.get_subscription(T, "q", "s1", end - 0.5) is not None
        assert await store.get_subscription(T, "q", "s1", end) is None
        assert await ids(store, now=end) == ["s2"]
        assert await store.advance_subscription(T, "q", "s1", 5, end) is None
        with pytest.raises(SubscriptionNotFound):
            await store.update_subscription(
                T, "q", "s1", SubscriptionUpdate(None, 600, None, None), end
            )
        # Its subscriber is free again: a create makes a new subscription.
        sub, created = await subscribe(store, "s3", ttl=60, now=end)
        assert created and sub.id == "s3"
        # ... and an update may take it over from another expired one.
        moved = await store.update_subscription(
            T, "q", "s2", SubscriptionUpdate(HOOK, None, None, None), end + 60
        )
        assert moved.subscriber == HOOK and moved.id == "s2"

    @pytest_twisted.ensureDeferred
    async def test_an_update_changes_only_what_it_names(self, store):
        await make_queue(store)
        sub, _ = await subscribe(store, "s1", ttl=600, options={"a": 1})
        later = NOW + 100
        ttl = await store.update_subscription(
            T, "q", "s1", SubscriptionUpdate(None, 360, None, None), later
        )
        # A new ttl counts from the update; the age still counts from the creation.
        assert (ttl.ttl, ttl.expires_at, ttl.created_at) == (360, later + 360, NOW)
        assert (ttl.subscriber, ttl.options, ttl.confirmed) == (HOOK, {"a": 1}, False)
        both = await store.update_subscription(
            T, "q", "s1", SubscriptionUpdate("http://new", None, {"name": "x"}, None), later
        )
        assert (both.subscriber, both.options, both.ttl) == ("http://new", {"name": "x"}, 360)
        confirmed = await store.update_subscription(
            T, "q", "s1", SubscriptionUpdate(None, None, None, True), later
        )
        assert confirmed.confirmed is True
        assert await store.get_subscription(T, "q", "s1", later) == confirmed
        assert confirmed == Subscription(
            "s1", "q", "http://new", 360, {"name": "x"}, NOW, later + 360, True, 0
        )
        same = await store.update_subscription(
            T, "q", "s1", SubscriptionUpdate("http://new", None, None, None), later
        )
        assert same == confirmed
        with pytest.raises(SubscriptionNotFound):
            await store.update_subscription(
                T, "q", "nope", SubscriptionUpdate(None, 60, None, None), later
            )

    @pytest_twisted.ensureDeferred
    async def test_an_update_to_another_subscriptions_subscriber_fails_and_changes_nothing(
        self, store
    ):
        await make_queue(store)
        await subscribe(store, "s1", "http://one")
        before, _ = await subscribe(store, "s2", "http://two")
        with pytest.raises(SubscriptionExists):
            await store.update_subscription(
                T, "q", "s2", SubscriptionUpdate("http://one", 900, {"x": 1}, True), NOW
            )
        assert await store.get_subscription(T, "q", "s2", NOW) == before

    @pytest_twisted.ensureDeferred
    async def test_subscriptions_are_deleted_alone_by_purge_and_with_their_queue(self, store):
        await make_queue(store)
        await make_queue(store, "other")
        for i in range(3):
            await subscribe(store, f"s{i}", f"http://{i}")
        await subscribe(store, "kept", queue="other")
        assert await store.delete_subscription(T, "q", "s0") is True
        assert await store.delete_subscription(T, "q", "s0") is False
        assert await store.delete_subscription(T, "q", "kept") is False  # another queue's
        await put(store, b"m")
        await store.purge_queue(T, "q")  # purging messages keeps subscriptions
        assert await ids(store) == ["s1", "s2"]
        assert await store.purge_subscriptions(T, "q") == 2
        assert await ids(store) == []
        assert await store.purge_subscriptions(T, "q") == 0
        assert await store.delete_queue(T, "other") is True
        await make_queue(store, "other")
        assert await ids(store, "other") == []
        assert await ids(store) == []

    @pytest_twisted.ensureDeferred
    async def test_the_reaper_deletes_expired_subscriptions(self, store):
        await make_queue(store)
        await subscribe(store, "short", "http://short", ttl=60)
        await subscribe(store, "long", "http://long", ttl=600)
        await store.reap(NOW + 60, 100)
        assert await store.delete_subscription(T, "q", "short") is False  # reaped already
        assert await store.delete_subscription(T, "q", "long") is True
