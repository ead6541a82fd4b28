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
    #: Seconds from the connection (the WebSocket opening) to CONNECTED: a client that has
    #: not sent its CONNECT frame by then gets an ERROR and is closed.
    connect_timeout: float = 10.0
    #: Seconds a connected client may send nothing at all; one that is quiet for longer
    #: must negotiate heart-beats, which then bound its silence (0: no bound).
    idle_timeout: float = 300.0
    #: SUBSCRIBEs one connection may hold at once.
    max_subscriptions: int = 1000
    #: Transactions one connection may hold open at once.
    max_transactions: int = 16
    #: Bytes of SEND bodies one connection's open transactions may keep until COMMIT;
    #: past it: ERROR, and the transactions are aborted.
    max_transaction_bytes: int = 16 * 1024 * 1024

    def check(self, limits: Limits) -> None:
        """The lease must be one the core grants, the caps positive (``ValueError``
        naming the key)."""
        for key in ("max_subscriptions", "max_transactions", "max_transaction_bytes"):
            if getattr(self, key) < 1:
                raise ValueError(f"{key}: must be at least 1")
        if not self.connect_timeout > 0:
            raise ValueError("connect_timeout: must be more than 0 seconds")
        if self.idle_timeout < 0:
            raise ValueError("idle_timeout: must be 0 (no bound) or more seconds")
        if not limits.min_lease <= self.lease <= limits.max_lease:
            raise ValueError(
                f"lease: must be between limits.min_lease ({limits.min_lease:g}) and "
                f"limits.max_lease ({limits.max_lease:g}) seconds (got {self.lease:g})"
            )
