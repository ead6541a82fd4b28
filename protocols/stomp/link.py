"""The seam between a STOMP session and the Twisted side of its connection.

``session.py`` knows frames and the core API, not sockets; ``protocol.py`` (``StompLink``,
shared by TCP and ``websocket.py``) knows bytes, timers and back-pressure. ``Link`` is
what the session needs from the link, ``Session`` what the link needs from the session,
and a link builds its session with a ``SessionFactory``: each side can be tested with a
fake of the other.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Any, Protocol

from twisted.internet.defer import Deferred

from qgate.protocols.stomp.codec import Frame, FrameError


class Link(Protocol):
    """What the session needs from the Twisted side of a connection."""

    @property
    def output_paused(self) -> bool:
        """True while the peer does not read fast enough (the transport paused us)."""

    def send(self, command: str, headers: Iterable[tuple[str, str]], body: bytes = b"") -> None:
        """Encode a frame for the negotiated version and write it."""

    def set_version(self, version: str) -> None:
        """Use ``version``'s header escaping from the next frame on, both ways."""

    def start_heartbeat(self, send_every: float, expect_every: float) -> None:
        """The session is connected (the CONNECT deadline ends): send EOLs every
        ``send_every`` s; time out if nothing arrives for longer than ``expect_every`` s
        plus a grace margin, or than the idle bound (0 disables either heart-beat)."""

    def close(self) -> None:
        """Close once what was written is flushed."""


class Session(Protocol):
    """What the link needs from the session: the frames that arrive, and what happens
    to the connection."""

    def input_started(self) -> None:
        """The frames of one chunk of input follow."""

    def frame_received(self, frame: Frame) -> Deferred[Any] | None:
        """Handle one frame; a Deferred returned means: hand over no further frame (and
        read nothing more) until it fires."""

    def input_done(self) -> None:
        """That chunk is done, or input is held."""

    def protocol_error(self, error: FrameError) -> None:
        """The bytes broke STOMP framing: the connection cannot go on."""

    def heartbeat_timeout(self) -> None:
        """Nothing arrived within the negotiated heart-beat (and the grace margin)."""

    def timed_out(self, why: str) -> None:
        """No CONNECT in time, or a client without heart-beats silent for too long."""

    def output_overflow(self) -> None:
        """More than the output buffer limit waits for a peer that does not read."""

    def output_resumed(self) -> None:
        """The peer reads again."""

    def connection_lost(self) -> None:
        """The connection has ended (called once)."""


#: Builds a new link's session; the link passes itself.
SessionFactory = Callable[[Link], Session]
