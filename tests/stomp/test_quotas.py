"""Tenant bounds over STOMP: a quota is an ERROR frame naming it; the publish rate pauses
the producer's transport instead (no error, nothing buffered); a revoked key's open
session gets an ERROR and is closed within a second."""

from __future__ import annotations

from typing import Any

from twisted.internet.defer import Deferred

from qgate.core.auth import APIKeys, TenantAdmin
from qgate.core.guard import TenantGuard
from qgate.core.quotas import Quotas, TenantQuotas
from qgate.core.tenant_watch import TenantWatch
from qgate.storage.memory import MemoryStorage
from tests.support.core import make_clock, memory_service
from tests.support.deferreds import fired
from tests.support.stomp import Client, make_ctx


def guarded(clock: Any, **quotas: float) -> TenantGuard:
    return TenantGuard(memory_service(clock), clock, TenantQuotas(Quotas(**quotas)))  # type: ignore[arg-type]


def test_a_connection_over_max_connections_gets_an_error_naming_it():
    guard = guarded(make_clock(), max_connections=1)
    first = Client(make_ctx(guard, heartbeat_ms=0))  # type: ignore[arg-type]
    first.connect()
    second = Client(make_ctx(guard, heartbeat_ms=0))  # type: ignore[arg-type]
    second.send("CONNECT", {"accept-version": "1.2", "host": "/"})
    error = second.next()
    assert error.command == "ERROR" and second.closing
    assert "max_connections quota is 1" in error.headers["message"]
    first.lose()  # its slot is given back
    third = Client(make_ctx(guard, heartbeat_ms=0))  # type: ignore[arg-type]
    third.connect()


def test_a_send_over_the_message_quota_gets_an_error_and_stores_nothing():
    guard = guarded(make_clock(), max_messages=1)
    client = Client(make_ctx(guard, heartbeat_ms=0))  # type: ignore[arg-type]
    client.connect()
    client.send("SEND", {"destination": "/queue/q", "receipt": "1"}, b"a")
    assert client.next().command == "RECEIPT"
    client.send("SEND", {"destination": "/queue/q", "receipt": "2"}, b"b")
    error = client.next()
    assert error.command == "ERROR" and "max_messages" in error.headers["message"]
    assert fired(guard.queue_stats("default", "q")).total == 1


def test_a_subscribe_over_max_subscriptions_gets_an_error():
    guard = guarded(make_clock(), max_subscriptions=1)
    client = Client(make_ctx(guard, heartbeat_ms=0))  # type: ignore[arg-type]
    client.connect()
    client.send("SUBSCRIBE", {"destination": "/queue/a", "id": "1", "receipt": "r"})
    assert client.next().command == "RECEIPT"
    client.send("SUBSCRIBE", {"destination": "/queue/b", "id": "2"})
    error = client.next()
    assert error.command == "ERROR" and "max_subscriptions" in error.headers["message"]


def test_a_producer_over_the_publish_rate_is_paused_then_resumed():
    clock = make_clock()
    guard = guarded(clock, publish_rate=10, publish_burst=5)
    client = Client(make_ctx(guard, heartbeat_ms=0))  # type: ignore[arg-type]
    client.connect()
    # One chunk of 10 SENDs: stored (no error), which leaves the bucket 5 in debt.
    client.raw(b"".join(b"SEND\ndestination:/queue/q\n\n%d\x00" % i for i in range(10)))
    # The next SEND is taken, then input stops until the debt is repaid: the one after
    # it waits unparsed (no ERROR).
    client.raw(
        b"SEND\ndestination:/queue/q\nreceipt:a\n\na\x00"
        b"SEND\ndestination:/queue/q\nreceipt:b\n\nb\x00"
    )
    assert client.transport.producerState == "paused"
    assert [f.headers.get("receipt-id") for f in client.read()] == ["a"]
    clock.advance(0.6)
    assert client.transport.producerState == "producing"
    assert [f.headers.get("receipt-id") for f in client.read()] == ["b"]
    assert fired(guard.queue_stats("default", "q")).total == 12


def test_a_revoked_key_closes_its_open_session_within_a_second():
    clock = make_clock()
    store = MemoryStorage()
    admin = TenantAdmin(store, clock)
    fired(Deferred.fromCoroutine(admin.create_tenant("acme")))
    token = fired(Deferred.fromCoroutine(admin.create_key("acme")))
    auth = APIKeys(store, clock)
    quotas = TenantQuotas()
    guard = TenantGuard(memory_service(clock), clock, quotas, store)
    watch = TenantWatch(clock, store, quotas, auth, guard)
    watch.start()
    client = Client(make_ctx(guard, auth=auth, heartbeat_ms=0))  # type: ignore[arg-type]
    client.connect(login="acme", passcode=token)
    fired(Deferred.fromCoroutine(admin.revoke_key(token)))
    assert not client.closing
    clock.advance(0.5)
    error = client.next()
    assert error.command == "ERROR" and error.headers["message"] == "Authentication failed"
    assert b"revoked" in error.body and client.closing
    watch.stop()
