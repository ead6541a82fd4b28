"""Listener-wide connection caps (``gateway.connections``): the total cap within the
descriptor limit, the per-address cap, refusals logged once per interval, and held
connections whose peer has left."""

from __future__ import annotations

import base64
import json
import os
import select
import socket
from typing import Any

import pytest
import pytest_twisted
from twisted.internet import reactor as global_reactor
from twisted.internet import task, threads
from twisted.internet.address import IPv4Address, UNIXAddress
from twisted.internet.defer import Deferred
from twisted.internet.protocol import Factory, Protocol
from twisted.internet.task import Clock
from twisted.internet.testing import StringTransport
from twisted.logger import capturedLogs

from qgate.gateway.app import Gateway
from qgate.gateway.config import ConfigError, ListenerConfig, parse
from qgate.gateway.connections import (
    ConnectionBudget,
    ConnectionsConfig,
    LimitedFactory,
    fd_budget,
    peer_gone,
    raise_fd_limit,
)
from qgate.gateway.registry import listener_factory
from qgate.protocols.stomp.codec import Parser
from tests.support.core import memory_service
from tests.support.deferreds import until
from tests.support.http import make_ctx as http_ctx
from tests.support.stomp import make_ctx as stomp_ctx


class Recording(Protocol):
    lost = False

    def connectionLost(self, reason: Any = None) -> None:
        self.lost = True


def _factory(budget: ConnectionBudget, wrapped: Any = None, tls: bool = False) -> LimitedFactory:
    return LimitedFactory(wrapped or Factory.forProtocol(Recording), budget, tls=tls)


def _connect(factory: LimitedFactory, host: str = "10.0.0.1") -> tuple[Any, StringTransport]:
    proto = factory.buildProtocol(IPv4Address("TCP", host, 40000))
    transport = StringTransport()
    proto.makeConnection(transport)
    return proto, transport


def _budget(clock: Clock, total: int = 100, **config: Any) -> ConnectionBudget:
    return ConnectionBudget(clock, ConnectionsConfig(**config), total)


def _spoken(factory: LimitedFactory, host: str = "10.0.0.1") -> tuple[Any, StringTransport]:
    """A connection that has sent something (never closed to make room)."""
    proto, transport = _connect(factory, host)
    proto.dataReceived(b"x")
    return proto, transport


def test_connections_past_the_total_cap_are_closed_at_once_until_one_ends(clock: Clock) -> None:
    budget = _budget(clock, total=2, max_per_ip=0)
    factory = _factory(budget)
    first, _ = _spoken(factory, "10.0.0.1")
    _spoken(factory, "10.0.0.2")
    _, refused = _connect(factory, "10.0.0.3")
    assert refused.disconnecting and budget.open == 2
    first.connectionLost(None)
    assert budget.open == 1
    _, admitted = _connect(factory, "10.0.0.3")
    assert not admitted.disconnecting


def test_one_address_gets_at_most_max_per_ip_connections(clock: Clock) -> None:
    budget = _budget(clock, max_per_ip=2)
    factory = _factory(budget)
    a1, t1 = _connect(factory, "10.0.0.1")
    _, t2 = _connect(factory, "10.0.0.1")
    _, t3 = _connect(factory, "10.0.0.1")
    _, other = _connect(factory, "10.0.0.2")
    assert [t.disconnecting for t in (t1, t2, t3, other)] == [False, False, True, False]
    a1.connectionLost(None)
    _, again = _connect(factory, "10.0.0.1")
    assert not again.disconnecting
    assert budget.by_ip == {"10.0.0.1": 2, "10.0.0.2": 1}


def test_unix_socket_connections_count_only_toward_the_total(clock: Clock) -> None:
    budget = _budget(clock, max_per_ip=1)
    factory = _factory(budget)
    for _ in range(3):
        proto = factory.buildProtocol(UNIXAddress(None))
        proto.makeConnection(StringTransport())
    assert budget.open == 3 and budget.by_ip == {}


def test_refusals_are_logged_once_per_interval_with_their_count(clock: Clock) -> None:
    budget = _budget(clock, total=1, log_interval=60.0)
    factory = _factory(budget)
    _spoken(factory)
    with capturedLogs() as events:
        for _ in range(50):
            _connect(factory)
        clock.advance(61)
        _connect(factory)
    lines = [e for e in events if e.get("what") == "Refused"]
    assert [e["count"] for e in lines] == [1, 50]


def test_at_the_total_cap_the_oldest_silent_connection_makes_room(clock: Clock) -> None:
    """Mute connections (never a CONNECT, never a request line) from many addresses cannot
    lock others out: at the cap the oldest that has sent nothing is aborted instead."""
    budget = _budget(clock, total=3, max_per_ip=0)
    factory = _factory(budget)
    talker, talking = _spoken(factory, "10.0.0.1")
    _, mute1 = _connect(factory, "10.0.0.2")
    _, mute2 = _connect(factory, "10.0.0.3")
    with capturedLogs() as events:
        _, joined = _connect(factory, "10.0.0.4")
    assert not joined.disconnecting and mute1.disconnecting and not mute2.disconnecting
    assert not talking.disconnecting and budget.evicted == 1
    assert [e["what"] for e in events if "count" in e] == ["Closed"]
    # Until the aborted one is gone it is still counted, and it makes room only once.
    assert budget.open == 4 and budget.evicting == 1
    _, next_one = _connect(factory, "10.0.0.5")
    assert mute2.disconnecting and not next_one.disconnecting
    # Once every open connection has spoken, a new one is refused as before.
    for proto in list(budget.silent):
        proto.dataReceived(b"x")
    _, refused = _connect(factory, "10.0.0.6")
    assert refused.disconnecting and budget.evicted == 2


def test_an_http_connection_over_the_cap_gets_a_503_json_and_a_stomp_one_an_error_frame(
    clock: Clock,
) -> None:
    service = memory_service(clock)
    site = listener_factory("http")(http_ctx(service, reactor=clock), ListenerConfig("http", "x"))
    stomp = listener_factory("stomp")(stomp_ctx(service), ListenerConfig("stomp", "x"))
    budget = _budget(clock, total=0 + 1)
    budget.open = 1  # full
    _, http_refused = _connect(_factory(budget, site))
    head, _, body = http_refused.value().partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 503 ") and b"Retry-After: 5" in head
    assert "most connections" in json.loads(body)["description"]
    assert http_refused.disconnecting
    _, stomp_refused = _connect(_factory(budget, stomp))
    parser = Parser()
    parser.feed(stomp_refused.value())
    frame = parser.next_frame()
    assert frame is not None and frame.command == "ERROR"
    assert "most connections" in frame.body.decode()
    _, tls_refused = _connect(_factory(budget, site, tls=True))
    assert tls_refused.value() == b"" and tls_refused.disconnecting  # no cleartext in TLS


def test_a_held_connection_whose_peer_left_is_aborted(clock: Clock) -> None:
    gone = {"now": False}
    budget = ConnectionBudget(
        clock, ConnectionsConfig(held_check=2.0), 10, probe=lambda transport: gone["now"]
    )
    proto, transport = _connect(_factory(budget))
    proto.wrappedProtocol.transport.pauseProducing()  # the protocol holds its input
    clock.advance(2.0)
    assert not transport.disconnecting
    gone["now"] = True
    clock.advance(2.0)
    assert transport.disconnecting
    proto.connectionLost(None)
    assert budget.open == 0 and not clock.getDelayedCalls()


def test_a_connection_that_holds_its_input_frame_by_frame_is_still_watched(
    clock: Clock,
) -> None:
    gone = {"now": False}
    budget = ConnectionBudget(
        clock, ConnectionsConfig(held_check=2.0), 10, probe=lambda transport: gone["now"]
    )
    proto, transport = _connect(_factory(budget))
    for _ in range(20):  # one SUBSCRIBE at a time: held, released 0.25 s later
        proto.pauseProducing()
        clock.advance(0.25)
        proto.resumeProducing()
    assert not transport.disconnecting
    gone["now"] = True
    for _ in range(20):
        proto.pauseProducing()
        clock.advance(0.25)
        if transport.disconnecting:
            break
        proto.resumeProducing()
    assert transport.disconnecting


def test_a_connection_never_held_is_never_probed(clock: Clock) -> None:
    budget = ConnectionBudget(clock, ConnectionsConfig(), 10, probe=lambda transport: True)
    _, transport = _connect(_factory(budget))
    clock.advance(10)
    assert not clock.getDelayedCalls() and not transport.disconnecting


def test_the_total_cap_stays_below_the_descriptor_limit() -> None:
    config = ConnectionsConfig(max_connections=10_000, reserved_fds=256)
    assert fd_budget(config, 1024) == 768
    assert fd_budget(config, 1 << 20) == 10_000
    soft = raise_fd_limit()
    import resource

    assert resource.getrlimit(resource.RLIMIT_NOFILE)[0] == soft


def test_connections_config_is_checked_and_parsed_from_its_table() -> None:
    config = parse({"connections": {"max_per_ip": 3}})
    assert config.connections.max_per_ip == 3
    with pytest.raises(ConfigError, match="connections.max_connections: must be at least 1"):
        parse({"connections": {"max_connections": 0}})
    with pytest.raises(ConfigError, match="connections.per_ip: unknown key"):
        parse({"connections": {"per_ip": 3}})


def _tcp_pair() -> tuple[socket.socket, socket.socket]:
    listener = socket.create_server(("127.0.0.1", 0))
    client = socket.create_connection(listener.getsockname())
    server, _ = listener.accept()
    listener.close()
    return client, server


class _Handle:
    def __init__(self, sock: socket.socket) -> None:
        self.sock = sock

    def getHandle(self) -> socket.socket:
        return self.sock


def test_peer_gone_sees_a_hang_up_behind_unread_bytes() -> None:
    client, server = _tcp_pair()
    try:
        client.sendall(b"SUBSCRIBE\n\n\x00" * 100)
        assert not peer_gone(_Handle(server))
        client.close()
        # The FIN arrives behind the unread frames; poll sees it without reading them.
        poller = select.poll()
        poller.register(server, select.POLLRDHUP)
        assert poller.poll(2000)
        assert peer_gone(_Handle(server))
        assert len(server.recv(65536, socket.MSG_PEEK)) > 0
    finally:
        server.close()


class _Holding(Protocol):
    """Reads one chunk, then holds its input for ever (as STOMP flow control does)."""

    def __init__(self, lost: Deferred[None]) -> None:
        self.lost = lost

    def dataReceived(self, data: bytes) -> None:
        self.transport.pauseProducing()  # type: ignore[union-attr]

    def connectionLost(self, reason: Any = None) -> None:
        self.lost.callback(None)


@pytest_twisted.ensureDeferred
async def test_a_real_peer_leaving_a_held_connection_is_noticed() -> None:
    lost: Deferred[None] = Deferred()
    budget = ConnectionBudget(global_reactor, ConnectionsConfig(held_check=0.05), 10)
    factory = LimitedFactory(Factory.forProtocol(lambda: _Holding(lost)), budget, tls=False)
    port = global_reactor.listenTCP(0, factory, interface="127.0.0.1")  # type: ignore[attr-defined]
    try:
        client = socket.create_connection(("127.0.0.1", port.getHost().port))
        client.sendall(b"x")
        await _later(0.1)
        client.sendall(b"y" * 10_000)  # left unread behind the held input
        client.close()
        await lost.addTimeout(5, global_reactor)  # without the watch: never
        assert budget.open == 0
    finally:
        await port.stopListening()


def _later(seconds: float) -> Deferred[None]:
    return task.deferLater(global_reactor, seconds, lambda: None)


def _read_all(port: int, send: bytes = b"") -> bytes:
    with socket.create_connection(("127.0.0.1", port), timeout=10) as s:
        if send:
            s.sendall(send)
        out = b""
        while chunk := s.recv(4096):
            out += chunk
        return out


def _websocket_stomp(port: int) -> bytes:
    """A WebSocket upgrade to /stomp and a CONNECT, by hand: the first STOMP reply."""
    key = base64.b64encode(os.urandom(16)).decode()
    head = (
        f"GET /stomp HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
        f"Sec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\n"
        f"Sec-WebSocket-Protocol: v12.stomp\r\n\r\n"
    ).encode()
    with socket.create_connection(("127.0.0.1", port), timeout=10) as s:
        s.sendall(head)
        answer = b""
        while b"\r\n\r\n" not in answer:
            answer += s.recv(4096)
        assert answer.startswith(b"HTTP/1.1 101 "), answer
        payload = b"CONNECT\naccept-version:1.2\nhost:/\n\n\x00"
        mask = os.urandom(4)
        masked = bytes(b ^ mask[i % 4] for i, b in enumerate(payload))
        s.sendall(bytes([0x81, 0x80 | len(payload)]) + mask + masked)
        frame = s.recv(4096)
        return frame[2:]


@pytest_twisted.ensureDeferred
async def test_a_gateway_refuses_a_third_connection_from_one_address(reactor) -> None:
    config = parse(
        {
            "storage": {"url": "memory://"},
            "connections": {"max_per_ip": 2},
            "listeners": [
                {"protocol": "http", "endpoint": "tcp:0:interface=127.0.0.1"},
                {"protocol": "stomp", "endpoint": "tcp:0:interface=127.0.0.1"},
            ],
        }
    )
    gateway = Gateway(reactor, config)
    await gateway.listen()
    http_port, stomp_port = (p.getHost().port for p in gateway.ports)
    held = [socket.create_connection(("127.0.0.1", http_port)) for _ in range(2)]
    try:
        await until(lambda: gateway.budget.open == 2, timeout=5)
        refused = await threads.deferToThread(_read_all, stomp_port)
        assert refused.startswith(b"ERROR\n") and b"max_per_ip 2" in refused
        refused = await threads.deferToThread(_read_all, http_port)
        assert refused.startswith(b"HTTP/1.1 503 ")
        held.pop().close()
        await until(lambda: gateway.budget.open == 1, timeout=5)
        # The wrapper stays out of the way of a WebSocket upgrade on the HTTP listener.
        reply = await threads.deferToThread(_websocket_stomp, http_port)
        assert reply.startswith(b"CONNECTED\n"), reply
    finally:
        for s in held:
            s.close()
        await gateway.stopService()
