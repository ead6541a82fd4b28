"""The ``[admin]`` table: the admin listener's settings (metrics sampling, console)."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class AdminSettings:
    #: Queues shown by name in ``/metrics`` (the deepest ones); the rest are summed.
    top_queues: int = 20
    #: Seconds between two samples of queue depths (one bounded read per store).
    sample_interval: float = 5.0
    #: Serve the web console at ``/console``.
    console: bool = True
    #: Longest body preview ``/api/.../messages`` and the console show, in bytes.
    preview_bytes: int = 512
    #: Largest request body the admin listener reads (a test message to publish, a move);
    #: a larger one is answered 413 before it is read.
    max_request_body: int = 1024 * 1024
    #: Seconds an idle admin connection is kept.
    idle_timeout: float = 60.0

    def check(self, limits: object) -> None:
        if not 1 <= self.top_queues <= 1000:
            raise ValueError("top_queues: must be from 1 to 1000")
        if not self.sample_interval > 0:
            raise ValueError("sample_interval: must be more than 0 seconds")
        if self.max_request_body < 64 * 1024:
            raise ValueError("max_request_body: must be at least 65536 bytes")
        if not self.idle_timeout > 0:
            raise ValueError("idle_timeout: must be more than 0 seconds")
