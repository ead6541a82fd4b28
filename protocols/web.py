"""What every protocol served over HTTP shares (``twisted.web``, no protocol of its own):
one request lifecycle, whole answers, the JSON error body, header reading.

The Zaqar API (``protocols.http``) and Avro RPC (``protocols.avro``, mounted at ``/avro``
inside the same listener) both answer through :func:`serve`, as klein's
``KleinResource.render`` does for its routes:

* ``render`` returns ``NOT_DONE_YET`` and the answer is a coroutine run as a Deferred;
* when the client hangs up first, ``request.notifyFinish()`` fails and that Deferred is
  cancelled, which cancels the core call it waits on (a long poll gives up its wait);
* nothing is written once the client has left;
* an unexpected failure is logged and answered with a JSON 500 in Zaqar's shape, nothing of
  it shown; if half an answer was written already, the connection is closed instead.
"""

from __future__ import annotations

from collections.abc import Coroutine, Mapping
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any

from twisted.internet.defer import CancelledError, Deferred
from twisted.logger import Logger
from twisted.python.failure import Failure
from twisted.web.server import NOT_DONE_YET, Request

from qgate.core import jsonsafe
from qgate.core.errors import QGateError
from qgate.core.sessions import open_session

__all__ = [
    "INTERNAL_ERROR_DESCRIPTION",
    "INTERNAL_ERROR_TITLE",
    "JSON_CONTENT_TYPE",
    "Answer",
    "count_connection",
    "error_answer",
    "error_body",
    "header",
    "serve",
    "write",
]

log = Logger()

JSON_CONTENT_TYPE = "application/json; charset=UTF-8"
#: The 500 of an unexpected failure (Zaqar's text); nothing about the failure is shown.
INTERNAL_ERROR_TITLE = "Internal server error"
INTERNAL_ERROR_DESCRIPTION = "The server could not complete the request."

_NO_HEADERS: Mapping[str, str] = MappingProxyType({})


@dataclass(frozen=True, slots=True)
class Answer:
    """A whole HTTP answer, ready to write. ``content_type`` None: an answer without a body
    (no ``Content-Type`` is sent)."""

    status: int
    body: bytes = b""
    content_type: str | None = None
    headers: Mapping[str, str] = field(default_factory=lambda: _NO_HEADERS)


def error_body(title: str, description: str) -> bytes:
    """The JSON error document of every HTTP protocol: ``{"title", "description"}``."""
    return jsonsafe.dumps_lenient({"title": title, "description": description})


def error_answer(
    status: int, title: str, description: str, headers: Mapping[str, str] = _NO_HEADERS
) -> Answer:
    return Answer(status, error_body(title, description), JSON_CONTENT_TYPE, headers)


def header(request: Request, name: bytes) -> str | None:
    """A request header as text (latin-1, as HTTP/1.1 allows), None when absent."""
    value = request.getHeader(name)
    if value is None:
        return None
    return value.decode("latin-1") if isinstance(value, bytes) else str(value)


def write(request: Request, answer: Answer) -> None:
    """Write ``answer`` whole and finish the request. A ``Content-Length`` is sent whenever
    the status allows a body (RFC 9110 8.6: not on 1xx, 204, 304)."""
    request.setResponseCode(answer.status)
    for name, value in answer.headers.items():
        request.setHeader(name.encode("ascii"), value.encode("latin-1"))
    if answer.content_type is not None:
        request.setHeader(b"Content-Type", answer.content_type.encode("ascii"))
    else:
        request.defaultContentType = None
    if answer.status >= 200 and answer.status not in (204, 304):
        request.setHeader(b"Content-Length", b"%d" % len(answer.body))
    request.write(answer.body)
    request.finish()


def serve(request: Request, answer: Coroutine[Any, Any, Answer]) -> object:
    """Answer ``request`` with what the coroutine ``answer`` returns, asynchronously (see
    the module docstring); the return value of a ``render`` method."""
    _Exchange(request, answer)
    return NOT_DONE_YET


class _Exchange:
    """One request in flight: its answer's Deferred, and whether the client has left."""

    __slots__ = ("deferred", "gone", "request")

    def __init__(self, request: Request, answer: Coroutine[Any, Any, Answer]) -> None:
        self.request = request
        self.gone = False
        self.deferred = Deferred.fromCoroutine(answer)
        request.notifyFinish().addErrback(self._hung_up)
        # addCallback then addErrback: a failure while writing is handled too.
        self.deferred.addCallback(self._write).addErrback(self._failed)

    def _hung_up(self, reason: Failure) -> None:
        self.gone = True
        self.deferred.cancel()

    def _write(self, answer: Answer) -> None:
        if not self.gone:
            write(self.request, answer)

    def _failed(self, failure: Failure) -> None:
        if self.gone and failure.check(CancelledError):
            return  # the cancellation _hung_up asked for
        request = self.request
        log.failure(
            "Unhandled error serving {method} {uri}",
            failure,
            method=bytes(request.method).decode("ascii", "replace"),
            uri=bytes(request.uri).decode("ascii", "replace"),
        )
        if self.gone:
            return
        if request.startedWriting:
            # Half an answer cannot be turned into an error: end the connection instead.
            request.loseConnection()
            return
        write(request, error_answer(500, INTERNAL_ERROR_TITLE, INTERNAL_ERROR_DESCRIPTION))


def count_connection(request: Request, service: Any, tenant: str) -> None:
    """Count ``request``'s connection toward ``tenant``'s ``max_connections``, once,
    until it closes (the channel's ``tenant_sessions``, ``protocols.channel``); a
    kept-alive connection carrying several tenants' requests counts for each of them.
    Over the quota: ``QuotaExceeded``, and the connection closes after this answer."""
    channel: Any = getattr(request, "channel", None)
    held = getattr(channel, "tenant_sessions", None)
    plain = str(tenant)
    if held is None or service is None or plain in held:
        return
    try:
        held[plain] = open_session(service, tenant)
    except QGateError:
        channel.persistent = False  # closed once this answer is written
        request.setHeader(b"Connection", b"close")
        raise
