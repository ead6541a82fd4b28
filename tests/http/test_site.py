"""The listener's Site, driven byte by byte over StringTransport: bodies too large are
refused before they are read, idle connections time out, normal requests are served."""

from __future__ import annotations

import json
from dataclasses import replace

import pytest
from twisted.internet.address import IPv4Address
from twisted.internet.interfaces import IProtocolFactory
from twisted.internet.task import Clock
from twisted.internet.testing import StringTransport
from zope.interface.verify import verifyObject

from qgate.core.service import QueueService
from qgate.gateway.config import ListenerConfig
from qgate.gateway.registry import listener_factory
from qgate.protocols.context import ProtocolContext
from qgate.protocols.http import QGateSite
from tests.support.deferreds import fired
from tests.support.http import CLIENT, HTTP_TEST_CONFIG, make_ctx

LIMIT = 512 * 1024  # tests.http.conftest.HTTP_TEST_CONFIG.max_request_body


def connect(ctx: ProtocolContext) -> tuple[QGateSite, StringTransport, object]:
    site = listener_factory("http")(ctx, ListenerConfig("http", "tcp:0"))
    assert isinstance(site, QGateSite)
    protocol = site.buildProtocol(IPv4Address("TCP", "127.0.0.1", 40000))
    assert protocol is not None
    transport = StringTransport()
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


def test_the_registry_builds_a_site_that_is_a_protocol_factory(ctx: ProtocolContext) -> None:
    site, _, _ = connect(ctx)
    verifyObject(IProtocolFactory, site)
    assert site.displayTracebacks is False
    assert site.timeOut == ctx.settings.idle_timeout


def test_a_request_is_served_through_the_site(ctx: ProtocolContext, service: QueueService) -> None:
    _, transport, protocol = connect(ctx)
    body = json.dumps({"messages": [{"body": "hi", "ttl": 60}]}).encode()
    protocol.dataReceived(  # type: ignore[attr-defined]
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


def test_a_declared_length_over_the_limit_is_refused_before_the_body(
    ctx: ProtocolContext, service: QueueService
) -> None:
    _, transport, protocol = connect(ctx)
    protocol.dataReceived(  # type: ignore[attr-defined]
        request_head(
            "POST",
            "/v2/queues/jobs/messages",
            "Content-Type: application/json",
            f"Content-Length: {LIMIT + 1}",
            "Expect: 100-continue",
        )
    )
    response = transport.value()
    assert response.startswith(b"HTTP/1.1 413 Request Entity Too Large\r\n")
    assert b"100 Continue" not in response
    head, _, body = response.partition(b"\r\n\r\n")
    assert json.loads(body)["title"] == "Request entity too large"
    assert transport.disconnecting
    # Whatever still arrives is dropped: nothing is processed or stored.
    protocol.dataReceived(b"x" * (LIMIT + 1))  # type: ignore[attr-defined]
    assert transport.value() == response
    assert fired(service.list_queues("p1")) == []


def test_a_chunked_body_is_refused_once_it_grows_over_the_limit(
    ctx: ProtocolContext, service: QueueService
) -> None:
    _, transport, protocol = connect(ctx)
    protocol.dataReceived(  # type: ignore[attr-defined]
        request_head("POST", "/v2/queues/jobs/messages", "Transfer-Encoding: chunked")
    )
    chunk = b"y" * (64 * 1024)
    for _ in range(LIMIT // len(chunk)):
        protocol.dataReceived(b"%x\r\n%s\r\n" % (len(chunk), chunk))  # type: ignore[attr-defined]
    assert transport.value() == b""
    protocol.dataReceived(b"1\r\nz\r\n")  # type: ignore[attr-defined]
    assert transport.value().startswith(b"HTTP/1.1 413 ")
    assert transport.disconnecting
    protocol.dataReceived(b"0\r\n\r\n")  # type: ignore[attr-defined]
    assert fired(service.list_queues("p1")) == []


@pytest.mark.parametrize("sent", [b"", b"GET /v2/queues HTTP/1.1\r\nHost: x\r\n"])
def test_idle_and_slow_connections_time_out(
    ctx: ProtocolContext, clock: Clock, sent: bytes
) -> None:
    assert ctx.reactor is clock
    _, transport, protocol = connect(ctx)
    protocol.dataReceived(sent)  # type: ignore[attr-defined]
    clock.advance(ctx.settings.idle_timeout - 1)
    assert not transport.disconnecting
    clock.advance(1)
    assert transport.disconnecting


def test_a_long_poll_is_not_cut_by_the_idle_timeout(service: QueueService, clock: Clock) -> None:
    http = replace(HTTP_TEST_CONFIG, idle_timeout=5.0)
    ctx = make_ctx(service, reactor=clock, http=http)
    _, transport, protocol = connect(ctx)
    fired(service.create_queue("p1", "jobs"))
    protocol.dataReceived(request_head("GET", "/v2/queues/jobs/messages?wait=20"))  # type: ignore[attr-defined]
    clock.advance(19)
    assert not transport.disconnecting
    assert transport.value() == b""
    clock.advance(1)
    assert transport.value().startswith(b"HTTP/1.1 200 OK\r\n")
