"""Push subscriptions through the queue service, on memory, SQLite and PostgreSQL: what
the service adds to storage (checks every protocol gets, ids, the queue made on first
use, routing to the queue's store, expiry on the clock)."""

from __future__ import annotations

import pytest
import pytest_twisted

from qgate.core._ids import new_subscription_id
from qgate.core._subscriptions import END_OF_TIME
from qgate.core.errors import (
    InvalidArgument,
    QueueNotFound,
    SubscriptionExists,
    SubscriptionNotFound,
)
from qgate.core.model import QueueOptions
from tests.support.core import msgs

T = "tenant-a"
HOOK = "http://hooks.example:8080/in?x=1"


@pytest_twisted.ensureDeferred
async def test_a_subscription_makes_its_queue_and_starts_after_its_messages(service, clock):
    await service.publish(T, "q", msgs(b"old"))
    sub, created = await service.create_subscription(T, "q", HOOK, ttl=600, options={"a": 1})
    assert created and len(sub.id) == 24 and int(sub.id, 16) >= 0
    assert (sub.queue, sub.subscriber, sub.ttl, sub.options) == ("q", HOOK, 600, {"a": 1})
    assert (sub.created_at, sub.expires_at) == (clock.seconds(), clock.seconds() + 600)
    assert sub.marker == 1 and sub.confirmed is False
    fresh, created = await service.create_subscription(T, "new-queue", HOOK)
    assert created and fresh.ttl == 3600  # Zaqar's default
    assert (await service.get_queue(T, "new-queue")).options == service.default_options
    with pytest.raises(QueueNotFound):
        await service.create_subscription(T, "not-made", HOOK, create=False)


@pytest_twisted.ensureDeferred
async def test_a_refused_subscription_changes_nothing(service):
    refused = [
        ({"subscriber": "mailto:ops@example.com"}, "subscriber"),
        ({"subscriber": "trust+http://hooks.example"}, "subscriber"),
        ({"subscriber": "ftp://hooks.example"}, "subscriber"),
        ({"subscriber": "http://"}, "subscriber"),
        ({"subscriber": "http://a b"}, "subscriber"),
        ({"subscriber": "http://[::1"}, "subscriber"),
        ({"subscriber": "http://h/" + "x" * 2048}, "subscriber"),
        ({"subscriber": 42}, "subscriber"),
        ({"ttl": 0}, "ttl"),
        ({"ttl": True}, "ttl"),
        ({"ttl": 60.0}, "ttl"),
        ({"ttl": int(END_OF_TIME)}, "ttl"),
        ({"options": ["a"]}, "options"),
        ({"options": {1: "a"}}, "options"),
        ({"options": {"a": float("nan")}}, "options"),
        ({"options": {"a": "x" * 70_000}}, "options"),
    ]
    for kwargs, field in refused:
        args = {"subscriber": HOOK, **kwargs}
        with pytest.raises(InvalidArgument) as e:
            await service.create_subscription(T, "q", **args)
        assert e.value.field == field, kwargs
    assert await service.list_queues(T) == []  # not even the queue was made
    ok, _ = await service.create_subscription(T, "q", "HTTPS://Hooks.Example/x", ttl=60)
    assert ok.subscriber == "HTTPS://Hooks.Example/x"


@pytest_twisted.ensureDeferred
async def test_subscriptions_are_found_listed_and_expire_on_the_clock(service, clock):
    first, _ = await service.create_subscription(T, "q", "http://one", ttl=60)
    clock.advance(0.002)
    second, _ = await service.create_subscription(T, "q", "http://two", ttl=120)
    assert first.id < second.id  # ids sort by creation time
    assert await service.list_subscriptions(T, "q") == [first, second]
    assert await service.list_subscriptions(T, "q", marker=first.id) == [second]
    assert await service.list_subscriptions(T, "q", limit=1) == [first]
    assert await service.get_subscription(T, "q", first.id) == first
    clock.advance(60)
    with pytest.raises(SubscriptionNotFound):
        await service.get_subscription(T, "q", first.id)
    assert await service.list_subscriptions(T, "q") == [second]
    for bad in ("nope", "", None):
        with pytest.raises(SubscriptionNotFound):
            await service.get_subscription(T, "q", bad)
    with pytest.raises(InvalidArgument) as e:
        await service.list_subscriptions(T, "q", limit=service.limits.max_page + 1)
    assert e.value.field == "limit"
    with pytest.raises(QueueNotFound):
        await service.list_subscriptions(T, "missing")


@pytest_twisted.ensureDeferred
async def test_an_update_is_checked_and_counts_a_new_ttl_from_now(service, clock):
    sub, _ = await service.create_subscription(T, "q", "http://one", ttl=600)
    await service.create_subscription(T, "q", "http://two")
    clock.advance(100)
    updated = await service.update_subscription(T, "q", sub.id, ttl=60, options={"b": 2})
    assert (updated.ttl, updated.expires_at) == (60, clock.seconds() + 60)
    assert updated.options == {"b": 2}
    confirmed = await service.update_subscription(T, "q", sub.id, confirmed=True)
    assert confirmed.confirmed is True
    with pytest.raises(SubscriptionExists):
        await service.update_subscription(T, "q", sub.id, subscriber="http://two")
    for kwargs, field in [
        ({"subscriber": "mailto:x@y"}, "subscriber"),
        ({"ttl": "60"}, "ttl"),
        ({"options": 1}, "options"),
        ({"confirmed": "yes"}, "confirmed"),
    ]:
        with pytest.raises(InvalidArgument) as e:
            await service.update_subscription(T, "q", sub.id, **kwargs)
        assert e.value.field == field
    assert await service.get_subscription(T, "q", sub.id) == confirmed
    with pytest.raises(SubscriptionNotFound):
        await service.update_subscription(T, "q", "nope", ttl=60)


@pytest_twisted.ensureDeferred
async def test_subscriptions_go_with_their_queue_and_by_purge(service):
    await service.create_queue(T, "t", options=QueueOptions(durable=False))
    transient, _ = await service.create_subscription(T, "t", HOOK)
    assert await service.get_subscription(T, "t", transient.id) == transient
    await service.create_subscription(T, "q", "http://a")
    await service.create_subscription(T, "q", "http://b")
    assert await service.purge_subscriptions(T, "q") == 2
    assert await service.list_subscriptions(T, "q") == []
    assert await service.delete_subscription(T, "t", transient.id) is True
    assert await service.delete_subscription(T, "t", transient.id) is False
    again, _ = await service.create_subscription(T, "t", HOOK)
    assert await service.delete_queue(T, "t") is True
    await service.create_queue(T, "t")
    assert await service.list_subscriptions(T, "t") == []
    with pytest.raises(SubscriptionNotFound):
        await service.get_subscription(T, "t", again.id)


def test_subscription_ids_are_24_hex_digits_in_creation_order():
    made = [new_subscription_id(t) for t in (0.0, 1.5, 1.501, 1_000_000.0, END_OF_TIME)]
    assert all(len(i) == 24 and int(i, 16) >= 0 for i in made)
    assert made[:4] == sorted(made[:4])
    same_time = [new_subscription_id(5.0) for _ in range(100)]
    assert same_time == sorted(same_time)  # by their count
    assert len(set(same_time)) == 100
