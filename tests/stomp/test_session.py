"""STOMP sessions over StringTransport and a Clock, on a memory-only queue service."""

from __future__ import annotations

from dataclasses import replace

import pytest
from twisted.internet.task import Clock

from qgate.core.model import NewMessage, QueueOptions
from qgate.core.service import QueueService
from qgate.protocols.stomp.codec import V10, V11
from qgate.storage.memory import MemoryStorage
from tests.support.core import TEST_LIMITS
from tests.support.deferreds import fired
from tests.support.stomp import Client, make_ctx


def _publish(service, queue, *bodies, tenant="default"):
    return fired(service.publish(tenant, queue, [NewMessage(b) for b in bodies]))


def _stats(service, queue, tenant="default"):
    return fired(service.queue_stats(tenant, queue))


# -- CONNECT ---------------------------------------------------------------------------------


def test_connect_negotiates_the_highest_common_version(client):
    client.send("CONNECT", {"accept-version": "1.0,1.1,1.2", "host": "/"})
    f = client.next()
    assert f.command == "CONNECTED"
    assert f.headers["version"] == "1.2"
    assert f.headers["server"].startswith("qgate/")
    assert len(f.headers["session"]) == 32
    assert f.headers["heart-beat"] == "0,0"


def test_connect_without_accept_version_is_stomp_1_0(client):
    client.send("CONNECT", {})
    f = client.next()
    assert f.command == "CONNECTED"
    assert f.headers["version"] == "1.0"


def test_stomp_frame_connects_too(client):
    client.send("STOMP", {"accept-version": "1.1", "host": "/"})
    assert client.next().headers["version"] == "1.1"


def test_no_common_version_is_an_error_listing_the_supported_ones(client):
    client.send("CONNECT", {"accept-version": "2.0", "host": "/"})
    f = client.next()
    assert f.command == "ERROR"
    assert f.headers["version"] == "1.0,1.1,1.2"
    assert "Supported protocol versions are 1.0,1.1,1.2" in f.headers["message"]
    assert client.closing


@pytest.mark.parametrize("version", [V10, V11, "1.2"])
def test_an_error_answering_connect_reads_back_in_every_version(ctx, version):
    """Found by fuzzing: the ERROR quoted a bad header with a backslash (``'\\x1f'``), sent
    unescaped, which a 1.1 or 1.2 parser refuses as an undefined escape."""
    client = Client(ctx, version=version)
    client.send("CONNECT", {"accept-version": version, "content-length": "\x1f"})
    f = client.next()
    assert f.command == "ERROR"
    shown = "\\\\x1f" if version == V10 else "\\x1f"
    assert f.headers["message"] == f"content-length is not a number: '{shown}'"


def test_a_frame_before_connect_is_an_error(client):
    client.send("SEND", {"destination": "/queue/a", "receipt": "r1"}, b"x")
    f = client.next()
    assert f.command == "ERROR"
    assert f.headers["receipt-id"] == "r1"
    assert client.closing


def test_a_second_connect_is_an_error(client):
    client.connect()
    client.send("CONNECT", {"accept-version": "1.2"})
    assert client.next().command == "ERROR"


def test_host_names_the_tenant(client, mem_service):
    client.connect(host="acme")
    client.send("SEND", {"destination": "/queue/q", "receipt": "1"}, b"x")
    assert client.next().command == "RECEIPT"
    assert _stats(mem_service, "q", tenant="acme").total == 1


def test_a_bad_tenant_name_is_refused(client):
    client.send("CONNECT", {"accept-version": "1.2", "host": "bad host!"})
    f = client.next()
    assert f.command == "ERROR"
    assert client.closing


def test_api_keys_login_and_passcode(mem_service):
    from qgate.core.auth import APIKeys, TenantAdmin
    from qgate.storage.memory import MemoryStorage

    tenants = MemoryStorage()
    clock = mem_service.clock
    admin = TenantAdmin(tenants, clock)
    fired(Deferred_from(admin.create_tenant("acme")))
    token = fired(Deferred_from(admin.create_key("acme")))
    ctx = make_ctx(mem_service, auth=APIKeys(tenants, clock), heartbeat_ms=0)

    good = Client(ctx)
    good.connect(login="acme", passcode=token)
    good.send("SEND", {"destination": "/queue/q", "receipt": "1"}, b"x")
    assert good.next().command == "RECEIPT"
    assert _stats(mem_service, "q", tenant="acme").total == 1

    for headers in (
        {"login": "acme", "passcode": "qg_nope_nope"},
        {"login": "other", "passcode": token},
        {},
    ):
        bad = Client(ctx)
        bad.send("CONNECT", {"accept-version": "1.2", "host": "/", **headers})
        f = bad.next()
        assert f.command == "ERROR"
        assert f.headers["message"] == "Authentication failed"
        assert bad.closing


def Deferred_from(coro):
    from twisted.internet.defer import Deferred

    return Deferred.fromCoroutine(coro)


# -- SEND ------------------------------------------------------------------------------------


def test_send_stores_body_content_type_headers_and_priority(client, mem_service):
    client.connect()
    body = b"\x00\x01binary\xff"
    client.send(
        "SEND",
        {
            "destination": "/queue/jobs",
            "content-type": "application/x-thing",
            "content-length": str(len(body)),
            "priority": "7",
            "x-trace": "a:b\nc",
            "receipt": "r-1",
        },
        body,
    )
    assert client.next().headers == {"receipt-id": "r-1"}
    [m] = fired(mem_service.observe("default", "jobs"))
    assert m.body == body
    assert m.content_type == "application/x-thing"
    assert m.priority == 7
    assert dict(m.headers) == {"x-trace": "a:b\nc"}


def test_send_expiration_sets_the_ttl(client, mem_service):
    client.connect()
    client.send("SEND", {"destination": "/queue/q", "expiration": "5000", "receipt": "1"}, b"x")
    client.next()
    [m] = fired(mem_service.observe("default", "q"))
    assert m.ttl == 5.0


@pytest.mark.parametrize(
    "headers",
    [
        {},
        {"destination": "/nowhere/a"},
        {"destination": "/queue/bad name"},
        {"destination": "/queue/a", "priority": "12"},
    ],
)
def test_bad_send_is_an_error_and_other_connections_go_on(ctx, headers):
    other = Client(ctx)
    other.connect()
    bad = Client(ctx)
    bad.connect()
    bad.send("SEND", {**headers, "receipt": "r"}, b"x")
    f = bad.next()
    assert f.command == "ERROR"
    assert f.headers["receipt-id"] == "r"
    assert f.headers["content-type"].startswith("text/plain")
    assert bad.closing
    other.send("SEND", {"destination": "/queue/a", "receipt": "ok"}, b"x")
    assert other.next().command == "RECEIPT"
    assert not other.closing


def test_unknown_command_is_an_error(client):
    client.connect()
    client.send("FROB", {})
    f = client.next()
    assert f.command == "ERROR"
    assert "FROB" in f.headers["message"]
    assert client.closing


def test_frames_after_an_error_are_ignored(client, mem_service):
    client.connect()
    client.raw(b"FROB\n\n\x00SEND\ndestination:/queue/a\n\nx\x00")
    assert [f.command for f in client.read()] == ["ERROR"]
    assert fired(mem_service.list_queues("default")) == []


def test_a_frame_too_large_is_an_error(mem_service):
    client = Client(make_ctx(mem_service, heartbeat_ms=0, max_frame=1000))
    client.connect()
    client.send("SEND", {"destination": "/queue/a"}, b"x" * 2000)
    f = client.next()
    assert f.command == "ERROR"
    assert "larger than 1000" in f.headers["message"]
    assert client.closing


def test_a_bad_escape_is_an_error(client):
    client.connect()
    client.raw(b"SEND\ndestination:/queue/a\nx:\\t\n\n\x00")
    f = client.next()
    assert f.command == "ERROR"
    assert "escape" in f.headers["message"]


def test_a_heart_beat_with_non_ascii_digits_is_an_error_not_a_crash(client):
    client.send("CONNECT", {"accept-version": "1.2", "host": "/", "heart-beat": "\u00b2,0"})
    f = client.next()
    assert f.command == "ERROR"
    assert "heart-beat" in f.headers["message"]
    assert client.closing


def test_an_unsubscribe_whose_messages_cannot_go_back_is_an_error(clock):
    from twisted.internet.defer import fail

    from qgate.core.errors import StorageUnavailable
    from tests.support.core import memory_service

    service = memory_service(clock)
    service.release = lambda *a, **k: fail(StorageUnavailable("database away"))  # type: ignore[method-assign]
    client = Client(make_ctx(service, heartbeat_ms=0))
    _publish(service, "jobs", b"a")
    client.connect()
    client.send("SUBSCRIBE", {"destination": "/queue/jobs", "id": "s", "ack": "client"})
    assert len(client.messages()) == 1
    client.send("UNSUBSCRIBE", {"id": "s", "receipt": "r1"})
    f = client.next()
    assert f.command == "ERROR" and f.headers.get("receipt-id") == "r1"


def test_persistent_false_makes_a_new_queue_transient(client, mem_service):
    client.connect()
    client.send("SEND", {"destination": "/queue/t", "persistent": "false", "receipt": "1"}, b"x")
    client.send("SEND", {"destination": "/queue/d", "receipt": "2"}, b"x")
    client.read()
    assert not fired(mem_service.get_queue("default", "t")).options.durable
    assert fired(mem_service.get_queue("default", "d")).options.durable


def test_a_transient_queue_takes_the_service_defaults_but_durability(clock):
    defaults = QueueOptions(default_ttl=42.0, default_delay=0.0, max_messages=7)
    service = QueueService(
        clock, MemoryStorage(), MemoryStorage(), limits=TEST_LIMITS, default_options=defaults
    )
    c = Client(make_ctx(service, heartbeat_ms=0))
    c.connect()
    c.send("SEND", {"destination": "/queue/t", "persistent": "false", "receipt": "1"}, b"x")
    assert c.next().command == "RECEIPT"
    options = fired(service.get_queue("default", "t")).options
    assert options == replace(defaults, durable=False)


# -- SUBSCRIBE to queues ---------------------------------------------------------------------


def test_subscribe_auto_delivers_and_acknowledges(client, mem_service):
    _publish(mem_service, "jobs", b"one", b"two")
    client.connect()
    client.send("SUBSCRIBE", {"destination": "/queue/jobs", "id": "s1", "receipt": "sub"})
    frames = client.read()
    assert frames[0].command == "RECEIPT"
    msgs = frames[1:]
    assert [m.body for m in msgs] == [b"one", b"two"]
    m = msgs[0]
    assert m.headers["subscription"] == "s1"
    assert m.headers["destination"] == "/queue/jobs"
    assert m.headers["content-length"] == "3"
    assert m.headers["content-type"] == "application/octet-stream"
    assert "ack" not in m.headers
    assert _stats(mem_service, "jobs").total == 0


def test_messages_published_later_are_pushed_without_polling(client, mem_service, clock):
    client.connect()
    client.send("SUBSCRIBE", {"destination": "/queue/jobs", "id": "s1"})
    assert client.read() == []
    calls = len(clock.getDelayedCalls())
    _publish(mem_service, "jobs", b"later")
    assert [m.body for m in client.messages()] == [b"later"]
    assert len(clock.getDelayedCalls()) == calls


def test_client_individual_ack_and_nack(client, mem_service):
    _publish(mem_service, "jobs", b"a", b"b")
    client.connect()
    client.send("SUBSCRIBE", {"destination": "/queue/jobs", "id": "s", "ack": "client-individual"})
    a, b = client.messages()
    assert a.headers["ack"] == a.headers["message-id"]
    client.send("ACK", {"id": b.headers["ack"], "receipt": "ack-b"})
    assert client.next().headers["receipt-id"] == "ack-b"
    client.send("NACK", {"id": a.headers["ack"]})
    [again] = client.messages()
    assert again.body == b"a"
    assert again.headers["redelivered"] == "true"
    client.send("ACK", {"id": again.headers["ack"]})
    assert _stats(mem_service, "jobs").total == 0


def test_client_ack_is_cumulative(client, mem_service):
    _publish(mem_service, "jobs", b"1", b"2", b"3")
    client.connect()
    client.send("SUBSCRIBE", {"destination": "/queue/jobs", "id": "s", "ack": "client"})
    msgs = client.messages()
    client.send("ACK", {"id": msgs[1].headers["ack"], "receipt": "r"})
    client.read()
    stats = _stats(mem_service, "jobs")
    assert stats.total == 1 and stats.claimed == 1
    client.lose()
    stats = _stats(mem_service, "jobs")
    assert stats.total == 1 and stats.available == 1


def test_ack_in_stomp_1_1_uses_subscription_and_message_id(client, mem_service):
    _publish(mem_service, "jobs", b"x")
    client.connect(version=V11)
    client.send("SUBSCRIBE", {"destination": "/queue/jobs", "id": "s", "ack": "client"})
    [m] = client.messages()
    assert "ack" not in m.headers
    client.send("ACK", {"subscription": "s", "message-id": m.headers["message-id"], "receipt": "r"})
    assert client.next().command == "RECEIPT"
    assert _stats(mem_service, "jobs").total == 0


def test_stomp_1_0_subscribe_without_id_and_ack_by_message_id(client, mem_service):
    _publish(mem_service, "jobs", b"x")
    client.connect(version=V10)
    client.send("SUBSCRIBE", {"destination": "/queue/jobs", "ack": "client"})
    [m] = client.messages()
    assert m.headers["subscription"] == "/queue/jobs"
    client.send("ACK", {"message-id": m.headers["message-id"], "receipt": "r"})
    assert client.next().command == "RECEIPT"
    assert _stats(mem_service, "jobs").total == 0
    client.send("NACK", {"message-id": "1"})
    assert client.next().command == "ERROR"


def test_an_unknown_ack_id_is_an_error(client):
    client.connect()
    client.send("ACK", {"id": "99"})
    assert client.next().command == "ERROR"


def test_prefetch_count_bounds_unacknowledged_messages(client, mem_service):
    _publish(mem_service, "jobs", *[b"%d" % i for i in range(5)])
    client.connect()
    client.send(
        "SUBSCRIBE",
        {
            "destination": "/queue/jobs",
            "id": "s",
            "ack": "client-individual",
            "prefetch-count": "2",
        },
    )
    msgs = client.messages()
    assert [m.body for m in msgs] == [b"0", b"1"]
    client.send("ACK", {"id": msgs[0].headers["ack"]})
    assert [m.body for m in client.messages()] == [b"2"]


def test_competing_consumers_share_a_queue(ctx, mem_service):
    a, b = Client(ctx), Client(ctx)
    for c in (a, b):
        c.connect()
        c.send("SUBSCRIBE", {"destination": "/queue/jobs", "id": "s", "ack": "client"})
    _publish(mem_service, "jobs", b"1")
    _publish(mem_service, "jobs", b"2")
    got = [m.body for m in a.messages()] + [m.body for m in b.messages()]
    assert sorted(got) == [b"1", b"2"]


def test_unacked_messages_go_back_when_the_connection_is_lost(ctx, mem_service):
    _publish(mem_service, "jobs", b"x")
    a = Client(ctx)
    a.connect()
    a.send("SUBSCRIBE", {"destination": "/queue/jobs", "id": "s", "ack": "client"})
    assert len(a.messages()) == 1
    b = Client(ctx)
    b.connect()
    b.send("SUBSCRIBE", {"destination": "/queue/jobs", "id": "s", "ack": "client"})
    assert b.messages() == []
    a.lose()
    [m] = b.messages()
    assert m.body == b"x" and m.headers["redelivered"] == "true"


def test_unsubscribe_stops_delivery_and_gives_back_unacked(client, mem_service, clock):
    _publish(mem_service, "jobs", b"x")
    client.connect()
    calls = len(clock.getDelayedCalls())
    client.send("SUBSCRIBE", {"destination": "/queue/jobs", "id": "s", "ack": "client"})
    assert len(client.messages()) == 1
    client.send("UNSUBSCRIBE", {"id": "s", "receipt": "u"})
    assert client.next().headers["receipt-id"] == "u"
    # The waiting claim was cancelled: its timer is gone, and the message is back.
    assert len(clock.getDelayedCalls()) == calls
    assert _stats(mem_service, "jobs").available == 1
    _publish(mem_service, "jobs", b"y")
    assert client.read() == []


def test_duplicate_subscription_id_is_an_error(client):
    client.connect()
    client.send("SUBSCRIBE", {"destination": "/queue/a", "id": "s"})
    client.send("SUBSCRIBE", {"destination": "/queue/b", "id": "s"})
    assert client.next().command == "ERROR"


def test_bad_ack_mode_is_an_error(client):
    client.connect()
    client.send("SUBSCRIBE", {"destination": "/queue/a", "id": "s", "ack": "sometimes"})
    assert client.next().command == "ERROR"


def test_disconnect_releases_waits(client, clock):
    client.connect()
    calls = len(clock.getDelayedCalls())
    client.send("SUBSCRIBE", {"destination": "/queue/a", "id": "s"})
    client.send("SUBSCRIBE", {"destination": "/topic/b", "id": "t"})
    assert len(clock.getDelayedCalls()) > calls
    client.lose()
    assert len(clock.getDelayedCalls()) < calls + 1


def test_claims_are_renewed_while_the_connection_lives(client, mem_service, clock):
    _publish(mem_service, "jobs", b"x")
    client.connect()
    client.send("SUBSCRIBE", {"destination": "/queue/jobs", "id": "s", "ack": "client"})
    [m] = client.messages()
    for _ in range(100):  # 1000 s, in steps shorter than a third of the 30 s lease
        clock.advance(10)
    assert _stats(mem_service, "jobs").claimed == 1
    assert _stats(mem_service, "jobs").oldest.claim_count == 1  # held, never given back
    client.send("ACK", {"id": m.headers["ack"]})
    assert _stats(mem_service, "jobs").total == 0


class _TwoProcesses:
    """Two gateway processes on one store, each with its own clock: the STOMP one can
    crash (its clock stops: no renewal, no release, nothing more), the other keeps time and
    claims what the dead one held."""

    def __init__(self, **stomp: object) -> None:
        store = MemoryStorage()
        self.stomp_clock, self.other_clock = Clock(), Clock()
        stomp_side = QueueService(self.stomp_clock, store, MemoryStorage(), limits=TEST_LIMITS)
        self.other = QueueService(self.other_clock, store, MemoryStorage(), limits=TEST_LIMITS)
        _publish(self.other, "jobs", b"x")
        self.client = Client(make_ctx(stomp_side, heartbeat_ms=0, **stomp))
        self.client.connect()
        self.client.send("SUBSCRIBE", {"destination": "/queue/jobs", "id": "s", "ack": "client"})
        [self.message] = self.client.messages()

    def both_advance(self, seconds: int) -> None:
        for _ in range(seconds):
            self.stomp_clock.advance(1)
            self.other_clock.advance(1)

    def other_claims(self) -> list[bytes]:
        claim = fired(self.other.claim("default", "jobs", ttl=60))
        return [] if claim is None else [m.body for m in claim.messages]


@pytest.mark.parametrize(("stomp", "lease"), [({"lease": 20.0}, 20), ({}, 30)])
def test_after_a_crash_the_messages_come_back_after_one_lease(stomp, lease):
    world = _TwoProcesses(**stomp)
    world.other_clock.advance(lease - 0.5)
    assert world.other_claims() == []
    world.other_clock.advance(1)
    assert world.other_claims() == [b"x"]


def test_the_lease_is_renewed_while_connected_and_ends_one_lease_after_a_crash():
    world = _TwoProcesses(lease=3.0)  # renewed every second
    world.both_advance(10)  # ten seconds: three leases and more
    assert world.other_claims() == []
    # The STOMP process dies now: its last renewal (at 10 s) holds the claim until 13 s.
    world.other_clock.advance(2.5)
    assert world.other_claims() == []
    world.other_clock.advance(1)
    assert world.other_claims() == [b"x"]


def test_publisher_headers_cannot_override_stomp_headers(client, mem_service):
    fired(
        mem_service.publish(
            "default",
            "jobs",
            [NewMessage(b"x", headers={"subscription": "evil", "x-a": "1:2\n3", "ünï": "✓"})],
        )
    )
    client.connect()
    client.send("SUBSCRIBE", {"destination": "/queue/jobs", "id": "s"})
    [m] = client.messages()
    assert m.headers["subscription"] == "s"
    assert m.headers["x-a"] == "1:2\n3"
    assert m.headers["ünï"] == "✓"


def test_priority_comes_through(client, mem_service):
    client.connect()
    client.send("SEND", {"destination": "/queue/p", "priority": "9"}, b"hi")
    client.send("SUBSCRIBE", {"destination": "/queue/p", "id": "s"})
    [m] = client.messages()
    assert m.headers["priority"] == "9"


# -- topics ----------------------------------------------------------------------------------


def test_topic_subscribers_each_get_every_message_after_subscribing(ctx, mem_service):
    _publish(mem_service, "news", b"old")
    a, b = Client(ctx), Client(ctx)
    for c in (a, b):
        c.connect()
        c.send("SUBSCRIBE", {"destination": "/topic/news", "id": "t", "receipt": "s"})
        assert c.next().command == "RECEIPT"
    a.send("SEND", {"destination": "/topic/news"}, b"new1")
    b.send("SEND", {"destination": "/topic/news"}, b"new2")
    for c in (a, b):
        msgs = c.messages()
        assert [m.body for m in msgs] == [b"new1", b"new2"]
        assert msgs[0].headers["destination"] == "/topic/news"


def test_topic_on_a_new_queue_delivers_from_the_first_message(client, mem_service):
    client.connect()
    client.send("SUBSCRIBE", {"destination": "/topic/fresh", "id": "t"})
    _publish(mem_service, "fresh", b"1", b"2")
    assert [m.body for m in client.messages()] == [b"1", b"2"]


def test_topic_client_ack_bounds_the_window_and_nack_redelivers(client, mem_service):
    client.connect()
    client.send(
        "SUBSCRIBE",
        {"destination": "/topic/n", "id": "t", "ack": "client-individual", "prefetch-count": "1"},
    )
    _publish(mem_service, "n", b"1", b"2")
    [m1] = client.messages()
    client.send("NACK", {"id": m1.headers["ack"]})
    [again] = client.messages()
    assert again.body == b"1" and again.headers["redelivered"] == "true"
    client.send("ACK", {"id": again.headers["ack"]})
    assert [m.body for m in client.messages()] == [b"2"]


def test_durable_topic_subscription_resumes_after_reconnect(ctx, mem_service):
    durable = {"destination": "/topic/feed", "id": "sub-1", "durable": "true", "ack": "client"}
    _publish(mem_service, "feed", b"before")
    a = Client(ctx)
    a.connect()
    a.send("SUBSCRIBE", durable)
    _publish(mem_service, "feed", b"m1", b"m2")
    m1, m2 = a.messages()
    a.send("ACK", {"id": m1.headers["ack"], "receipt": "r"})
    a.read()
    a.lose()
    _publish(mem_service, "feed", b"m3")
    b = Client(ctx)
    b.connect()
    b.send("SUBSCRIBE", durable)  # the same subscription, from another connection
    assert [m.body for m in b.messages()] == [b"m2", b"m3"]
    # UNSUBSCRIBE with durable:true forgets the cursor.
    b.send("UNSUBSCRIBE", {"id": "sub-1", "durable": "true", "receipt": "u"})
    b.read()
    assert fired(mem_service.get_cursor("default", "feed", "sub-1")) is None


def test_durable_topic_auto_ack_advances_the_cursor(ctx, mem_service):
    _publish(mem_service, "feed", b"x")
    a = Client(ctx)
    a.connect()
    a.send("SUBSCRIBE", {"destination": "/topic/feed", "id": "d", "durable": "true"})
    _publish(mem_service, "feed", b"y")
    assert [m.body for m in a.messages()] == [b"y"]
    assert fired(mem_service.get_cursor("default", "feed", "d")) == "2"


def test_a_durable_subscription_made_on_an_empty_queue_keeps_its_place(ctx, mem_service):
    a = Client(ctx)
    a.connect()
    a.send(
        "SUBSCRIBE",
        {"destination": "/topic/empty", "id": "d", "durable": "true", "receipt": "s"},
    )
    assert a.next().command == "RECEIPT"
    # The position is stored at once: "0", before every message.
    assert fired(mem_service.get_cursor("default", "empty", "d")) == "0"
    a.lose()
    _publish(mem_service, "empty", b"while away")
    b = Client(ctx)
    b.connect()
    b.send("SUBSCRIBE", {"destination": "/topic/empty", "id": "d", "durable": "true"})
    assert [m.body for m in b.messages()] == [b"while away"]
    assert fired(mem_service.get_cursor("default", "empty", "d")) == "1"


def test_a_non_durable_topic_subscriber_misses_what_was_sent_while_away(ctx, mem_service):
    a = Client(ctx)
    a.connect()
    a.send("SUBSCRIBE", {"destination": "/topic/gone", "id": "t", "receipt": "s"})
    assert a.next().command == "RECEIPT"
    a.lose()
    _publish(mem_service, "gone", b"missed")
    b = Client(ctx)
    b.connect()
    b.send("SUBSCRIBE", {"destination": "/topic/gone", "id": "t"})
    _publish(mem_service, "gone", b"seen")
    assert [m.body for m in b.messages()] == [b"seen"]


# -- temporary queues ------------------------------------------------------------------------


def test_temp_queue_reply_to_round_trip(ctx, mem_service):
    requester, server = Client(ctx), Client(ctx)
    requester.connect()
    server.connect()
    server.send("SUBSCRIBE", {"destination": "/queue/rpc", "id": "s"})
    requester.send(
        "SEND",
        {"destination": "/queue/rpc", "reply-to": "/temp-queue/answers", "receipt": "r"},
        b"question",
    )
    assert requester.next().command == "RECEIPT"
    [request] = server.messages()
    reply_to = request.headers["reply-to"]
    assert reply_to.startswith("/reply-queue/tmp.")
    server.send("SEND", {"destination": reply_to}, b"answer")
    [reply] = requester.messages()
    assert reply.body == b"answer"
    assert reply.headers["subscription"] == "/temp-queue/answers"
    assert reply.headers["destination"] == "/temp-queue/answers"
    core = reply_to.removeprefix("/reply-queue/")
    assert not fired(mem_service.get_queue("default", core)).options.durable
    requester.lose()
    names = [q.name for q in fired(mem_service.list_queues("default"))]
    assert core not in names
    # A reply to a requester that has gone is dropped, not an error.
    server.send("SEND", {"destination": reply_to, "receipt": "late"}, b"too late")
    assert server.next().command == "RECEIPT"


def test_explicit_subscription_to_a_temp_queue(client):
    client.connect()
    client.send("SUBSCRIBE", {"destination": "/temp-queue/mine", "id": "t", "ack": "client"})
    client.send("SEND", {"destination": "/temp-queue/mine"}, b"to myself")
    [m] = client.messages()
    assert m.body == b"to myself" and m.headers["subscription"] == "t"


# -- transactions ----------------------------------------------------------------------------


def test_sends_in_a_transaction_take_effect_on_commit(client, mem_service):
    client.connect()
    client.send("BEGIN", {"transaction": "tx"})
    for i in range(3):
        client.send("SEND", {"destination": "/queue/t", "transaction": "tx"}, b"%d" % i)
    client.send("SEND", {"destination": "/queue/u", "transaction": "tx"}, b"u")
    with pytest.raises(Exception, match="does not exist"):
        _stats(mem_service, "t")
    client.send("COMMIT", {"transaction": "tx", "receipt": "c"})
    assert client.next().headers["receipt-id"] == "c"
    assert _stats(mem_service, "t").total == 3
    assert _stats(mem_service, "u").total == 1


def test_abort_discards_sends_and_acks(client, mem_service):
    _publish(mem_service, "jobs", b"x")
    client.connect()
    client.send("SUBSCRIBE", {"destination": "/queue/jobs", "id": "s", "ack": "client"})
    [m] = client.messages()
    client.send("BEGIN", {"transaction": "tx"})
    client.send("SEND", {"destination": "/queue/jobs", "transaction": "tx"}, b"y")
    client.send("ACK", {"id": m.headers["ack"], "transaction": "tx"})
    client.send("ABORT", {"transaction": "tx", "receipt": "a"})
    assert client.next().command == "RECEIPT"
    stats = _stats(mem_service, "jobs")
    assert stats.total == 1 and stats.claimed == 1
    client.send("BEGIN", {"transaction": "tx2"})
    client.send("ACK", {"id": m.headers["ack"], "transaction": "tx2"})
    assert _stats(mem_service, "jobs").total == 1
    client.send("COMMIT", {"transaction": "tx2"})
    assert _stats(mem_service, "jobs").total == 0


def test_open_transactions_abort_on_disconnect(client, mem_service):
    client.connect()
    client.send("BEGIN", {"transaction": "tx"})
    client.send("SEND", {"destination": "/queue/t", "transaction": "tx"}, b"x")
    client.lose()
    assert fired(mem_service.list_queues("default")) == []


def test_transaction_errors(client):
    client.connect()
    client.send("COMMIT", {"transaction": "nope"})
    assert client.next().command == "ERROR"


def test_duplicate_begin_is_an_error(client):
    client.connect()
    client.send("BEGIN", {"transaction": "t"})
    client.send("BEGIN", {"transaction": "t"})
    assert client.next().command == "ERROR"


# -- DISCONNECT and heart-beats --------------------------------------------------------------


def test_disconnect_with_receipt_is_graceful(client, mem_service):
    client.connect()
    client.send("SEND", {"destination": "/queue/a"}, b"x")
    client.send("DISCONNECT", {"receipt": "bye"})
    f = client.next()
    assert f.command == "RECEIPT" and f.headers["receipt-id"] == "bye"
    assert client.closing
    client.send("SEND", {"destination": "/queue/a"}, b"ignored")
    assert _stats(mem_service, "a").total == 1


def test_server_sends_heart_beats_when_idle(mem_service, clock: Clock):
    client = Client(make_ctx(mem_service, heartbeat_ms=1000))
    f = client.connect(**{"heart-beat": "0,2000"})
    assert f.headers["heart-beat"] == "1000,1000"
    clock.advance(1.9)
    assert client.transport.value() == b""
    clock.advance(0.2)
    assert client.transport.value() == b"\n"
    client.transport.clear()
    clock.advance(2.0)
    assert client.transport.value() == b"\n"


def test_a_silent_client_is_disconnected_after_the_grace_margin(mem_service, clock: Clock):
    client = Client(make_ctx(mem_service, heartbeat_ms=1000))
    client.connect(**{"heart-beat": "3000,0"})
    for _ in range(4):
        clock.advance(2.0)
        client.raw(b"\n")  # a client heart-beat
    assert not client.closing
    clock.advance(4.4)
    assert not client.closing
    clock.advance(0.2)
    f = client.next()
    assert f.command == "ERROR" and "heart-beat" in f.headers["message"]
    assert client.closing


def test_no_heart_beats_when_either_side_says_zero(mem_service, clock: Clock):
    client = Client(make_ctx(mem_service, heartbeat_ms=1000))
    client.connect(**{"heart-beat": "0,0"})
    clock.advance(100)
    assert client.transport.value() == b"" and not client.closing


def test_a_malformed_heart_beat_header_is_an_error(client):
    client.send("CONNECT", {"accept-version": "1.2", "heart-beat": "soon"})
    assert client.next().command == "ERROR"
