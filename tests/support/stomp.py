"""STOMP as tests drive it: a client over ``StringTransport`` that parses what the server
wrote, and the protocol context a STOMP factory is built from."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

from twisted.internet.testing import StringTransport

from qgate.core.service import QueueService
from qgate.protocols.context import ProtocolContext
from qgate.protocols.stomp.codec import V12, Frame, Parser, encode
from qgate.protocols.stomp.protocol import StompFactory, StompProtocol
from qgate.protocols.stomp.settings import StompSettings
from tests.support.core import protocol_ctx


def make_ctx(
    service: QueueService,
    reactor: Any = None,
    auth: Any = None,
    **stomp: Any,
) -> ProtocolContext[StompSettings]:
    """The context of a STOMP factory. Tests move clocks by hours: the idle bound on
    clients without heart-beats is off unless a test sets ``idle_timeout``."""
    stomp.setdefault("idle_timeout", 0.0)
    return protocol_ctx(service, StompSettings(**stomp), reactor=reactor, auth=auth)


class Client:
    """One STOMP connection over StringTransport: send frames, read the server's frames."""

    def __init__(self, ctx: ProtocolContext[StompSettings], version: str | None = V12) -> None:
        self.ctx = ctx
        self.transport = StringTransport()
        self.proto: StompProtocol = StompFactory(ctx).buildProtocol(None)
        self.proto.makeConnection(self.transport)
        self.version = version
        self.parser = Parser(max_frame=1 << 30, version=version)
        self.received: list[Frame] = []

    # -- writing ---------------------------------------------------------------------------

    def raw(self, data: bytes) -> None:
        self.proto.dataReceived(data)

    def send(
        self,
        command: str,
        headers: Mapping[str, str] | Iterable[tuple[str, str]] = (),
        body: bytes = b"",
    ) -> None:
        self.raw(encode(command, headers, body, self.version))

    def connect(self, version: str = V12, host: str = "/", **headers: str) -> Frame:
        self.version = version
        self.parser.version = version
        hs = {"accept-version": version, "host": host, **headers}
        self.send("CONNECT", hs)
        frame = self.next()
        assert frame.command == "CONNECTED", frame
        return frame

    # -- reading ---------------------------------------------------------------------------

    def read(self) -> list[Frame]:
        """Every frame written since the last read."""
        data = self.transport.value()
        self.transport.clear()
        self.parser.feed(data)
        self.received.extend(self.parser.frames())
        out, self.received = self.received, []
        return out

    def next(self) -> Frame:
        frames = self.read()
        assert frames, "the server wrote no frame"
        self.received = frames[1:]
        return frames[0]

    def messages(self) -> list[Frame]:
        frames = self.read()
        assert all(f.command == "MESSAGE" for f in frames), frames
        return frames

    @property
    def closing(self) -> bool:
        return bool(self.transport.disconnecting)

    def lose(self) -> None:
        """The TCP connection ends (what the reactor does after loseConnection)."""
        from twisted.internet.error import ConnectionDone
        from twisted.python.failure import Failure

        self.proto.connectionLost(Failure(ConnectionDone()))
