"""The storage contract, part one: queues, their schemas, cursors, tenants and keys."""

from __future__ import annotations

import pytest
import pytest_twisted

from qgate.core.avro_bodies import avro_content_type
from qgate.core.errors import QueueExists, QueueNotFound, SchemaChanged, UncheckedWriters
from qgate.core.model import (
    NewMessage,
    NewSubscription,
    ObserveQuery,
    Overflow,
    Queue,
    QueueOptions,
    SubscriptionUpdate,
    Tenant,
)
from tests.storage.base import NOW, T, everything, lease, make_queue, put

#: Every call that names a queue, with arguments that would do no harm to a real one.
PER_QUEUE_CALLS = {
    "update_queue": lambda s: s.update_queue(T, "nowhere", QueueOptions(), {}),
    "set_queue_schema": lambda s: s.set_queue_schema(T, "nowhere", None, None, [], NOW),
    "schema_writers": lambda s: s.schema_writers(T, "nowhere", NOW),
    "queue_stats": lambda s: s.queue_stats(T, "nowhere", NOW),
    "purge_queue": lambda s: s.purge_queue(T, "nowhere"),
    "publish": lambda s: s.publish(T, "nowhere", [NewMessage(b"x")], NOW, None),
    "get_messages": lambda s: s.get_messages(T, "nowhere", [1], NOW),
    "delete_messages": lambda s: s.delete_messages(T, "nowhere", [1], None, NOW),
    "pop_messages": lambda s: s.pop_messages(T, "nowhere", 1, NOW),
    "observe": lambda s: s.observe(T, "nowhere", ObserveQuery(10), NOW),
    "claim": lambda s: s.claim(T, "nowhere", "c1", 1, 30.0, 0.0, NOW),
    "get_claim": lambda s: s.get_claim(T, "nowhere", "c1", NOW),
    "renew_claim": lambda s: s.renew_claim(T, "nowhere", "c1", 30.0, 0.0, NOW),
    "release": lambda s: s.release(T, "nowhere", "c1", None, 0.0, NOW),
    "ack": lambda s: s.ack(T, "nowhere", "c1", [1], NOW),
    "next_wake": lambda s: s.next_wake(T, "nowhere", NOW),
    "get_cursor": lambda s: s.get_cursor(T, "nowhere", "sub"),
    "set_cursor": lambda s: s.set_cursor(T, "nowhere", "sub", 1),
    "create_subscription": lambda s: s.create_subscription(
        T, "nowhere", NewSubscription("s1", "http://x", 60, {}), NOW
    ),
    "get_subscription": lambda s: s.get_subscription(T, "nowhere", "s1", NOW),
    "list_subscriptions": lambda s: s.list_subscriptions(T, "nowhere", None, 10, NOW),
    "update_subscription": lambda s: s.update_subscription(
        T, "nowhere", "s1", SubscriptionUpdate(None, 60, None, None), NOW
    ),
    "advance_subscription": lambda s: s.advance_subscription(T, "nowhere", "s1", 1, NOW),
    "delete_subscription": lambda s: s.delete_subscription(T, "nowhere", "s1"),
    "purge_subscriptions": lambda s: s.purge_subscriptions(T, "nowhere"),
}


class QueueContract:
    @pytest_twisted.ensureDeferred
    async def test_a_queue_is_created_read_updated_and_deleted(self, store):
        options = QueueOptions(default_ttl=120.0, max_messages=5)
        created = await store.create_queue(T, "q", options, {"colour": "red"}, NOW)
        assert created == Queue(T, "q", options, {"colour": "red"}, NOW)
        assert await store.get_queue(T, "q") == created
        with pytest.raises(QueueExists):
            await store.create_queue(T, "q", QueueOptions(), {}, NOW + 1)
        assert (await store.get_queue(T, "q")).metadata == {"colour": "red"}
        new = QueueOptions(default_ttl=60.0, overflow=Overflow.DROP_OLDEST, max_messages=2)
        updated = await store.update_queue(T, "q", new, {"a": [1, 2]})
        assert updated == Queue(T, "q", new, {"a": [1, 2]}, NOW)
        assert await store.get_queue(T, "q") == updated
        assert await store.delete_queue(T, "q") is True
        assert await store.delete_queue(T, "q") is False
        assert await store.get_queue(T, "q") is None
        assert await store.list_queues(T, None, 10) == []

    @pytest_twisted.ensureDeferred
    async def test_queues_list_by_name_in_byte_order_after_the_marker(self, store):
        names = ["b", "a-c", "ab", "a_b", "B", "a.b", "Z9", "a"]
        for name in names:
            await make_queue(store, name)
        await make_queue(store, "other-tenant-only", tenant="t2")
        listed = [q.name for q in await store.list_queues(T, None, 100)]
        assert listed == sorted(names)
        walked: list[str] = []
        marker = None
        while page := await store.list_queues(T, marker, 3):
            assert len(page) <= 3
            walked += [q.name for q in page]
            marker = page[-1].name
        assert walked == sorted(names)
        assert [q.name for q in await store.list_queues("t2", None, 10)] == ["other-tenant-only"]

    @pytest_twisted.ensureDeferred
    async def test_every_call_on_a_missing_queue_fails_with_queue_not_found(self, store):
        await make_queue(store, "nowhere", tenant="another-tenant")  # same name elsewhere
        failed = []
        for name, call in PER_QUEUE_CALLS.items():
            try:
                await call(store)
            except QueueNotFound:
                failed.append(name)
        assert failed == list(PER_QUEUE_CALLS)
        assert await store.get_queue(T, "nowhere") is None
        assert await store.delete_queue(T, "nowhere") is False

    @pytest_twisted.ensureDeferred
    async def test_deleting_a_queue_deletes_its_messages_claims_and_cursors(self, store):
        await make_queue(store)
        markers = await put(store, b"a", b"b")
        await lease(store, "c1", 1)
        await store.set_cursor(T, "q", "sub", markers[0])
        assert await store.delete_queue(T, "q") is True
        await make_queue(store)
        assert await everything(store) == []
        assert await store.get_claim(T, "q", "c1", NOW) is None
        assert await store.get_cursor(T, "q", "sub") is None
        assert (await store.queue_stats(T, "q", NOW)).total == 0

    @pytest_twisted.ensureDeferred
    async def test_tenants_never_see_each_others_queues_or_messages(self, store):
        await make_queue(store, tenant="alice")
        await make_queue(store, tenant="bob")
        await put(store, b"alice's", tenant="alice")
        [bob] = await put(store, b"bob's", tenant="bob")
        found = await store.claim("bob", "q", "c1", 10, 30.0, 0.0, NOW)
        assert [m.body for m in found] == [b"bob's"]
        assert await store.ack("alice", "q", "c1", [bob], NOW) == []
        assert (await store.queue_stats("alice", "q", NOW)).available == 1

    # -- schemas ---------------------------------------------------------------------------

    @pytest_twisted.ensureDeferred
    async def test_only_set_queue_schema_changes_a_queue_schema(self, store):
        with_schema = QueueOptions(schema=42, schema_text='"long"')
        await store.create_queue(T, "q", with_schema, {}, NOW)
        updated = await store.update_queue(T, "q", QueueOptions(default_ttl=60.0), {})
        assert (updated.options.schema, updated.options.schema_text) == (42, '"long"')
        assert updated.options.default_ttl == 60.0
        cleared = await store.set_queue_schema(T, "q", None, None, [], NOW)
        assert (cleared.options.schema, cleared.options.default_ttl) == (None, 60.0)
        assert (await store.get_queue(T, "q")).options == cleared.options

    @pytest_twisted.ensureDeferred
    async def test_a_publish_checked_against_another_schema_fails_and_stores_nothing(self, store):
        await store.create_queue(T, "q", QueueOptions(schema=7, schema_text='"int"'), {}, NOW)
        for checked_against in (None, 8):
            with pytest.raises(SchemaChanged) as e:
                await store.publish(T, "q", [NewMessage(b"\x02")], NOW, checked_against)
            assert e.value.fingerprint == 7
        assert (await store.queue_stats(T, "q", NOW)).total == 0
        [marker] = await store.publish(T, "q", [NewMessage(b"\x02")], NOW, 7)
        assert [m.marker for m in await store.get_messages(T, "q", [marker], NOW)] == [marker]

    @pytest_twisted.ensureDeferred
    async def test_a_schema_is_set_only_over_writers_it_was_checked_against(self, store):
        await make_queue(store)
        await put(
            store,
            NewMessage(b"\x02", content_type=avro_content_type(11)),
            NewMessage(b"\x02", content_type=avro_content_type(12), ttl=5),
            NewMessage(b"{}", content_type="application/json"),
        )
        assert await store.schema_writers(T, "q", NOW) == [11, 12]
        with pytest.raises(UncheckedWriters) as e:
            await store.set_queue_schema(T, "q", 11, '"int"', [], NOW)
        assert e.value.fingerprints == [12]
        assert (await store.get_queue(T, "q")).options.schema is None
        queue = await store.set_queue_schema(T, "q", 11, '"int"', [12], NOW)
        assert (queue.options.schema, queue.options.schema_text) == (11, '"int"')
        assert await store.schema_writers(T, "q", NOW + 5) == [11]  # the other one expired
        await store.set_queue_schema(T, "q", 13, '"long"', [11], NOW + 5)

    @pytest_twisted.ensureDeferred
    async def test_the_writer_schema_registry_keeps_the_first_text(self, store):
        assert await store.get_schema(99) is None
        await store.put_schema(99, '"int"')
        await store.put_schema(99, '"something else"')
        assert await store.get_schema(99) == '"int"'

    # -- durable subscriptions -------------------------------------------------------------

    @pytest_twisted.ensureDeferred
    async def test_cursors_are_stored_per_queue_and_subscription(self, store):
        await make_queue(store, "a")
        await make_queue(store, "b")
        assert await store.get_cursor(T, "a", "sub") is None
        await store.set_cursor(T, "a", "sub", 3)
        await store.set_cursor(T, "a", "sub", 5)
        await store.set_cursor(T, "a", "other", 1)
        await store.set_cursor(T, "b", "sub", 9)
        assert await store.get_cursor(T, "a", "sub") == 5
        assert await store.get_cursor(T, "a", "other") == 1
        assert await store.get_cursor(T, "b", "sub") == 9
        await store.set_cursor(T, "a", "sub", None)
        await store.set_cursor(T, "a", "never-set", None)
        assert await store.get_cursor(T, "a", "sub") is None
        assert await store.get_cursor(T, "a", "other") == 1

    # -- tenants and keys (ITenantStore) ---------------------------------------------------

    @pytest_twisted.ensureDeferred
    async def test_tenants_are_created_once_and_listed_by_name(self, store):
        assert await store.get_tenant("acme") is None
        assert await store.create_tenant("acme", NOW) == (Tenant("acme", NOW), True)
        assert await store.create_tenant("acme", NOW + 5) == (Tenant("acme", NOW), False)
        await store.create_tenant("Zed", NOW + 1)
        await store.create_tenant("beta", NOW + 2)
        assert await store.get_tenant("acme") == Tenant("acme", NOW)
        assert [t.name for t in await store.list_tenants()] == ["Zed", "acme", "beta"]

    @pytest_twisted.ensureDeferred
    async def test_a_key_is_found_until_it_is_revoked(self, store):
        await store.create_tenant("acme", NOW)
        await store.add_key("acme", "k1", "hash-1", NOW)
        await store.add_key("acme", "k2", "hash-2", NOW)
        assert await store.find_key("k1") == ("acme", "hash-1")
        assert await store.find_key("nope") is None
        assert await store.revoke_key("k1", NOW + 1) is True
        assert await store.revoke_key("k1", NOW + 2) is False
        assert await store.revoke_key("nope", NOW) is False
        assert await store.find_key("k1") is None
        assert await store.find_key("k2") == ("acme", "hash-2")

    @pytest_twisted.ensureDeferred
    async def test_ping_answers(self, store):
        assert await store.ping() is True
