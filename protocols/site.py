"""The ``Site`` of every qgate HTTP listener (the public API's and the admin's): idle
timeouts, and request bodies bounded before reading.

A body larger than ``http.max_request_body`` is answered as soon as it is known to be too
large: from ``Content-Length`` once the headers are in, or while counting the chunks of a
chunked body. The answer is the site's ``refusal`` for the request's method and path (the
API's is the 400 Zaqar's size checks give that route; without one, a 413). Nothing of the
body is kept or processed.

The connection is then closed the way RFC 9112 9.6 advises, so that a client still
sending its body reads the answer instead of a reset: the write side is closed at once
(the answer, then FIN), and what the client still sends is read and dropped until its body
ends, it hangs up, ``linger_bytes`` more arrive or ``linger_seconds`` pass; only then is
the connection closed. Closing at once while body bytes are in flight makes the kernel
answer them with RST, which can destroy the answer before the client reads it (urllib then
reports ``Broken pipe``).
"""

from __future__ import annotations

from collections.abc import Callable

from twisted.internet.interfaces import IDelayedCall, IReactorTime
from twisted.logger import Logger
from twisted.python.failure import Failure
from twisted.web.http import RESPONSES
from twisted.web.http import Request as HTTPRequest
from twisted.web.resource import IResource
from twisted.web.server import Request, Site

from qgate.protocols.channel import BoundedChannel, HeadLimits, raw_answer
from qgate.protocols.web import JSON_CONTENT_TYPE, Answer, error_answer

log = Logger()

#: ``(method, request target, limit) -> Answer`` to a body over the site's limit.
Refusal = Callable[[bytes, bytes, int], Answer]


def default_refusal(method: bytes, target: bytes, limit: int) -> Answer:
    return error_answer(
        413, "Request entity too large", f"The request body is larger than {limit} bytes."
    )


def _request_line(request: Request) -> tuple[bytes, bytes]:
    """The method and target of the request whose body is arriving. Twisted hands them to
    the Request only with the whole body (``requestReceived``); an answer given before the
    body needs them earlier, from the channel that parsed the request line."""
    channel = request.channel
    method = getattr(channel, "_command", b"")
    target = getattr(channel, "_path", b"")
    return (
        method if isinstance(method, bytes) else b"",
        target if isinstance(target, bytes) else b"",
    )


class BoundedRequest(Request):
    """A request that refuses a body over its site's ``max_request_body``."""

    _refused = False
    _received = 0
    _drain_until = 0
    _linger: IDelayedCall | None = None

    def _site(self) -> QGateSite | None:
        site = getattr(self.channel, "site", None)
        return site if isinstance(site, QGateSite) else None

    def gotLength(self, length: int | None) -> None:
        site = self._site()
        if site is not None and length is not None and length > site.max_request_body:
            super().gotLength(0)
            self._refuse(site)
            return
        super().gotLength(length)

    def handleContentChunk(self, data: bytes) -> None:
        self._received += len(data)
        if self._refused:
            if self._received > self._drain_until:
                self._hang_up()  # enough drained: the client gets no more time
            return
        site = self._site()
        if site is not None and self._received > site.max_request_body:
            self._refuse(site)
            return
        super().handleContentChunk(data)

    def requestReceived(self, command: bytes, path: bytes, version: bytes) -> None:
        if self._refused:
            # The whole body is in: closing now resets nothing the client still sends.
            self._hang_up()
            return
        super().requestReceived(command, path, version)

    def connectionLost(self, reason: Failure) -> None:
        self._stop_lingering()
        super().connectionLost(reason)

    def _refuse(self, site: QGateSite) -> None:
        """Answer on the raw channel (the request is not processed), half-close, drain."""
        self._refused = True
        # No "100 Continue" after the final answer.
        self.requestHeaders.removeHeader(b"Expect")
        method, target = _request_line(self)
        answer = site.refusal(method, target, site.max_request_body)
        head = [b"HTTP/1.1 %d %s" % (answer.status, RESPONSES.get(answer.status, b"Refused"))]
        head += [
            b"%s: %s" % (k.encode("ascii"), v.encode("latin-1")) for k, v in answer.headers.items()
        ]
        head += [
            b"Content-Type: " + (answer.content_type or JSON_CONTENT_TYPE).encode("ascii"),
            b"Content-Length: %d" % len(answer.body),
            b"Connection: close",
        ]
        log.info(
            "Refused a request body over {limit} bytes: {status}",
            limit=site.max_request_body,
            status=answer.status,
        )
        transport = self.channel.transport
        if transport is None:
            return
        transport.write(b"\r\n".join(head) + b"\r\n\r\n" + answer.body)
        # RFC 9112 9.6: close the write side first, keep reading a while.
        half_close = getattr(transport, "loseWriteConnection", None)
        if callable(half_close):
            half_close()
        self._drain_until = self._received + site.linger_bytes
        self._linger = site.reactor.callLater(site.linger_seconds, self._hang_up)

    def _stop_lingering(self) -> None:
        if self._linger is not None and self._linger.active():
            self._linger.cancel()
        self._linger = None

    def _hang_up(self) -> None:
        self._stop_lingering()
        self.channel.loseConnection()


class QGateSite(Site):
    """A ``Site`` with bounded request bodies and heads (``protocols.channel``), an idle timeout
    and no tracebacks shown."""

    protocol = BoundedChannel  # type: ignore[assignment]  # no HTTP/2: no wrapper
    requestFactory = BoundedRequest
    displayTracebacks = False
    #: After refusing a body: bytes still read (and dropped), and for how long at most.
    linger_bytes = 16 * 1024 * 1024
    linger_seconds = 10.0

    def __init__(
        self,
        resource: IResource,
        *,
        max_request_body: int,
        idle_timeout: float,
        reactor: IReactorTime,
        refusal: Refusal = default_refusal,
        access_log: bool = True,
        head_limits: HeadLimits | None = None,
    ) -> None:
        super().__init__(
            resource, timeout=idle_timeout, reactor=reactor, parsePOSTFormSubmission=False
        )
        self.max_request_body = max_request_body
        self.refusal = refusal
        self.access_log = access_log
        self.head_limits = head_limits or HeadLimits(20.0, 8192, 100, 16384)

    def overload_answer(self, why: str) -> bytes:
        """What a connection over the listener's caps is told before it is closed
        (``gateway.connections``)."""
        return raw_answer(
            503, "Service unavailable", f"Connection refused: {why}.", {"Retry-After": "5"}
        )

    def log(self, request: HTTPRequest) -> None:
        """The access-log line of a finished request, unless ``[http] access_log`` is off
        (then not even formatted)."""
        if self.access_log:
            super().log(request)
