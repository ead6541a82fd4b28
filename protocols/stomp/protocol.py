"""The Twisted side of a STOMP connection: transport, timers and back-pressure.

``StompLink`` is shared by TCP (``StompProtocol`` here) and WebSocket (``websocket.py``):
it feeds bytes to the parser, hands frames to the session one at a time (holding input
while the session asks it to) and tells it when a chunk of input is done (the session
batches its core calls per chunk), sends heart-beats and watches the peer's, and counts
what is written while the peer does not read. It builds its session with a factory
(``link.SessionFactory``; a ``StompSession`` by default), so it can be tested alone.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Any, Protocol

from twisted.internet.defer import Deferred
from twisted.internet.interfaces import IDelayedCall, IPushProducer, IReactorTime
from twisted.internet.protocol import Factory, connectionDone
from twisted.internet.protocol import Protocol as TwistedProtocol
from twisted.logger import Logger
from twisted.python.failure import Failure
from zope.interface import implementer

from qgate.protocols.context import ProtocolContext
from qgate.protocols.stomp.codec import (
    V10,
    VERSIONS,
    FrameError,
    Parser,
    encode,
    escape_unnegotiated,
)
from qgate.protocols.stomp.link import Link, Session, SessionFactory
from qgate.protocols.stomp.session import StompSession
from qgate.protocols.stomp.settings import StompSettings

log = Logger()

#: STOMP 1.2 leaves the tolerance to the implementation: the peer may be this much later
#: than the negotiated heart-beat interval before the connection is considered dead.
HEARTBEAT_GRACE = 1.5
#: After ERROR or DISCONNECT, a peer that does not read what is left is cut off after this.
CLOSE_TIMEOUT = 10.0


class Wire(Protocol):
    """The byte pipe under a link: a TCP transport, or a WebSocket adapter."""

    def write(self, data: bytes) -> None: ...

    def loseConnection(self) -> None: ...

    def abortConnection(self) -> None: ...

    def pauseProducing(self) -> None: ...

    def resumeProducing(self) -> None: ...


class StompLink:
    """One connection's framing, timers and flow control around a session."""

    def __init__(
        self,
        ctx: ProtocolContext[StompSettings],
        wire: Wire,
        session_factory: SessionFactory | None = None,
    ) -> None:
        config = ctx.settings
        limits = ctx.service.limits
        self.clock: IReactorTime = ctx.service.clock
        self.wire = wire
        self.parser = Parser(
            max_frame=config.max_frame,
            max_headers=limits.max_headers + 32,
            max_line=2 * limits.max_header_length + 64,
        )
        self.version: str | None = None
        self.max_output = config.max_output_buffer
        self.closed = False
        self._closing = False
        self._output_paused = False
        self._paused_bytes = 0
        self._held = False
        self._processing = False
        self._send_every = 0.0
        self._expect_every = 0.0
        #: Longest silence allowed once connected (heart-beats, or the idle bound).
        self._recv_limit = 0.0
        self._idle_timeout = config.idle_timeout
        self._last_rx = self.clock.seconds()
        self._last_tx = self._last_rx
        self._send_timer: IDelayedCall | None = None
        self._recv_timer: IDelayedCall | None = None
        self._abort_timer: IDelayedCall | None = None
        self._connect_timer: IDelayedCall | None = self.clock.callLater(
            config.connect_timeout, self._connect_expired, config.connect_timeout
        )
        if session_factory is None:
            session_factory = stomp_session_factory(ctx)
        self.session: Session = session_factory(self)

    @property
    def peer(self) -> str | None:
        """The client's IP address (None for UNIX sockets), for throttling failed
        authentications."""
        get_peer = getattr(self.wire, "getPeer", None)
        return getattr(get_peer(), "host", None) if get_peer is not None else None

    # -- input -----------------------------------------------------------------------------

    def data_received(self, data: bytes) -> None:
        self._last_rx = self.clock.seconds()
        if self._closing:
            return
        self.parser.feed(data)
        self._process()

    def _process(self) -> None:
        """Hand buffered frames to the session one by one, until it asks to hold."""
        if self._processing:
            return
        self._processing = True
        self.session.input_started()
        try:
            while not self._held and not self._closing:
                try:
                    frame = self.parser.next_frame()
                except FrameError as e:
                    self.session.protocol_error(e)
                    return
                if frame is None:
                    return
                hold = self.session.frame_received(frame)
                if hold is not None and not hold.called:
                    self._hold(hold)
        finally:
            self._processing = False
            self.session.input_done()

    def _hold(self, until: Deferred[Any]) -> None:
        """Read nothing more (the transport stops reading) until ``until`` fires."""
        self._held = True
        if not self._closing:
            self.wire.pauseProducing()

        def release(result: object) -> object:
            self._held = False
            # Heart-beats queued behind the held input were not late: count from now.
            self._last_rx = self.clock.seconds()
            if not self._closing and not self.closed:
                self.wire.resumeProducing()
                self._process()
            return None

        until.addBoth(release)

    # -- output ----------------------------------------------------------------------------

    @property
    def output_paused(self) -> bool:
        return self._output_paused

    def send(self, command: str, headers: Iterable[tuple[str, str]], body: bytes = b"") -> None:
        if self.version is None:
            # Before negotiation (an ERROR answering CONNECT) no escaping is agreed: line
            # breaks flattened, backslashes doubled, so that every version reads the value.
            headers = [(name, escape_unnegotiated(value)) for name, value in headers]
            self._write(encode(command, headers, body, None))
            return
        self._write(encode(command, headers, body, self.version))

    def _write(self, data: bytes) -> None:
        if self.closed or self._closing:
            return  # nothing goes out after ERROR or the DISCONNECT receipt
        self.wire.write(data)
        self._last_tx = self.clock.seconds()
        if self._output_paused and not self._closing:
            self._paused_bytes += len(data)
            if self._paused_bytes > self.max_output:
                self.session.output_overflow()

    def pause_output(self) -> None:
        """The transport's buffer is full (IPushProducer.pauseProducing)."""
        if not self._output_paused:
            self._output_paused = True
            self._paused_bytes = 0

    def resume_output(self) -> None:
        """The peer reads again (IPushProducer.resumeProducing)."""
        if self._output_paused:
            self._output_paused = False
            self._paused_bytes = 0
            if not self._closing:
                self.session.output_resumed()

    def set_version(self, version: str) -> None:
        self.version = version
        self.parser.version = version

    def close(self) -> None:
        """Close after the written frames are flushed; abort a peer that never reads."""
        if self._closing or self.closed:
            return
        self._closing = True
        self._stop_heartbeat()
        # Nothing more will be produced. A TLS transport that still has a producer when
        # its handshake completes (an ERROR written before it, as the CONNECT deadline
        # does) would hand the producer its buffer space and never shut down.
        unregister = getattr(self.wire, "unregisterProducer", None)
        if unregister is not None:
            unregister()
        self.wire.loseConnection()
        self._abort_timer = self.clock.callLater(CLOSE_TIMEOUT, self._abort)

    def _abort(self) -> None:
        self._abort_timer = None
        if not self.closed:
            self.wire.abortConnection()

    def connection_lost(self, reason: Failure | None = None) -> None:
        if self.closed:
            return
        self.closed = True
        self._closing = True
        self._stop_heartbeat()
        if self._abort_timer is not None and self._abort_timer.active():
            self._abort_timer.cancel()
        self._abort_timer = None
        self.session.connection_lost()

    # -- heart-beats -----------------------------------------------------------------------

    def _connect_expired(self, timeout: float) -> None:
        self._connect_timer = None
        if not self._closing:
            self.session.timed_out(f"no CONNECT frame within {timeout:g} seconds")

    def _stop_connect_timer(self) -> None:
        timer, self._connect_timer = self._connect_timer, None
        if timer is not None and timer.active():
            timer.cancel()

    def start_heartbeat(self, send_every: float, expect_every: float) -> None:
        self._stop_connect_timer()
        self._send_every = send_every
        self._expect_every = expect_every
        now = self.clock.seconds()
        if send_every > 0:
            self._send_timer = self.clock.callLater(send_every, self._beat)
        limit = expect_every * HEARTBEAT_GRACE
        idle = self._idle_timeout
        if idle > 0 and (limit <= 0 or limit > idle):
            limit = idle  # heart-beats slower than the idle bound do not lift it
        self._recv_limit = limit
        if limit > 0:
            self._last_rx = now
            self._recv_timer = self.clock.callLater(limit, self._check)

    def _beat(self) -> None:
        idle = self.clock.seconds() - self._last_tx
        if idle >= self._send_every:
            # STOMP 1.2: a heart-beat is an EOL sent when no other frame was.
            self._write(b"\n")
            idle = 0.0
        self._send_timer = self.clock.callLater(self._send_every - idle, self._beat)

    def _check(self) -> None:
        limit = self._recv_limit
        silent = self.clock.seconds() - self._last_rx
        if self._held:
            silent = 0.0  # we stopped reading ourselves
        if silent >= limit:
            self._recv_timer = None
            if self._expect_every > 0 and limit == self._expect_every * HEARTBEAT_GRACE:
                self.session.heartbeat_timeout()
            else:
                self.session.timed_out(
                    f"idle for {limit:g} seconds without heart-beats: a client that stays "
                    f"quiet longer must negotiate heart-beats (heart-beat header)"
                )
            return
        self._recv_timer = self.clock.callLater(limit - silent, self._check)

    def _stop_heartbeat(self) -> None:
        self._stop_connect_timer()
        for timer in (self._send_timer, self._recv_timer):
            if timer is not None and timer.active():
                timer.cancel()
        self._send_timer = self._recv_timer = None


def stomp_session_factory(
    ctx: ProtocolContext[StompSettings], versions: Sequence[str] = VERSIONS
) -> SessionFactory:
    """A ``StompSession`` over ``ctx`` for each new link, speaking ``versions``."""

    def build(link: Link) -> Session:
        return StompSession(ctx, link, versions)

    return build


@implementer(IPushProducer)
class StompProtocol(TwistedProtocol):
    """STOMP over a stream transport (TCP, TLS, UNIX). As the transport's producer it
    learns when the peer stops reading (pause/resumeProducing)."""

    link: StompLink

    def __init__(self, ctx: ProtocolContext[StompSettings]) -> None:
        self.ctx = ctx

    def connectionMade(self) -> None:
        transport: Any = self.transport  # an ITCPTransport: also a consumer and a producer
        self.link = StompLink(self.ctx, transport)
        transport.registerProducer(self, True)

    def dataReceived(self, data: bytes) -> None:
        self.link.data_received(data)

    def connectionLost(self, reason: Failure = connectionDone) -> None:
        self.link.connection_lost(reason)

    # IPushProducer: the direction is our output to the peer.
    def pauseProducing(self) -> None:
        self.link.pause_output()

    def resumeProducing(self) -> None:
        self.link.resume_output()

    def stopProducing(self) -> None:
        pass


class StompFactory(Factory):
    """Builds a ``StompProtocol`` per TCP connection, all over one protocol context."""

    def __init__(self, ctx: ProtocolContext[StompSettings]) -> None:
        self.ctx = ctx

    def buildProtocol(self, addr: Any) -> StompProtocol:
        proto = StompProtocol(self.ctx)
        proto.factory = self
        return proto

    def overload_answer(self, why: str) -> bytes:
        """What a connection over the listener's caps is told before it is closed
        (``gateway.connections``): an ERROR frame, STOMP 1.0 style (nothing negotiated)."""
        body = f"Connection refused: {why}.".encode()
        headers = [("message", "server busy: connection refused"), ("content-type", "text/plain")]
        headers.append(("content-length", str(len(body))))
        return encode("ERROR", headers, body, V10)
