"""The listener's Site, driven byte by byte over StringTransport: bodies too large are
refused before they are read, idle connections time out, normal requests are served."""

from __future__ import annotations

import json
from dataclasses import replace
from typing import Any

import pytest
from twisted.internet.address import IPv4Address
from twisted.internet.error import ConnectionDone
from twisted.internet.interfaces import IProtocolFactory
from twisted.internet.task import Clock
from twisted.internet.testing import StringTransport
from twisted.python.failure import Failure
from zope.interface.verify import verifyObject

from qgate.core.service import QueueService
from qgate.gateway.config import ListenerConfig
from qgate.gateway.registry import listener_factory
from qgate.protocols.context import ProtocolContext
from qgate.protocols.http import QGateSite
from tests.support.deferreds import fired
from tests.support.http import CLIENT, HTTP_TEST_CONFIG, make_ctx

LIMIT = 512 * 1024  # tests.http.conftest.HTTP_TEST_CONFIG.max_request_body


def connect(
    ctx: ProtocolContext, transport: StringTransport | None = None
) -> tuple[QGateSite, StringTransport, Any]:
    site = listener_factory("http")(ctx, ListenerConfig("http", "tcp:0"))
    assert isinstance(site, QGateSite)
    protocol = site.buildProtocol(IPv4Address("TCP", "127.0.0.1", 40000))
    assert protocol is not None
    transport = transport or StringTransport()
    protocol.makeConnection(transport)
    return site, transport, protocol


def request_head(method: str, path: str, *headers: str) -> bytes:
    lines = [
        f"{method} {path} HTTP/1.1",
        "Host: qgate.test",
        f"Client-ID: {CLIENT}",
        "X-Project-ID: p1",
        *headers,
    ]
    return ("\r\n".join(lines) + "\r\n\r\n").encode()


#: The head of a post declaring a 10 MB body: refused at once, the body then drained.
BIG_POST = request_head("POST", "/v2/queues/jobs/messages", "Content-Length: 10000000")


def test_the_registry_builds_a_site_that_is_a_protocol_factory(ctx: ProtocolContext) -> None:
    site, _, _ = connect(ctx)
    verifyObject(IProtocolFactory, site)
    assert site.displayTracebacks is False
    assert site.timeOut == ctx.settings.idle_timeout


def test_a_request_is_served_through_the_site(ctx: ProtocolContext, service: QueueService) -> None:
    _, transport, protocol = connect(ctx)
    body = json.dumps({"messages": [{"body": "hi", "ttl": 60}]}).encode()
    protocol.dataReceived(
        request_head(
            "POST",
            "/v2/queues/jobs/messages",
            "Content-Type: application/json",
            f"Content-Length: {len(body)}",
        )
        + body
    )
    response = transport.value()
    assert response.startswith(b"HTTP/1.1 201 Created\r\n")
    assert response.endswith(b'{"resources":["/v2/queues/jobs/messages/1"]}')
    assert not transport.disconnecting


class CountingHost(StringTransport):
    """Counts how often the server's address is asked (a ``getsockname`` on a socket)."""

    asked = 0

    def getHost(self) -> Any:
        self.asked += 1
        return super().getHost()


def test_a_connection_asks_its_socket_for_the_servers_address_once(
    ctx: ProtocolContext,
) -> None:
    transport = CountingHost()
    _, _, protocol = connect(ctx, transport)
    for _ in range(3):
        protocol.dataReceived(request_head("GET", "/v2/queues/jobs/stats"))
    assert transport.value().count(b"HTTP/1.1 ") == 3
    assert transport.asked == 1  # twisted.web's Request asks on each request


class HalfClosable(StringTransport):
    """A TCP-like transport in memory: it can close its write side alone."""

    write_closed = False

    def loseWriteConnection(self) -> None:
        self.write_closed = True


def connect_half_closable(ctx: ProtocolContext) -> tuple[QGateSite, HalfClosable, Any]:
    transport = HalfClosable()
    site, _, protocol = connect(ctx, transport)
    return site, transport, protocol


def answer_of(response: bytes) -> tuple[bytes, dict[str, Any]]:
    head, _, body = response.partition(b"\r\n\r\n")
    return head, json.loads(body)


def test_a_declared_length_over_the_limit_is_answered_before_the_body_then_drained(
    ctx: ProtocolContext, service: QueueService
) -> None:
    """Zaqar's 400 at once (row 2: never 413), then RFC 9112 9.6: the write side closes, the
    body still sent is read and dropped, and the connection closes once it is all in (a
    client still sending reads the answer instead of a reset)."""
    _, transport, protocol = connect_half_closable(ctx)
    protocol.dataReceived(
        request_head(
            "POST",
            "/v2/queues/jobs/messages",
            "Content-Type: application/json",
            f"Content-Length: {LIMIT + 1}",
            "Expect: 100-continue",
        )
    )
    response = transport.value()
    head, document = answer_of(response)
    assert head.startswith(b"HTTP/1.1 400 Bad Request\r\n")
    assert b"\r\nConnection: close" in head
    assert b"100 Continue" not in response
    assert document == {
        "title": "Invalid API request",
        "description": "Message collection size is too large. Max size 262144",
    }
    assert transport.write_closed
    assert not transport.disconnecting  # still reading
    protocol.dataReceived(b"x" * LIMIT)
    assert not transport.disconnecting
    protocol.dataReceived(b"x")  # the last byte of the declared body
    assert transport.disconnecting
    assert transport.value() == response  # nothing more written
    assert fired(service.list_queues("p1")) == []


def test_a_chunked_body_is_refused_once_it_grows_over_the_limit(
    ctx: ProtocolContext, service: QueueService
) -> None:
    _, transport, protocol = connect_half_closable(ctx)
    protocol.dataReceived(
        request_head("POST", "/v2/queues/jobs/messages", "Transfer-Encoding: chunked")
    )
    chunk = b"y" * (64 * 1024)
    for _ in range(LIMIT // len(chunk)):
        protocol.dataReceived(b"%x\r\n%s\r\n" % (len(chunk), chunk))
    assert transport.value() == b""
    protocol.dataReceived(b"1\r\nz\r\n")
    assert transport.value().startswith(b"HTTP/1.1 400 ")
    assert transport.write_closed and not transport.disconnecting
    protocol.dataReceived(b"%x\r\n%s\r\n" % (len(chunk), chunk))  # dropped
    protocol.dataReceived(b"0\r\n\r\n")
    assert transport.disconnecting
    assert fired(service.list_queues("p1")) == []


@pytest.mark.parametrize(
    ("method", "path", "title", "description"),
    [
        (
            "PUT",
            "/v2/queues/jobs",
            "Invalid API request",
            "Queue metadata is too large. Max size: 65536",
        ),
        (
            "PATCH",
            "/v2/queues/jobs",
            "Invalid request body",
            "Queue metadata is too large. Max size: 65536",
        ),
        (
            "POST",
            "/v2/queues/jobs/claims",
            "Invalid request body",
            f"The request body may not be larger than {LIMIT} bytes.",
        ),
        (
            "POST",
            "/nowhere",
            "Invalid request body",
            f"The request body may not be larger than {LIMIT} bytes.",
        ),
    ],
)
def test_the_early_answer_is_the_size_check_of_the_route(
    ctx: ProtocolContext, method: str, path: str, title: str, description: str
) -> None:
    _, transport, protocol = connect(ctx)
    protocol.dataReceived(request_head(method, path, f"Content-Length: {LIMIT + 1}"))
    head, document = answer_of(transport.value())
    assert head.startswith(b"HTTP/1.1 400 ")
    assert document == {"title": title, "description": description}


def test_a_mounted_resource_gets_a_413(ctx: ProtocolContext) -> None:
    _, transport, protocol = connect(ctx)
    protocol.dataReceived(request_head("POST", "/stomp", f"Content-Length: {LIMIT + 1}"))
    head, document = answer_of(transport.value())
    assert head.startswith(b"HTTP/1.1 413 ")
    assert document["title"] == "Request entity too large"


def test_draining_stops_after_linger_bytes(ctx: ProtocolContext) -> None:
    site, transport, protocol = connect_half_closable(ctx)
    site.linger_bytes = 1000
    protocol.dataReceived(BIG_POST)
    protocol.dataReceived(b"x" * 1000)
    assert not transport.disconnecting
    protocol.dataReceived(b"x")
    assert transport.disconnecting


def test_draining_stops_after_linger_seconds(ctx: ProtocolContext, clock: Clock) -> None:
    site, transport, protocol = connect_half_closable(ctx)
    protocol.dataReceived(BIG_POST)
    clock.advance(site.linger_seconds - 0.5)
    protocol.dataReceived(b"x" * 100)
    assert not transport.disconnecting
    clock.advance(0.5)
    assert transport.disconnecting
    protocol.connectionLost(Failure(ConnectionDone()))
    assert not clock.getDelayedCalls()


def test_a_client_hanging_up_while_drained_leaves_no_timer(
    ctx: ProtocolContext, clock: Clock
) -> None:
    _, _, protocol = connect_half_closable(ctx)
    protocol.dataReceived(BIG_POST)
    protocol.connectionLost(Failure(ConnectionDone()))
    assert not [c for c in clock.getDelayedCalls() if c.active()]


def test_idle_connections_time_out(ctx: ProtocolContext, clock: Clock) -> None:
    assert ctx.reactor is clock
    _, transport, protocol = connect(ctx)
    clock.advance(ctx.settings.idle_timeout - 1)
    assert not transport.disconnecting
    clock.advance(1)
    assert transport.disconnecting


def test_a_long_poll_is_not_cut_by_the_idle_timeout(service: QueueService, clock: Clock) -> None:
    http = replace(HTTP_TEST_CONFIG, idle_timeout=5.0)
    ctx = make_ctx(service, reactor=clock, http=http)
    _, transport, protocol = connect(ctx)
    fired(service.create_queue("p1", "jobs"))
    protocol.dataReceived(request_head("GET", "/v2/queues/jobs/messages?wait=20"))
    clock.advance(19)
    assert not transport.disconnecting
    assert transport.value() == b""
    clock.advance(1)
    assert transport.value().startswith(b"HTTP/1.1 200 OK\r\n")


@pytest.mark.parametrize("enabled", [True, False])
def test_the_access_log_has_a_line_per_request_unless_turned_off(
    service: QueueService, tmp_path: Any, enabled: bool
) -> None:
    ctx = make_ctx(service, http=replace(HTTP_TEST_CONFIG, access_log=enabled))
    site, transport, protocol = connect(ctx)
    site.logPath = str(tmp_path / "access.log")
    site.doStart()
    protocol.dataReceived(request_head("GET", "/v2/ping"))
    site.doStop()
    assert transport.value().startswith(b"HTTP/1.1 204")
    lines = (tmp_path / "access.log").read_text().splitlines()
    assert len(lines) == (1 if enabled else 0)
    if enabled:
        assert '"GET /v2/ping HTTP/1.1" 204' in lines[0]
