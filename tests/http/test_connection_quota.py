"""HTTP connections count toward a tenant's ``max_connections``, as STOMP sessions do:
against the tenant of a connection's first authenticated request, until it closes; over
the quota the request is a 403 naming ``max_connections`` and the connection closes."""

from __future__ import annotations

import json
from typing import Any

from twisted.internet.address import IPv4Address
from twisted.internet.error import ConnectionDone
from twisted.internet.testing import StringTransport
from twisted.python.failure import Failure

from qgate.core.guard import TenantGuard
from qgate.core.quotas import Quotas, TenantQuotas
from qgate.gateway.config import ListenerConfig
from qgate.gateway.registry import listener_factory
from tests.support.core import make_clock, memory_service
from tests.support.http import CLIENT, make_ctx


class Connection:
    """One HTTP connection to the listener's site, over StringTransport."""

    def __init__(self, site: Any) -> None:
        self.protocol = site.buildProtocol(IPv4Address("TCP", "127.0.0.1", 40000))
        self.transport = StringTransport()
        self.protocol.makeConnection(self.transport)

    def get(self, path: str, tenant: str = "p1") -> tuple[int, dict[str, Any], bytes]:
        self.transport.clear()
        head = [
            f"GET {path} HTTP/1.1",
            "Host: qgate.test",
            f"Client-ID: {CLIENT}",
            f"X-Project-ID: {tenant}",
        ]
        self.protocol.dataReceived(("\r\n".join(head) + "\r\n\r\n").encode())
        raw = self.transport.value()
        head_bytes, _, body = raw.partition(b"\r\n\r\n")
        status_line, *lines = head_bytes.decode().split("\r\n")
        headers = {k.lower(): v.strip() for k, v in (line.split(":", 1) for line in lines)}
        return int(status_line.split()[1]), headers, body

    def close(self) -> None:
        self.protocol.connectionLost(Failure(ConnectionDone()))


def site_with(**quotas: Any) -> tuple[Any, TenantGuard]:
    clock = make_clock()
    guard = TenantGuard(memory_service(clock), clock, TenantQuotas(Quotas(**quotas)))  # type: ignore[arg-type]
    site = listener_factory("http")(make_ctx(guard, reactor=clock), ListenerConfig("http", "tcp:0"))
    return site, guard


def test_a_connection_over_max_connections_is_a_403_naming_it_and_closed() -> None:
    site, guard = site_with(max_connections=2)
    one, two, three = Connection(site), Connection(site), Connection(site)
    assert one.get("/v2/queues")[0] == 200
    assert two.get("/v2/queues")[0] == 200
    assert guard.connections("p1") == 2
    status, headers, body = three.get("/v2/queues")
    assert status == 403
    document = json.loads(body)
    assert document["title"] == "Quota exceeded"
    assert "max_connections" in document["description"]
    assert headers["connection"] == "close" and three.transport.disconnecting
    assert guard.connections("p1") == 2
    assert one.get("/v2/queues")[0] == 200  # counted once, however many requests
    assert guard.connections("p1") == 2


def test_a_closed_connection_gives_its_slot_back() -> None:
    site, guard = site_with(max_connections=1)
    one = Connection(site)
    assert one.get("/v2/queues")[0] == 200
    assert Connection(site).get("/v2/queues")[0] == 403
    one.close()
    assert guard.connections("p1") == 0
    assert Connection(site).get("/v2/queues")[0] == 200


def test_a_connection_without_an_authenticated_request_counts_for_no_tenant() -> None:
    site, guard = site_with(max_connections=1)
    idle = Connection(site)
    assert idle.get("/v2/ping")[0] == 204
    assert guard.connections("p1") == 0
    assert Connection(site).get("/v2/queues")[0] == 200


def test_a_kept_alive_connection_counts_for_each_tenant_it_carries() -> None:
    site, guard = site_with(max_connections=1)
    shared = Connection(site)
    assert shared.get("/v2/queues", tenant="a")[0] == 200
    assert shared.get("/v2/queues", tenant="b")[0] == 200
    assert guard.connections("a") == guard.connections("b") == 1
    assert Connection(site).get("/v2/queues", tenant="b")[0] == 403
    shared.close()
    assert guard.connections("a") == guard.connections("b") == 0


def test_http_connections_and_stomp_sessions_share_the_quota() -> None:
    site, guard = site_with(max_connections=2)
    session = guard.open_session("p1")  # what a STOMP CONNECT opens
    assert Connection(site).get("/v2/queues")[0] == 200
    assert Connection(site).get("/v2/queues")[0] == 403
    session.close()
    assert Connection(site).get("/v2/queues")[0] == 200
