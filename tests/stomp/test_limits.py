"""What one STOMP connection may hold: a deadline for CONNECT, a bound on silence without
heart-beats, and caps on subscriptions, open transactions and the bytes they keep."""

from __future__ import annotations

import pytest
from twisted.internet.task import Clock

from qgate.core.errors import QueueNotFound
from qgate.core.service import QueueService
from qgate.protocols.stomp.codec import V12, encode
from tests.support.deferreds import fired
from tests.support.stomp import Client, make_ctx


def _client(service: QueueService, **stomp: object) -> Client:
    stomp.setdefault("heartbeat_ms", 0)
    return Client(make_ctx(service, **stomp))


def _error(client: Client) -> str:
    frames = client.read()
    assert frames and frames[-1].command == "ERROR", frames
    assert client.closing
    return frames[-1].headers["message"]


def test_a_client_that_never_sends_connect_is_closed_at_the_deadline(
    mem_service: QueueService, clock: Clock
) -> None:
    client = _client(mem_service, connect_timeout=10.0)
    client.raw(b"CONN")  # bytes, but never a whole CONNECT
    clock.advance(9.75)
    assert not client.closing
    clock.advance(0.25)
    assert _error(client) == "no CONNECT frame within 10 seconds"


def test_a_client_connected_in_time_outlives_the_connect_deadline(
    mem_service: QueueService, clock: Clock
) -> None:
    client = _client(mem_service, connect_timeout=10.0)
    client.connect()
    clock.advance(60)
    assert client.read() == [] and not client.closing
    client.lose()
    assert not clock.getDelayedCalls()


def test_a_silent_client_without_heart_beats_is_closed_after_idle_timeout(
    mem_service: QueueService, clock: Clock
) -> None:
    client = _client(mem_service, idle_timeout=60.0)
    client.connect()
    clock.advance(59)
    client.send("SEND", {"destination": "/queue/q"}, b"x")  # anything counts
    clock.advance(59)
    assert not client.closing
    clock.advance(1)
    assert "without heart-beats" in _error(client)


def test_heart_beats_slower_than_the_idle_bound_do_not_lift_it(
    mem_service: QueueService, clock: Clock
) -> None:
    client = _client(mem_service, heartbeat_ms=1000, idle_timeout=60.0)
    client.connect(**{"heart-beat": "3600000,0"})  # "I send a heart-beat every hour"
    clock.advance(60)
    assert "without heart-beats" in _error(client)


def test_a_client_that_sends_its_heart_beats_stays(mem_service: QueueService, clock: Clock) -> None:
    client = _client(mem_service, heartbeat_ms=10_000, idle_timeout=60.0)
    client.connect(**{"heart-beat": "10000,0"})
    for _ in range(30):  # five minutes of heart-beats
        clock.advance(10)
        client.raw(b"\n")
    assert client.read() == [] and not client.closing


def test_a_subscribe_past_max_subscriptions_is_an_error(mem_service: QueueService) -> None:
    client = _client(mem_service, max_subscriptions=3)
    client.connect()
    for i in range(3):
        client.send("SUBSCRIBE", {"destination": f"/queue/q{i}", "id": str(i)})
    assert client.read() == []
    client.send("SUBSCRIBE", {"destination": "/queue/q3", "id": "3"})
    assert _error(client) == "too many subscriptions on this connection (max_subscriptions 3)"


def test_a_subscribe_flood_in_one_chunk_stops_at_the_cap_and_leaves_nothing_behind(
    mem_service: QueueService,
) -> None:
    client = _client(mem_service, max_subscriptions=10)
    client.connect()
    flood = b"".join(
        encode("SUBSCRIBE", {"destination": f"/queue/q{i}", "id": str(i)}, b"", V12)
        for i in range(1000)
    )
    client.raw(flood)
    assert "max_subscriptions 10" in _error(client)
    consumers = client.proto.link.session.consumers
    assert consumers.subscriptions == {}
    # Frames after the ERROR were never handled: no queue was made for them.
    fired(mem_service.get_queue("default", "q9"))
    with pytest.raises(QueueNotFound):
        fired(mem_service.get_queue("default", "q10"))
    client.lose()


def test_a_begin_past_max_transactions_is_an_error(mem_service: QueueService) -> None:
    client = _client(mem_service, max_transactions=2)
    client.connect()
    client.send("BEGIN", {"transaction": "a"})
    client.send("BEGIN", {"transaction": "b"})
    assert client.read() == []
    client.send("BEGIN", {"transaction": "c"})
    assert _error(client) == "too many open transactions on this connection (max_transactions 2)"


def test_sends_kept_past_max_transaction_bytes_abort_the_transaction(
    mem_service: QueueService,
) -> None:
    client = _client(mem_service, max_transaction_bytes=1000)
    client.connect()
    client.send("BEGIN", {"transaction": "t"})
    client.send("SEND", {"destination": "/queue/q", "transaction": "t"}, b"x" * 600)
    assert client.read() == []
    client.send("SEND", {"destination": "/queue/q", "transaction": "t"}, b"x" * 600)
    message = _error(client)
    assert "aborted" in message and "1000 bytes (max_transaction_bytes)" in message
    assert client.proto.link.session.transactions.size == 0
    with pytest.raises(QueueNotFound):
        fired(mem_service.queue_stats("default", "q"))  # nothing of it was published


def test_commit_and_abort_give_the_transaction_bytes_back(mem_service: QueueService) -> None:
    client = _client(mem_service, max_transaction_bytes=1000)
    client.connect()
    for end in ("COMMIT", "ABORT", "COMMIT"):
        client.send("BEGIN", {"transaction": "t"})
        client.send("SEND", {"destination": "/queue/q", "transaction": "t"}, b"x" * 600)
        client.send(end, {"transaction": "t"})
    assert client.read() == [] and not client.closing
    assert fired(mem_service.queue_stats("default", "q")).total == 2


def test_open_subscriptions_are_counted_for_operators_until_they_end(
    mem_service: QueueService,
) -> None:
    from dataclasses import replace

    from qgate.core.metrics import SUBSCRIPTIONS, RecordingMetrics

    metrics = RecordingMetrics()
    client = Client(replace(make_ctx(mem_service), metrics=metrics))
    client.connect()
    key = (SUBSCRIPTIONS, (("protocol", "stomp"),))
    for i in range(3):
        client.send("SUBSCRIBE", {"destination": f"/queue/g{i}", "id": str(i)})
    client.read()
    assert metrics.gauges[key] == 3
    client.send("UNSUBSCRIBE", {"id": "0"})
    client.read()
    assert metrics.gauges[key] == 2
    client.lose()  # the connection ends: its subscriptions with it
    assert metrics.gauges[key] == 0
