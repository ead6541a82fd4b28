"""The ``[http]`` table: settings of every HTTP listener (the Zaqar API and what it mounts)."""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass(frozen=True)
class HTTPSettings:
    #: Longest ``wait=`` a long poll may ask for, in seconds.
    max_wait: float = 30.0
    #: Origins allowed by CORS (``["*"]`` for any); empty disables CORS headers.
    cors_origins: tuple[str, ...] = ("*",)
    #: Largest request body read, in bytes; a larger one is answered (400 on the API, as
    #: Zaqar's size checks answer) before it is read.
    max_request_body: int = 1024 * 1024
    #: Seconds an idle or slow connection may stay open.
    idle_timeout: float = 60.0
    #: Seconds the whole head of a request (request line and headers) may take from its
    #: first byte (408 after it; not restarted by each byte, unlike ``idle_timeout``).
    head_timeout: float = 20.0
    #: Longest request target (path and query) in bytes (414 past it).
    max_url_length: int = 8192
    #: Most header lines of a request (431 past it).
    max_headers: int = 100
    #: Largest request head, request line and headers, in bytes (431 past it).
    max_header_bytes: int = 32 * 1024
    #: Key of the pre-signed URLs (Zaqar's ``[signed_url] secret_key``); empty turns them
    #: off: ``POST .../share`` is refused and ``URL-Signature`` requests get 404. Kept out of
    #: the repr, so a logged config does not show it.
    signed_url_secret_key: str = field(default="", repr=False)
    #: Zaqar's ``enable_checksum``: messages carry ``"checksum": "MD5:<hex>"`` of their body.
    enable_checksum: bool = False
    #: One line per request (the combined log format) to the log, at info level. False
    #: skips it altogether: formatting and emitting the line costs ~6% of a one-message
    #: POST even when ``--log-level warn`` then drops it (bench.http, docs/benchmarks.md).
    access_log: bool = True
