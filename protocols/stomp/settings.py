"""The ``[stomp]`` table: settings of STOMP over TCP and over WebSocket."""

from __future__ import annotations

from dataclasses import dataclass

from qgate.core.limits import Limits


@dataclass(frozen=True)
class StompSettings:
    #: Heart-beat the server offers and asks for, in milliseconds (0 disables).
    heartbeat_ms: int = 10_000
    #: Largest frame accepted, in bytes (headers and body).
    max_frame: int = 1024 * 1024
    #: Messages in flight per subscription when the client names no prefetch-count.
    prefetch: int = 100
    #: Bytes queued for a client that does not read before it is disconnected.
    max_output_buffer: int = 4 * 1024 * 1024
    #: Seconds a queue subscription's messages stay claimed; renewed every third of it while
    #: the connection lives, so after a crash they come back within one lease.
    lease: float = 30.0

    def check(self, limits: Limits) -> None:
        """The lease must be one the core grants (``ValueError`` naming the key)."""
        if not limits.min_lease <= self.lease <= limits.max_lease:
            raise ValueError(
                f"lease: must be between limits.min_lease ({limits.min_lease:g}) and "
                f"limits.max_lease ({limits.max_lease:g}) seconds (got {self.lease:g})"
            )
