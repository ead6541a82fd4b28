"""Per-tenant quotas, rate limits and key scopes (``core.guard``), on memory and a Clock."""

from __future__ import annotations

import pytest
import pytest_twisted
from twisted.internet.task import Clock
from zope.interface.verify import verifyObject

from qgate.core.auth import APIKeys, TenantAdmin
from qgate.core.errors import Forbidden, QuotaExceeded, RateLimited, Unauthorized
from qgate.core.guard import TenantGuard
from qgate.core.interfaces import IQueueService
from qgate.core.principal import Principal, Scope, check_scope
from qgate.core.quotas import Quotas, TenantQuotas, check_quota
from qgate.core.sessions import ITenantSessions, open_session
from qgate.core.tenant_watch import TenantWatch
from qgate.storage.memory import MemoryStorage
from tests.support.core import make_clock, memory_service, msgs

T = "tenant-a"


def guarded(clock: Clock, **quotas: float) -> TenantGuard:
    return TenantGuard(memory_service(clock), clock, TenantQuotas(Quotas(**quotas)))  # type: ignore[arg-type]


def test_the_guard_provides_the_queue_service_and_sessions():
    guard = guarded(make_clock())
    verifyObject(IQueueService, guard)
    verifyObject(ITenantSessions, guard)


@pytest_twisted.ensureDeferred
async def test_a_batch_over_max_messages_is_refused_whole_and_names_the_quota():
    guard = guarded(make_clock(), max_messages=3)
    await guard.publish(T, "q", msgs(b"a", b"b"))
    with pytest.raises(QuotaExceeded) as e:
        await guard.publish(T, "q", msgs(b"c", b"d"))
    assert e.value.field == "max_messages" and "max_messages quota is 3" in str(e.value)
    assert (await guard.queue_stats(T, "q")).total == 2
    await guard.publish(T, "q", msgs(b"c"))  # exactly at the quota is fine
    # Another tenant is not affected.
    await guard.publish("tenant-b", "q", msgs(b"1", b"2", b"3"))


@pytest_twisted.ensureDeferred
async def test_stored_bytes_count_against_max_bytes_across_queues():
    guard = guarded(make_clock(), max_bytes=10)
    await guard.publish(T, "q1", msgs(b"12345"))
    await guard.publish(T, "q2", msgs(b"1234"))
    with pytest.raises(QuotaExceeded) as e:
        await guard.publish(T, "q1", msgs(b"12"))
    assert e.value.field == "max_bytes"


@pytest_twisted.ensureDeferred
async def test_acked_and_expired_messages_give_their_room_back():
    clock = make_clock()
    guard = guarded(clock, max_messages=2)
    await guard.publish(T, "q", msgs(b"a", b"b"))
    claim = await guard.claim(T, "q", limit=2)
    await guard.ack(T, "q", claim.id, [m.id for m in claim.messages])
    await guard.publish(T, "q", msgs(b"c", b"d"))
    # Expired and reaped (unseen by the counters): the refusal counts exactly first.
    clock.advance(3600 + 1)  # past the default ttl
    assert await guard.reap() == 2
    await guard.publish(T, "q", msgs(b"e", b"f"))


@pytest_twisted.ensureDeferred
async def test_max_queues_bounds_created_queues_and_queues_made_by_a_publish():
    guard = guarded(make_clock(), max_queues=2)
    await guard.create_queue(T, "a")
    await guard.publish(T, "b", msgs(b"x"))
    _, created = await guard.create_queue(T, "a")  # an existing queue is still answered
    assert not created
    with pytest.raises(QuotaExceeded) as e:
        await guard.create_queue(T, "c")
    assert e.value.field == "max_queues"
    with pytest.raises(QuotaExceeded):
        await guard.publish(T, "d", msgs(b"x"))
    assert [q.name for q in await guard.list_queues(T)] == ["a", "b"]
    await guard.delete_queue(T, "a")
    await guard.create_queue(T, "c")


@pytest_twisted.ensureDeferred
async def test_long_poll_waiters_and_session_subscriptions_share_max_subscriptions():
    clock = make_clock()
    guard = guarded(clock, max_subscriptions=2)
    await guard.create_queue(T, "q")
    waiting = guard.claim(Principal(T), "q", wait=10)
    session = guard.open_session(Principal(T))
    session.subscribe()
    with pytest.raises(QuotaExceeded) as e:
        await guard.observe(Principal(T), "q", wait=5)
    assert e.value.field == "max_subscriptions"
    with pytest.raises(QuotaExceeded):
        session.subscribe()
    # A session's own waits are its subscriptions, not more waiters.
    own = guard.claim(session.principal, "q", wait=1)
    clock.advance(10)
    assert await own is None
    assert await waiting is None
    session.subscribe()  # the waiter's slot is free again
    session.close()
    guard.open_session(Principal(T)).subscribe()


def test_max_connections_bounds_open_sessions_and_closing_frees_one():
    guard = guarded(make_clock(), max_connections=2)
    first = guard.open_session(Principal(T))
    guard.open_session(Principal(T))
    with pytest.raises(QuotaExceeded) as e:
        guard.open_session(Principal(T))
    assert e.value.field == "max_connections"
    first.close()
    first.close()  # twice is once
    guard.open_session(Principal(T))
    assert guard.connections(T) == 2


@pytest_twisted.ensureDeferred
async def test_a_request_over_the_publish_rate_is_refused_with_the_time_to_wait():
    clock = make_clock()
    guard = guarded(clock, publish_rate=10, publish_burst=5)
    await guard.publish(T, "q", msgs(*[b"x"] * 5))
    with pytest.raises(RateLimited) as e:
        await guard.publish(T, "q", msgs(b"y", b"z"))
    assert e.value.field == "publish_rate" and e.value.retry_after == pytest.approx(0.2)
    assert (await guard.queue_stats(T, "q")).total == 5
    clock.advance(0.2)
    await guard.publish(T, "q", msgs(b"y", b"z"))


@pytest_twisted.ensureDeferred
async def test_a_connection_over_the_publish_rate_is_slowed_not_refused():
    clock = make_clock()
    guard = guarded(clock, publish_rate=10, publish_burst=5)
    session = guard.open_session(Principal(T))
    assert session.publish_delay() == 0
    await guard.publish(session.principal, "q", msgs(*[b"x"] * 10))
    assert session.publish_delay() == pytest.approx(0.5)
    clock.advance(0.5)
    assert session.publish_delay() == 0


@pytest_twisted.ensureDeferred
async def test_one_authentication_is_one_request_for_the_request_rate():
    clock = make_clock()
    guard = guarded(clock, request_rate=1, request_burst=2)
    first = Principal(T)
    await guard.create_queue(first, "q")
    await guard.queue_stats(first, "q")  # the same request: not counted again
    await guard.queue_stats(Principal(T), "q")
    with pytest.raises(RateLimited) as e:
        await guard.queue_stats(Principal(T), "q")
    assert e.value.field == "request_rate"
    # A connection's calls are not requests.
    session = guard.open_session(Principal(T))
    await guard.queue_stats(session.principal, "q")
    clock.advance(1)
    await guard.queue_stats(Principal(T), "q")


@pytest_twisted.ensureDeferred
async def test_a_key_scope_limits_operations_and_queues_and_filters_listings():
    guard = guarded(make_clock())
    await guard.create_queue(T, "jobs.a")
    await guard.create_queue(T, "logs")
    producer = Principal(T, "k1", check_scope(["jobs.*"], ["publish"]))
    await guard.publish(producer, "jobs.a", msgs(b"x"))
    await guard.publish(producer, "jobs.new", msgs(b"x"))  # creates it, as a publish does
    with pytest.raises(Forbidden) as e:
        await guard.publish(producer, "logs", msgs(b"x"))
    assert e.value.field == "queue_name"
    with pytest.raises(Forbidden) as e:
        await guard.claim(producer, "jobs.a")
    assert e.value.field == "operation"
    with pytest.raises(Forbidden):
        await guard.delete_queue(producer, "jobs.a")
    assert [q.name for q in await guard.list_queues(producer)] == ["jobs.a", "jobs.new"]
    assert (await guard.queue_stats(T, "logs")).total == 0


def test_quota_values_and_scopes_are_checked():
    assert check_quota("max_queues", 5) == ("max_queues", 5.0)
    for key, value in (("max_queues", 1.5), ("max_queues", -1), ("nope", 1)):
        with pytest.raises(Exception):  # noqa: B017 - InvalidArgument, named below
            check_quota(key, value)
    with pytest.raises(Exception):  # noqa: B017
        check_scope([], ["delete"])
    scope = Scope.from_text("jobs.*,a?", "consume")
    assert scope.allows_queue("jobs.x") and scope.allows_queue("ab")
    assert not scope.allows_queue("abc") and not scope.allows_op("publish")
    assert Scope.from_text(*scope.to_text()) == scope


@pytest_twisted.ensureDeferred
async def test_a_stored_quota_is_in_force_within_one_watch_round():
    clock = make_clock()
    store = MemoryStorage()
    quotas = TenantQuotas(Quotas())
    guard = TenantGuard(memory_service(clock), clock, quotas, store)
    watch = TenantWatch(clock, store, quotas, guard=guard)
    watch.start()
    await guard.publish(T, "q", msgs(b"a", b"b"))
    await TenantAdmin(store, clock).set_quota(T, "max_messages", 2)
    clock.advance(0.5)
    with pytest.raises(QuotaExceeded):
        await guard.publish(T, "q", msgs(b"c"))
    await TenantAdmin(store, clock).set_quota(T, "max_messages", None)
    clock.advance(0.5)
    await guard.publish(T, "q", msgs(b"c"))
    watch.stop()


@pytest_twisted.ensureDeferred
async def test_a_revoked_key_fails_and_closes_its_sessions_within_one_watch_round():
    clock = make_clock()
    store = MemoryStorage()
    admin = TenantAdmin(store, clock)
    await admin.create_tenant("acme")
    token = await admin.create_key("acme", ("jobs.*",), ("consume",))
    other = await admin.create_key("acme")
    auth = APIKeys(store, clock, cache_seconds=30)
    quotas = TenantQuotas()
    guard = TenantGuard(memory_service(clock), clock, quotas, store)
    watch = TenantWatch(clock, store, quotas, auth, guard)
    watch.start()
    principal = await auth.authenticate(None, token)
    assert isinstance(principal, Principal) and principal.scope.ops == ("consume",)
    closed: list[str] = []
    open_session(guard, principal, closed.append)
    kept = open_session(guard, await auth.authenticate(None, other), closed.append)
    await admin.revoke_key(token)
    clock.advance(0.5)
    assert closed == ["the API key of this connection was revoked"]
    with pytest.raises(Unauthorized):
        await auth.authenticate(None, token)  # well within the 30 s cache
    assert not kept.closed and guard.connections("acme") == 2  # closing is the protocol's
    watch.stop()


@pytest_twisted.ensureDeferred
async def test_a_wait_given_by_position_holds_a_waiter_slot_too():
    clock = make_clock()
    guard = guarded(clock, max_subscriptions=1)
    await guard.create_queue(T, "q")
    popping = guard.pop_messages(Principal(T), "q", 1, 5)
    with pytest.raises(QuotaExceeded):
        await guard.claim(Principal(T), "q", 1, 60, 0, 5)
    clock.advance(5)
    assert await popping == []


@pytest_twisted.ensureDeferred
async def test_what_another_process_stored_is_counted_once_a_tenant_nears_its_quota():
    from qgate.core.service import QueueService
    from tests.support.core import TEST_LIMITS

    clock = make_clock()
    shared = MemoryStorage()  # the database both processes use

    def process() -> TenantGuard:
        service = QueueService(clock, shared, MemoryStorage(), limits=TEST_LIMITS)
        return TenantGuard(service, clock, TenantQuotas(Quotas(max_messages=10)))

    first, second = process(), process()
    await first.publish(T, "q", msgs(*[b"x"] * 9))
    await second.publish(T, "q", msgs(b"y"))  # counted first: 9 there, so 10
    with pytest.raises(QuotaExceeded):
        await second.publish(T, "q", msgs(b"z"))
    clock.advance(1)
    # The first process still thinks 9: this one is let through, and counts again.
    await first.publish(T, "q", msgs(b"z"))
    with pytest.raises(QuotaExceeded):
        await first.publish(T, "q", msgs(b"w"))
    assert (await first.queue_stats(T, "q")).total == 11
