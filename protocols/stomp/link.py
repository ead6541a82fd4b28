"""The seam between a STOMP session and the Twisted side of its connection.

``session.py`` knows frames and the core API, not sockets; ``protocol.py`` (TCP) and
``websocket.py`` know bytes, timers and back-pressure. ``Link`` is what the session needs
from the Twisted side.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Protocol


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
        """Send EOLs every ``send_every`` s; close if nothing arrives for longer than
        ``expect_every`` s plus a grace margin (0 disables either)."""

    def close(self) -> None:
        """Close once what was written is flushed."""
