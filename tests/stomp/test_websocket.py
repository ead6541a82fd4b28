"""STOMP over WebSocket: the resource mounted in a twisted.web Site, an autobahn client."""

from __future__ import annotations

from types import SimpleNamespace
from typing import Any

import pytest
import pytest_twisted
from autobahn.twisted.websocket import WebSocketClientFactory, WebSocketClientProtocol
from twisted.internet.defer import Deferred, DeferredQueue, maybeDeferred
from twisted.web.resource import Resource
from twisted.web.server import Site

from qgate.core.model import NewMessage
from qgate.core.service import QueueService
from qgate.gateway.config import parse
from qgate.gateway.registry import Protocols
from qgate.protocols.stomp.codec import V12, Frame, Parser, encode
from qgate.storage.memory import MemoryStorage
from tests.support.core import TEST_LIMITS
from tests.support.stomp import make_ctx

from .test_avro import V1, read_single_object

pytestmark = pytest.mark.integration


@pytest.fixture
def site(reactor: Any) -> Any:
    yield from _site(reactor, {"heartbeat_ms": 0})


@pytest.fixture
def impatient_site(reactor: Any) -> Any:
    """CONNECT must come within 0.2 s."""
    yield from _site(reactor, {"heartbeat_ms": 0, "connect_timeout": 0.2})


def _site(reactor: Any, stomp: dict[str, Any]) -> Any:
    service = QueueService(reactor, MemoryStorage(), MemoryStorage(), limits=TEST_LIMITS)
    ctx = make_ctx(service, reactor=reactor)
    settings = parse({"stomp": stomp}).protocols
    root = Resource()
    # What the HTTP protocol does with ctx.web_mounts: the registry builds the STOMP mount.
    for path, resource in Protocols(reactor, service, ctx.auth, settings).web_mounts.items():
        root.putChild(path, resource)
    port = reactor.listenTCP(0, Site(root), interface="127.0.0.1")
    yield SimpleNamespace(service=service, port=port.getHost().port, reactor=reactor)
    pytest_twisted.blockon(maybeDeferred(port.stopListening))


class _Client(WebSocketClientProtocol):  # type: ignore[misc]
    def onOpen(self) -> None:
        self.factory.opened.callback(self)

    def onMessage(self, payload: bytes, isBinary: bool) -> None:
        self.factory.received.put((payload, isBinary))

    def onCloseFrame(self, code: int, reasonRaw: bytes) -> Any:
        self.factory.close_frames.append(code)  # a Close frame came (not a dropped TCP)
        return super().onCloseFrame(code, reasonRaw)

    def onClose(self, wasClean: bool, code: Any, reason: Any) -> None:
        if not self.factory.opened.called:
            self.factory.opened.errback(ConnectionError(f"WebSocket not opened: {reason}"))
        if not self.factory.closed.called:
            self.factory.closed.callback(code)


class WSStomp:
    """A STOMP client over an autobahn WebSocket connection."""

    def __init__(self, proto: _Client, factory: Any, binary: bool) -> None:
        self.proto = proto
        self.factory = factory
        self.binary = binary
        self.parser = Parser(version=V12)
        self.frames: list[Frame] = []
        self.kinds: list[bool] = []

    @property
    def subprotocol(self) -> str | None:
        return self.proto.websocket_protocol_in_use  # type: ignore[no-any-return]

    def send(self, command: str, headers: Any = (), body: bytes = b"") -> None:
        self.proto.sendMessage(encode(command, headers, body, V12), isBinary=self.binary)

    async def next(self) -> Frame:
        while not self.frames:
            payload, is_binary = await self.factory.received.get()
            self.kinds.append(is_binary)
            self.parser.feed(payload)
            self.frames.extend(self.parser.frames())
        return self.frames.pop(0)

    def close(self) -> Deferred[Any]:
        self.proto.sendClose(1000)
        return self.factory.closed  # type: ignore[no-any-return]


async def ws_connect(site: Any, protocols: list[str], binary: bool = False) -> WSStomp:
    url = f"ws://127.0.0.1:{site.port}/stomp"
    factory = WebSocketClientFactory(url, protocols=protocols, reactor=site.reactor)
    factory.protocol = _Client
    factory.opened = Deferred()
    factory.closed = Deferred()
    factory.received = DeferredQueue()
    factory.close_frames = []
    site.reactor.connectTCP("127.0.0.1", site.port, factory)
    proto = await factory.opened
    return WSStomp(proto, factory, binary)


@pytest_twisted.ensureDeferred
async def test_websocket_text_frames_round_trip(site):
    c = await ws_connect(site, ["v10.stomp", "v12.stomp", "v11.stomp"])
    assert c.subprotocol == "v12.stomp"
    c.send("CONNECT", {"accept-version": "1.1,1.2", "host": "/"})
    connected = await c.next()
    assert connected.command == "CONNECTED" and connected.headers["version"] == "1.2"
    c.send("SUBSCRIBE", {"destination": "/queue/ws", "id": "s", "ack": "client", "receipt": "r"})
    assert (await c.next()).command == "RECEIPT"
    c.send("SEND", {"destination": "/queue/ws", "x-ünï": "✓"}, "héllo".encode())
    m = await c.next()
    assert m.body == "héllo".encode() and m.headers["x-ünï"] == "✓"
    c.send("ACK", {"id": m.headers["ack"], "receipt": "a"})
    assert (await c.next()).headers["receipt-id"] == "a"
    assert not any(c.kinds), "replies to text messages are text messages"
    assert (await site.service.queue_stats("default", "ws")).total == 0
    await c.close()


@pytest_twisted.ensureDeferred
async def test_websocket_binary_frames_are_answered_in_binary(site):
    c = await ws_connect(site, ["v12.stomp"], binary=True)
    c.send("CONNECT", {"accept-version": "1.2", "host": "/"})
    await c.next()
    body = bytes(range(256)) + b"\x00tail"
    c.send("SEND", {"destination": "/queue/bin", "content-length": str(len(body))}, body)
    c.send("SUBSCRIBE", {"destination": "/queue/bin", "id": "s"})
    m = await c.next()
    assert m.body == body
    assert all(c.kinds)
    await c.close()


@pytest_twisted.ensureDeferred
async def test_websocket_subprotocol_caps_the_stomp_version(site):
    c = await ws_connect(site, ["v11.stomp"])
    assert c.subprotocol == "v11.stomp"
    c.send("CONNECT", {"accept-version": "1.1,1.2", "host": "/"})
    assert (await c.next()).headers["version"] == "1.1"
    await c.close()


@pytest_twisted.ensureDeferred
async def test_a_websocket_that_never_sends_connect_is_closed_at_the_deadline(impatient_site):
    c = await ws_connect(impatient_site, ["v12.stomp"])
    error = await c.next()
    assert error.command == "ERROR"
    assert error.headers["message"] == "no CONNECT frame within 0.2 seconds"
    assert await c.factory.closed.addTimeout(5, impatient_site.reactor) == 1000


@pytest_twisted.ensureDeferred
async def test_websocket_error_closes_the_connection(site):
    c = await ws_connect(site, ["v12.stomp"])
    c.send("CONNECT", {"accept-version": "1.2", "host": "/"})
    await c.next()
    c.send("BOGUS", {})
    error = await c.next()
    assert error.command == "ERROR"
    assert await c.factory.closed == 1000


@pytest_twisted.ensureDeferred
async def test_invalid_utf8_in_a_text_message_is_answered_with_a_close_frame_1007(site):
    """RFC 6455 section 7.1.7 (and 8.1): invalid UTF-8 in a text message fails the
    connection with status 1007 in a Close frame, not by dropping TCP; the frame is not
    handled and what the session had delivered goes back."""
    await site.service.publish("default", "jobs", [NewMessage(b"job")])
    c = await ws_connect(site, ["v12.stomp"])
    c.send("CONNECT", {"accept-version": "1.2", "host": "/"})
    await c.next()
    c.send("SUBSCRIBE", {"destination": "/queue/jobs", "id": "s", "ack": "client"})
    assert (await c.next()).body == b"job"
    c.proto.sendMessage(b"SEND\ndestination:/queue/jobs\n\n\xff\xfe\x00", isBinary=False)
    assert await c.factory.closed == 1007
    assert c.factory.close_frames == [1007]
    assert c.proto.wasClean
    stats = await site.service.queue_stats("default", "jobs")
    assert (stats.total, stats.available) == (1, 1)


@pytest_twisted.ensureDeferred
async def test_a_message_past_the_frame_limit_is_answered_with_a_close_frame_1009(site):
    c = await ws_connect(site, ["v12.stomp"], binary=True)
    c.proto.sendMessage(b"x" * (2 * 1024 * 1024), isBinary=True)
    assert await c.factory.closed == 1009
    assert c.factory.close_frames == [1009]


@pytest_twisted.ensureDeferred
async def test_websocket_subscriber_chooses_single_object_encoding(site):
    await site.service.create_queue("default", "users")
    await site.service.set_schema("default", "users", V1)
    c = await ws_connect(site, ["v12.stomp"], binary=True)
    c.send("CONNECT", {"accept-version": "1.2", "host": "/"})
    await c.next()
    c.send("SUBSCRIBE", {"destination": "/queue/users", "id": "s", "accept": "avro/binary"})
    json_body = b'{"id": 5, "name": "ws"}'
    await site.service.publish(
        "default", "users", [NewMessage(json_body, content_type="application/json")]
    )
    m = await c.next()
    assert m.headers["content-type"] == "avro/binary"
    assert read_single_object(m.body, V1) == {"id": 5, "name": "ws"}
    await c.close()


@pytest_twisted.ensureDeferred
async def test_a_revoked_key_closes_its_websocket_session_within_a_second(reactor):
    from qgate.core.auth import APIKeys, TenantAdmin
    from qgate.core.guard import TenantGuard
    from qgate.core.quotas import TenantQuotas
    from qgate.core.tenant_watch import TenantWatch

    store = MemoryStorage()
    admin = TenantAdmin(store, reactor)
    await admin.create_tenant("acme")
    token = await admin.create_key("acme")
    auth = APIKeys(store, reactor)
    quotas = TenantQuotas()
    service = QueueService(reactor, MemoryStorage(), MemoryStorage(), limits=TEST_LIMITS)
    guard = TenantGuard(service, reactor, quotas, store)
    watch = TenantWatch(reactor, store, quotas, auth, guard)
    watch.start()
    settings = parse({"stomp": {"heartbeat_ms": 0}}).protocols
    root = Resource()
    for path, resource in Protocols(reactor, guard, auth, settings).web_mounts.items():
        root.putChild(path, resource)
    port = reactor.listenTCP(0, Site(root), interface="127.0.0.1")
    try:
        site = SimpleNamespace(port=port.getHost().port, reactor=reactor)
        c = await ws_connect(site, ["v12.stomp"])
        c.send("CONNECT", {"accept-version": "1.2", "host": "/", "passcode": token})
        assert (await c.next()).command == "CONNECTED"
        await admin.revoke_key(token)
        # One watch round is 0.5 s (tests/stomp/test_quotas.py shows it on a Clock); the
        # margin here is for a loaded machine, not part of the promise.
        error = await Deferred.fromCoroutine(c.next()).addTimeout(2.0, reactor)
        assert error.command == "ERROR" and error.headers["message"] == "Authentication failed"
        await c.factory.closed.addTimeout(5.0, reactor)
    finally:
        watch.stop()
        await maybeDeferred(port.stopListening)
