"""STOMP over WebSocket: an autobahn ``WebSocketResource`` mounted in the HTTP site.

Same parser, link and session as STOMP over TCP; WebSocket messages are a byte stream of
frames (one or more per message, as stomp.js sends them). The subprotocol picked is the
highest of ``v12.stomp``, ``v11.stomp``, ``v10.stomp`` that the client offers, and it caps
the STOMP versions CONNECT may negotiate. Replies go out in the message type (text or
binary) the client last used; a frame that is not valid UTF-8 always goes out as binary.
"""

from __future__ import annotations

from typing import Any

from autobahn.twisted.resource import WebSocketResource
from autobahn.twisted.websocket import WebSocketServerFactory, WebSocketServerProtocol
from autobahn.websocket.types import ConnectionRequest
from twisted.internet.interfaces import IPushProducer
from twisted.web.resource import IResource
from zope.interface import implementer

from qgate.protocols.context import ProtocolContext
from qgate.protocols.stomp.codec import V10, V11, V12, VERSIONS
from qgate.protocols.stomp.protocol import StompLink, stomp_session_factory
from qgate.protocols.stomp.settings import StompSettings

#: WebSocket subprotocol -> the STOMP versions it allows (STOMP over WebSocket convention).
SUBPROTOCOLS: dict[str, tuple[str, ...]] = {
    "v12.stomp": (V10, V11, V12),
    "v11.stomp": (V10, V11),
    "v10.stomp": (V10,),
}


class _MessageWire:
    """A ``Wire`` that writes each chunk as one WebSocket message."""

    def __init__(self, proto: StompWebSocketProtocol) -> None:
        self.proto = proto

    def write(self, data: bytes) -> None:
        binary = self.proto.binary
        if not binary:
            try:
                data.decode("utf-8")
            except UnicodeDecodeError:
                binary = True
        self.proto.sendMessage(data, isBinary=binary)

    def loseConnection(self) -> None:
        self.proto.sendClose(1000)

    def getPeer(self) -> Any:
        transport = self.proto.transport
        return None if transport is None else transport.getPeer()

    def abortConnection(self) -> None:
        self.proto.dropConnection(abort=True)

    def pauseProducing(self) -> None:
        transport = self.proto.transport
        if transport is not None:
            transport.pauseProducing()  # type: ignore[attr-defined]

    def resumeProducing(self) -> None:
        transport = self.proto.transport
        if transport is not None:
            transport.resumeProducing()  # type: ignore[attr-defined]


@implementer(IPushProducer)
class StompWebSocketProtocol(WebSocketServerProtocol):  # type: ignore[misc]
    """One STOMP session over one WebSocket connection."""

    link: StompLink | None = None
    binary = False
    #: (not ``versions``: autobahn uses that name for WebSocket protocol versions)
    stomp_versions: tuple[str, ...] = VERSIONS

    def onConnect(self, request: ConnectionRequest) -> str | None:
        for name in SUBPROTOCOLS:
            if name in request.protocols:
                self.stomp_versions = SUBPROTOCOLS[name]
                return name
        return None

    def onOpen(self) -> None:
        ctx = self.factory.ctx
        sessions = stomp_session_factory(ctx, self.stomp_versions)
        self.link = StompLink(ctx, _MessageWire(self), sessions)
        # Learn when the peer stops reading; the HTTP channel that served the upgrade
        # request may still be registered as the transport's producer.
        transport: Any = self.transport
        try:
            transport.unregisterProducer()
        except (RuntimeError, AttributeError):
            pass
        try:
            transport.registerProducer(self, True)
        except (RuntimeError, AttributeError):
            pass

    def onMessage(self, payload: bytes, isBinary: bool) -> None:
        if self.link is None:
            return
        self.binary = isBinary
        self.link.data_received(payload)

    def onClose(self, wasClean: bool, code: int | None, reason: str | None) -> None:
        if self.link is not None:
            self.link.connection_lost()

    # IPushProducer for the output direction.
    def pauseProducing(self) -> None:
        if self.link is not None:
            self.link.pause_output()

    def resumeProducing(self) -> None:
        if self.link is not None:
            self.link.resume_output()

    def stopProducing(self) -> None:
        pass


def websocket_resource(ctx: ProtocolContext[StompSettings]) -> IResource:
    """The resource the HTTP protocol mounts at ``/stomp``."""
    factory = WebSocketServerFactory(reactor=ctx.reactor)
    factory.protocol = StompWebSocketProtocol
    factory.ctx = ctx  # type: ignore[attr-defined]
    max_frame = ctx.settings.max_frame
    factory.setProtocolOptions(
        maxMessagePayloadSize=max_frame + 1024,
        maxFramePayloadSize=max_frame + 1024,
        # RFC 6455 7.1.7: a peer that breaks the protocol gets a Close frame with the
        # status that says why (1007 invalid UTF-8 in a text message, 1002, 1009) before
        # the TCP connection closes, not just a dropped connection (autobahn's default).
        # closeHandshakeTimeout (1 s) bounds the wait for its answer.
        utf8validateIncoming=True,
        failByDrop=False,
        # STOMP has its own heart-beats; no WebSocket auto-ping needed.
    )
    resource: IResource = WebSocketResource(factory)
    return resource
