"""The request head is bounded: a deadline for all of it (slowloris), and caps on the
request line, the header count and the head's size, each answered in the JSON shape."""

from __future__ import annotations

import json
from dataclasses import replace

from twisted.internet.task import Clock

from qgate.core.service import QueueService
from tests.http.test_site import connect, request_head
from tests.support.http import HTTP_TEST_CONFIG, make_ctx


def _ctx(service: QueueService, clock: Clock, **http: object):  # type: ignore[no-untyped-def]
    return make_ctx(service, reactor=clock, http=replace(HTTP_TEST_CONFIG, **http))


def _answer(data: bytes) -> tuple[bytes, dict]:
    head, _, body = data.partition(b"\r\n\r\n")
    return head.split(b"\r\n")[0], json.loads(body)


def test_a_head_sent_a_byte_at_a_time_is_cut_at_the_head_deadline(
    service: QueueService, clock: Clock
) -> None:
    ctx = _ctx(service, clock, head_timeout=10.0, idle_timeout=60.0)
    _, transport, protocol = connect(ctx)
    start = clock.seconds()
    head = request_head("GET", "/v2/queues")
    for byte in head[:-5]:
        protocol.dataReceived(bytes([byte]))  # each byte restarts the idle timeout
        clock.advance(0.25)
        if transport.disconnecting:
            break
    assert transport.disconnecting
    assert clock.seconds() - start == 10.0
    status, document = _answer(transport.value())
    assert status.startswith(b"HTTP/1.1 408 ")
    assert "10 seconds" in document["description"]


def test_the_head_deadline_counts_from_the_first_byte_not_from_connecting(
    service: QueueService, clock: Clock
) -> None:
    ctx = _ctx(service, clock, head_timeout=10.0, idle_timeout=60.0)
    _, transport, protocol = connect(ctx)
    clock.advance(30)  # idle, within the idle timeout
    protocol.dataReceived(request_head("GET", "/v2/queues")[:20])
    clock.advance(9)
    assert not transport.disconnecting
    clock.advance(1)
    assert transport.disconnecting


def test_a_whole_head_in_time_is_served_and_the_next_one_gets_its_own_deadline(
    service: QueueService, clock: Clock
) -> None:
    ctx = _ctx(service, clock, head_timeout=10.0)
    _, transport, protocol = connect(ctx)
    protocol.dataReceived(request_head("GET", "/v2/health"))
    clock.advance(0)
    assert transport.value().startswith(b"HTTP/1.1 ")
    assert not transport.value().startswith(b"HTTP/1.1 408")
    transport.clear()
    clock.advance(9)
    protocol.dataReceived(b"GET /v2/hea")
    clock.advance(9)
    assert not transport.disconnecting
    clock.advance(1)
    assert transport.value().startswith(b"HTTP/1.1 408 ")


def test_the_empty_line_after_a_request_starts_no_head_deadline(
    service: QueueService, clock: Clock
) -> None:
    ctx = _ctx(service, clock, head_timeout=10.0, idle_timeout=60.0)
    _, transport, protocol = connect(ctx)
    protocol.dataReceived(request_head("GET", "/v2/health") + b"\r\n")
    clock.advance(0)
    transport.clear()
    clock.advance(30)  # an idle keep-alive connection: only the idle timeout applies
    assert not transport.disconnecting and transport.value() == b""


def test_a_request_line_over_max_url_length_is_414(service: QueueService, clock: Clock) -> None:
    ctx = _ctx(service, clock, max_url_length=100)
    _, transport, protocol = connect(ctx)
    protocol.dataReceived(request_head("GET", "/v2/queues?x=" + "a" * 200))
    status, document = _answer(transport.value())
    assert status.startswith(b"HTTP/1.1 414 ")
    assert "100 bytes" in document["description"]
    assert transport.disconnecting


def test_more_header_lines_than_max_headers_is_431(service: QueueService, clock: Clock) -> None:
    ctx = _ctx(service, clock, max_headers=10)
    _, transport, protocol = connect(ctx)
    protocol.dataReceived(request_head("GET", "/v2/queues", *[f"X-{i}: y" for i in range(10)]))
    status, document = _answer(transport.value())
    assert status.startswith(b"HTTP/1.1 431 ")
    assert "10 header lines" in document["description"]


def test_a_head_over_max_header_bytes_is_431(service: QueueService, clock: Clock) -> None:
    ctx = _ctx(service, clock, max_header_bytes=1000)
    _, transport, protocol = connect(ctx)
    protocol.dataReceived(request_head("GET", "/v2/queues", "X-Big: " + "b" * 1000))
    status, document = _answer(transport.value())
    assert status.startswith(b"HTTP/1.1 431 ")
    assert "1000 bytes" in document["description"]
