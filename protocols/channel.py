"""The HTTP channel of every qgate HTTP listener: a deadline for the request head, and
bounds on the request line and headers, answered in the API's JSON error shape.

Twisted's idle timeout restarts with every byte, so a client sending one header byte a
second (slowloris) would hold its connection for ever. Here the whole head (request line
and headers) must arrive within ``head_timeout`` seconds of its first byte; an idle
keep-alive connection is still governed by the idle timeout alone. A request line longer
than ``max_url_length`` is answered 414, more than ``max_headers`` header lines or a head
of more than ``max_header_bytes`` 431; a late head 408. Each answer closes the connection.

The channel also holds the tenants its requests authenticated as (``tenant_sessions``,
one ``core.sessions.TenantSession`` each, opened by ``call.Call.tenant``): a connection
counts toward each such tenant's ``max_connections`` until it closes.
"""

from __future__ import annotations

from typing import Any

from twisted.internet.interfaces import IDelayedCall
from twisted.internet.protocol import connectionDone
from twisted.logger import Logger
from twisted.python.failure import Failure
from twisted.web.http import RESPONSES, HTTPChannel

from qgate.core.sessions import TenantSession
from qgate.protocols.web import JSON_CONTENT_TYPE, error_body

log = Logger()


def raw_answer(
    status: int, title: str, description: str, headers: dict[str, str] | None = None
) -> bytes:
    """A whole HTTP/1.1 answer with a JSON error body, ending the connection."""
    body = error_body(title, description)
    head = [b"HTTP/1.1 %d %s" % (status, RESPONSES.get(status, b"Error"))]
    head += [
        b"%s: %s" % (k.encode("ascii"), v.encode("latin-1")) for k, v in (headers or {}).items()
    ]
    head += [
        b"Content-Type: " + JSON_CONTENT_TYPE.encode("ascii"),
        b"Content-Length: %d" % len(body),
        b"Connection: close",
    ]
    return b"\r\n".join(head) + b"\r\n\r\n" + body


class HeadLimits:
    """What the channel bounds (the site carries one)."""

    __slots__ = ("head_timeout", "max_url_length", "max_headers", "max_header_bytes")

    def __init__(
        self, head_timeout: float, max_url_length: int, max_headers: int, max_header_bytes: int
    ) -> None:
        self.head_timeout = head_timeout
        self.max_url_length = max_url_length
        self.max_headers = max_headers
        self.max_header_bytes = max_header_bytes


class BoundedChannel(HTTPChannel):
    """An ``HTTPChannel`` with a deadline for each request head and bounded heads."""

    # Twisted's own bounds stay as a backstop above ours (its answer is a bare 400).
    maxHeaders = 10_000
    totalHeadersSize = 1 << 20

    _head_timer: IDelayedCall | None = None
    _in_head = False
    _in_body = False
    _request_line = True
    _head_lines = 0
    _head_bytes = 0
    _refused = False
    _host: Any = None

    def getHost(self) -> Any:
        """The server's address of this connection, asked of the socket once: twisted.web
        asks on every request (a ``getsockname`` system call each)."""
        if self._host is None:
            self._host = super().getHost()
        return self._host

    def __init__(self) -> None:
        super().__init__()
        #: tenant -> its session (count) for this connection, closed with it.
        self.tenant_sessions: dict[str, TenantSession] = {}

    def _limits(self) -> HeadLimits | None:
        limits = getattr(getattr(self, "site", None), "head_limits", None)
        return limits if isinstance(limits, HeadLimits) else None

    def dataReceived(self, data: bytes) -> None:
        if self._refused:
            return
        if not (self._in_head or self._in_body or self._handlingRequest):
            self._start_head()
        super().dataReceived(data)

    def _start_head(self) -> None:
        limits = self._limits()
        self._in_head = True
        self._request_line = True
        self._head_lines = self._head_bytes = 0
        if limits is not None and limits.head_timeout > 0:
            self._head_timer = self.callLater(limits.head_timeout, self._head_expired)

    def lineReceived(self, line: bytes) -> None:
        if self._refused:
            return
        if not self._in_head:
            if not line:
                super().lineReceived(line)  # the empty line some clients send after a body
                return
            self._start_head()  # a pipelined head, already buffered
        limits = self._limits()
        if limits is not None:
            self._head_bytes += len(line) + 2
            if self._request_line:
                if line:
                    self._request_line = False
                    if len(line) > limits.max_url_length + 32:
                        self._refuse(
                            414,
                            "URI too long",
                            f"The request line is longer than {limits.max_url_length} bytes.",
                        )
                        return
            elif line:
                self._head_lines += 1
                if self._head_lines > limits.max_headers:
                    self._refuse(
                        431,
                        "Request header fields too large",
                        f"The request has more than {limits.max_headers} header lines.",
                    )
                    return
            if self._head_bytes > limits.max_header_bytes:
                self._refuse(
                    431,
                    "Request header fields too large",
                    f"The request head is larger than {limits.max_header_bytes} bytes.",
                )
                return
        super().lineReceived(line)

    def allHeadersReceived(self) -> None:
        self._end_head()
        self._in_body = True
        super().allHeadersReceived()

    def allContentReceived(self) -> None:
        self._in_body = False
        super().allContentReceived()

    def _end_head(self) -> None:
        self._in_head = False
        timer, self._head_timer = self._head_timer, None
        if timer is not None and timer.active():
            timer.cancel()

    def _head_expired(self) -> None:
        self._head_timer = None
        limits = self._limits()
        timeout = limits.head_timeout if limits is not None else 0
        self._refuse(
            408, "Request timeout", f"The request head did not arrive within {timeout:g} seconds."
        )

    def _refuse(self, status: int, title: str, description: str) -> None:
        """Answer on the raw transport and close: nothing more of this connection is read."""
        self._end_head()
        self._refused = True
        log.debug("HTTP head refused: {status} {why}", status=status, why=description)
        transport: Any = self.transport
        if transport is None:
            return
        transport.write(raw_answer(status, title, description))
        self.setTimeout(None)
        transport.loseConnection()

    def connectionLost(self, reason: Failure = connectionDone) -> None:
        self._end_head()
        sessions, self.tenant_sessions = self.tenant_sessions, {}
        for session in sessions.values():
            session.close()
        super().connectionLost(reason)
