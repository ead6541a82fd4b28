"""The HTTP listener's ``Site``: idle timeouts, and request bodies bounded before reading.

A body larger than ``http.max_request_body`` gets a 413 as soon as it is known to be too
large: from ``Content-Length`` once the headers are in, or while counting the chunks of a
chunked body. The connection is then closed without reading the rest, so a huge upload
costs neither memory nor disk, and nothing is stored.
"""

from __future__ import annotations

from twisted.internet.interfaces import IReactorTime
from twisted.logger import Logger
from twisted.web.resource import IResource
from twisted.web.server import Request, Site

from qgate.protocols.web import error_body

log = Logger()


class BoundedRequest(Request):
    """A request that refuses a body over its site's ``max_request_body``."""

    _refused = False
    _received = 0

    def _limit(self) -> int | None:
        limit = getattr(getattr(self.channel, "site", None), "max_request_body", None)
        return limit if isinstance(limit, int) else None

    def gotLength(self, length: int | None) -> None:
        limit = self._limit()
        if limit is not None and length is not None and length > limit:
            super().gotLength(0)
            self._refuse(limit)
            return
        super().gotLength(length)

    def handleContentChunk(self, data: bytes) -> None:
        if self._refused:
            return
        self._received += len(data)
        limit = self._limit()
        if limit is not None and self._received > limit:
            self._refuse(limit)
            return
        super().handleContentChunk(data)

    def requestReceived(self, command: bytes, path: bytes, version: bytes) -> None:
        if self._refused:
            return  # answered already; the connection is closing
        super().requestReceived(command, path, version)

    def _refuse(self, limit: int) -> None:
        """Answer 413 on the raw channel (the request line is not processed yet) and hang up."""
        self._refused = True
        # No "100 Continue" after the final answer.
        self.requestHeaders.removeHeader(b"Expect")
        body = error_body(
            "Request entity too large", f"The request body is larger than {limit} bytes."
        )
        head = (
            b"HTTP/1.1 413 Request Entity Too Large\r\n"
            b"Content-Type: application/json; charset=UTF-8\r\n"
            b"Content-Length: %d\r\n"
            b"Connection: close\r\n\r\n" % len(body)
        )
        log.info("Refused a request body over {limit} bytes", limit=limit)
        channel = self.channel
        if channel.transport is not None:
            channel.transport.write(head + body)
        channel.loseConnection()


class QGateSite(Site):
    """A ``Site`` with bounded request bodies, an idle timeout and no tracebacks shown."""

    requestFactory = BoundedRequest
    displayTracebacks = False

    def __init__(
        self,
        resource: IResource,
        *,
        max_request_body: int,
        idle_timeout: float,
        reactor: IReactorTime,
    ) -> None:
        super().__init__(
            resource, timeout=idle_timeout, reactor=reactor, parsePOSTFormSubmission=False
        )
        self.max_request_body = max_request_body
