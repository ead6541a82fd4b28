"""Back-pressure: a fast producer is paused, a consumer that does not read is bounded."""

from __future__ import annotations

from typing import Any

from twisted.internet.defer import Deferred
from twisted.internet.testing import StringTransport

from qgate.core.model import NewMessage, QueueOptions
from qgate.protocols.stomp.protocol import CLOSE_TIMEOUT
from qgate.protocols.stomp.sending import MAX_INFLIGHT_PUBLISHES
from tests.support.deferreds import fired
from tests.support.stomp import Client, make_ctx


class HeldPublishes:
    """A queue service whose publishes wait until the test lets them through (slow storage)."""

    def __init__(self, service: Any) -> None:
        self._service = service
        self.held: list[tuple[Deferred[Any], tuple[Any, ...]]] = []

    def __getattr__(self, name: str) -> Any:
        return getattr(self._service, name)

    def publish(self, tenant: str, name: str, messages: Any, create: bool = True) -> Deferred[Any]:
        d: Deferred[Any] = Deferred()
        self.held.append((d, (tenant, name, messages, create)))
        return d

    def messages(self) -> int:
        """Messages in the publishes held now."""
        return sum(len(args[2]) for _, args in self.held)

    def commit(self, n: int | None = None) -> None:
        batch, self.held = self.held[:n], self.held[len(self.held[:n]) :]
        for d, args in batch:
            self._service.publish(*args).chainDeferred(d)


def test_a_producer_faster_than_storage_is_paused(mem_service):
    slow = HeldPublishes(mem_service)
    client = Client(make_ctx(slow, heartbeat_ms=0))  # type: ignore[arg-type]
    client.connect()
    total = MAX_INFLIGHT_PUBLISHES + 20
    client.raw(
        b"".join(b"SEND\ndestination:/queue/q\nreceipt:%d\n\n%d\x00" % (i, i) for i in range(total))
    )
    # Input stops at the bound: the transport is paused and later frames wait unparsed.
    assert slow.messages() == MAX_INFLIGHT_PUBLISHES
    assert client.transport.producerState == "paused"
    assert client.read() == []  # no receipt before the commit
    slow.commit()
    assert client.transport.producerState == "producing"
    assert slow.messages() == 20
    slow.commit()
    receipts = [f.headers["receipt-id"] for f in client.read()]
    assert receipts == [str(i) for i in range(total)]
    assert fired(mem_service.queue_stats("default", "q")).total == total


def test_sends_of_one_chunk_are_one_publish_and_keep_their_order(mem_service):
    slow = HeldPublishes(mem_service)
    client = Client(make_ctx(slow, heartbeat_ms=0))  # type: ignore[arg-type]
    client.connect()
    client.raw(
        b"SEND\ndestination:/queue/a\n\na1\x00"
        b"SEND\ndestination:/queue/b\nreceipt:b1\n\nb1\x00"
        b"SEND\ndestination:/queue/a\nreceipt:a2\n\na2\x00"
    )
    assert [(args[1], [m.body for m in args[2]]) for _, args in slow.held] == [
        ("a", [b"a1", b"a2"]),
        ("b", [b"b1"]),
    ]
    slow.commit()
    assert sorted(f.headers["receipt-id"] for f in client.read()) == ["a2", "b1"]


def test_a_batch_that_does_not_fit_is_stored_send_by_send(mem_service):
    """A full queue rejects the SEND that does not fit, not the ones before it."""
    fired(mem_service.create_queue("default", "small", QueueOptions(max_messages=2), None))
    client = Client(make_ctx(mem_service, heartbeat_ms=0))
    client.connect()
    client.raw(
        b"".join(b"SEND\ndestination:/queue/small\nreceipt:%d\n\n%d\x00" % (i, i) for i in range(3))
    )
    frames = client.read()
    assert [f.command for f in frames] == ["RECEIPT", "RECEIPT", "ERROR"]
    assert frames[2].headers["receipt-id"] == "2"
    assert [m.body for m in fired(mem_service.observe("default", "small"))] == [b"0", b"1"]


def test_a_send_receipt_waits_for_the_commit(mem_service):
    slow = HeldPublishes(mem_service)
    client = Client(make_ctx(slow, heartbeat_ms=0))  # type: ignore[arg-type]
    client.connect()
    client.send("SEND", {"destination": "/queue/q", "receipt": "r"}, b"x")
    assert client.read() == []
    slow.commit()
    assert client.next().headers["receipt-id"] == "r"


def test_disconnect_receipt_waits_for_outstanding_publishes(mem_service):
    slow = HeldPublishes(mem_service)
    client = Client(make_ctx(slow, heartbeat_ms=0))  # type: ignore[arg-type]
    client.connect()
    client.send("SEND", {"destination": "/queue/q", "receipt": "s"}, b"x")
    client.send("DISCONNECT", {"receipt": "bye"})
    assert client.read() == [] and not client.closing
    slow.commit()
    assert [f.headers["receipt-id"] for f in client.read()] == ["s", "bye"]
    assert client.closing


class SlowReader(StringTransport):
    """A transport whose peer stops reading once ``limit`` bytes are buffered."""

    def __init__(self, limit: int) -> None:
        super().__init__()
        self.limit = limit

    def write(self, data: bytes) -> None:
        super().write(data)
        if len(self.value()) > self.limit and self.producer is not None:
            self.producer.pauseProducing()


def _slow_client(ctx: Any, limit: int) -> Client:
    client = Client.__new__(Client)
    Client.__init__(client, ctx)
    client.transport = SlowReader(limit)
    client.proto = type(client.proto)(ctx)
    client.proto.makeConnection(client.transport)
    return client


def _overflowing_consumer(service: Any, ctx: Any) -> Client:
    """A consumer reading 1,000 bytes, subscribed (client ack, prefetch 20) to ``q``, which
    then gets 20 messages of 500 bytes: more than a 2,000-byte output buffer holds."""
    client = _slow_client(ctx, limit=1_000)
    client.connect()
    client.send(
        "SUBSCRIBE",
        {"destination": "/queue/q", "id": "s", "ack": "client", "prefetch-count": "20"},
    )
    fired(service.publish("default", "q", [NewMessage(b"y" * 500) for _ in range(20)]))
    return client


def test_a_consumer_that_does_not_read_gets_no_more_than_its_window(mem_service):
    ctx = make_ctx(mem_service, heartbeat_ms=0, max_output_buffer=100_000)
    client = _slow_client(ctx, limit=2_000)
    client.connect()
    client.send("SUBSCRIBE", {"destination": "/queue/q", "id": "s", "prefetch-count": "5"})
    client.read()
    body = b"x" * 500
    fired(mem_service.publish("default", "q", [NewMessage(body) for _ in range(50)]))
    # The first batch (prefetch 5) went out; then the peer stopped reading and the
    # subscription waits instead of claiming more.
    assert len(client.messages()) == 5
    assert fired(mem_service.queue_stats("default", "q")).total == 45
    assert not client.closing
    # The peer reads again: delivery resumes.
    client.transport.limit = 10**9
    client.proto.resumeProducing()
    assert len(client.messages()) == 45


def test_a_consumer_past_its_output_buffer_is_disconnected(mem_service, clock):
    ctx = make_ctx(mem_service, heartbeat_ms=0, max_output_buffer=2_000)
    other = Client(ctx)
    other.connect()
    client = _overflowing_consumer(mem_service, ctx)
    frames = client.read()
    assert frames[-1].command == "ERROR"
    assert "slow consumer" in frames[-1].headers["message"]
    assert len(frames) < 20
    assert client.closing
    # Its messages go back to the queue once the connection is gone; others are unaffected.
    clock.advance(CLOSE_TIMEOUT)
    assert client.transport.disconnected
    client.lose()
    assert fired(mem_service.queue_stats("default", "q")).available == 20
    other.send("SUBSCRIBE", {"destination": "/queue/q", "id": "s", "ack": "client"})
    assert len(other.messages()) == 20


def test_the_part_of_a_batch_a_slow_consumer_was_never_sent_is_given_back_uncounted(
    mem_service, clock
):
    """Output overflow ends the session in the middle of a claimed batch: the MESSAGEs
    written count as delivered, the rest of the batch goes back as it was."""
    fired(mem_service.create_queue("default", "q", QueueOptions(max_claim_count=5)))
    ctx = make_ctx(mem_service, heartbeat_ms=0, max_output_buffer=2_000)
    client = _overflowing_consumer(mem_service, ctx)
    written = [f for f in client.read() if f.command == "MESSAGE"]
    assert 0 < len(written) < 20 and client.closing
    clock.advance(CLOSE_TIMEOUT)
    client.lose()
    left = fired(mem_service.observe("default", "q", limit=20))
    assert len(left) == 20
    assert [m.claim_count for m in left] == [1] * len(written) + [0] * (20 - len(written))


class CountedAcks:
    """A queue service that records each ack call (and passes it on)."""

    def __init__(self, service: Any) -> None:
        self._service = service
        self.acks: list[list[str]] = []

    def __getattr__(self, name: str) -> Any:
        return getattr(self._service, name)

    def ack(self, tenant: str, name: str, claim_id: str, ids: Any) -> Deferred[Any]:
        self.acks.append(list(ids))
        return self._service.ack(tenant, name, claim_id, ids)


def test_acks_of_one_chunk_are_one_core_call(mem_service):
    counted = CountedAcks(mem_service)
    client = Client(make_ctx(counted, heartbeat_ms=0))  # type: ignore[arg-type]
    client.connect()
    fired(mem_service.publish("default", "q", [NewMessage(b"%d" % i) for i in range(3)]))
    client.send("SUBSCRIBE", {"destination": "/queue/q", "id": "s", "ack": "client-individual"})
    tags = [m.headers["ack"] for m in client.messages()]
    client.raw(
        b"".join(b"ACK\nid:%s\nreceipt:r%s\n\n\x00" % (t.encode(), t.encode()) for t in tags)
    )
    assert len(counted.acks) == 1 and len(counted.acks[0]) == 3
    assert [f.headers["receipt-id"] for f in client.read()] == [f"r{t}" for t in tags]
    assert fired(mem_service.queue_stats("default", "q")).total == 0


def test_an_ack_takes_effect_before_the_disconnect_receipt(mem_service):
    client = Client(make_ctx(mem_service, heartbeat_ms=0))
    client.connect()
    fired(mem_service.publish("default", "q", [NewMessage(b"x")]))
    client.send("SUBSCRIBE", {"destination": "/queue/q", "id": "s", "ack": "client"})
    [m] = client.messages()
    client.raw(
        b"ACK\nid:%s\nreceipt:a\n\n\x00DISCONNECT\nreceipt:bye\n\n\x00" % m.headers["ack"].encode()
    )
    assert [f.headers["receipt-id"] for f in client.read()] == ["a", "bye"]
    assert fired(mem_service.queue_stats("default", "q")).total == 0


def test_frames_after_batched_sends_see_them_stored(mem_service):
    """A SEND then a topic SUBSCRIBE in one chunk: the subscriber starts after the message,
    as when the frames arrive one by one."""
    client = Client(make_ctx(mem_service, heartbeat_ms=0))
    client.connect()
    client.raw(
        b"SEND\ndestination:/topic/t\n\nbefore\x00"
        b"SUBSCRIBE\ndestination:/topic/t\nid:s\nreceipt:r\n\n\x00"
        b"SEND\ndestination:/topic/t\n\nafter\x00"
    )
    frames = client.read()
    assert [(f.command, f.body) for f in frames] == [("RECEIPT", b""), ("MESSAGE", b"after")]
