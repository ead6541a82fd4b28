"""The storage contract of tenants' stored bounds: quota overrides, key scopes, the
change counter processes poll, and exact tenant usage."""

from __future__ import annotations

from typing import Any

import pytest_twisted

from qgate.core.model import NewSubscription
from qgate.core.usage import TenantUsage
from tests.storage.base import NOW, T, make_queue, put


class TenantContract:
    @pytest_twisted.ensureDeferred
    async def test_quota_overrides_are_stored_replaced_and_removed(self, store: Any) -> None:
        assert await store.quota_overrides() == {}
        await store.set_quota(T, "max_queues", 5.0)
        await store.set_quota(T, "max_queues", 7.0)
        await store.set_quota(T, "publish_rate", 0.5)
        await store.set_quota("tenant-b", "max_bytes", 0.0)
        assert await store.quota_overrides() == {
            T: {"max_queues": 7.0, "publish_rate": 0.5},
            "tenant-b": {"max_bytes": 0.0},
        }
        await store.set_quota(T, "max_queues", None)
        assert await store.quota_overrides() == {
            T: {"publish_rate": 0.5},
            "tenant-b": {"max_bytes": 0.0},
        }

    @pytest_twisted.ensureDeferred
    async def test_quota_changes_and_revocations_move_the_change_counter(self, store: Any) -> None:
        start = await store.tenant_version()
        await store.create_tenant(T, NOW)
        await store.add_key(T, "k1", "hash", NOW)
        after_key = await store.tenant_version()
        assert after_key > start  # running processes learn the new key id
        await store.set_quota(T, "max_queues", 5.0)
        after_quota = await store.tenant_version()
        assert after_quota > after_key
        assert await store.revoke_key("k1", NOW) is True
        after_revoke = await store.tenant_version()
        assert after_revoke > after_quota
        assert await store.revoke_key("k1", NOW) is False
        assert await store.tenant_version() == after_revoke

    @pytest_twisted.ensureDeferred
    async def test_a_key_keeps_its_scope_until_it_is_revoked(self, store: Any) -> None:
        await store.create_tenant(T, NOW)
        await store.add_key(T, "scoped", "h1", NOW, "jobs.*,logs", "publish")
        await store.add_key(T, "open", "h2", NOW)
        assert await store.find_key_scope("scoped") == ("jobs.*,logs", "publish")
        assert await store.find_key_scope("open") == (None, None)
        assert await store.find_key("scoped") == (T, "h1")
        assert sorted(await store.key_ids()) == ["open", "scoped"]
        await store.revoke_key("scoped", NOW)
        assert await store.find_key_scope("scoped") is None
        assert await store.find_key_scope("missing") is None
        assert await store.key_ids() == ["open"]

    @pytest_twisted.ensureDeferred
    async def test_tenant_usage_counts_queues_messages_bytes_and_live_subscriptions(
        self, store: Any
    ) -> None:
        assert await store.tenant_usage(T, NOW) == TenantUsage()
        await make_queue(store, "a")
        await make_queue(store, "b")
        await make_queue(store, "other", tenant="tenant-b")
        await put(store, b"123", b"45", queue="a")
        await put(store, b"6789", queue="b")
        await put(store, b"not counted", queue="other", tenant="tenant-b")
        new = NewSubscription("s1", "http://example.com/hook", 60, {})
        await store.create_subscription(T, "a", new, NOW)
        assert await store.tenant_usage(T, NOW) == TenantUsage(2, 3, 9, 1)
        assert (await store.tenant_usage(T, NOW + 61)).subscriptions == 0

    @pytest_twisted.ensureDeferred
    async def test_a_writer_schema_is_named_by_the_tenants_that_registered_it(
        self, store: Any
    ) -> None:
        await store.put_schema(7, '"int"')
        assert await store.owns_schema(T, 7) is False
        await store.own_schema(T, 7)
        await store.own_schema(T, 7)  # twice is once
        assert await store.owns_schema(T, 7) is True
        assert await store.owns_schema("tenant-b", 7) is False
        await store.own_schema("", 7)  # registered for every tenant
        assert await store.owns_schema("tenant-b", 7) is True
