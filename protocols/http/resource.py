"""The ``twisted.web`` resources: the root (API plus the web mounts of other protocols) and
the API leaf that routes, runs a handler and writes its JSON answer.

Every request is answered asynchronously (``NOT_DONE_YET``). When the client hangs up
first, ``request.notifyFinish()`` fails and the handler's Deferred is cancelled, which
cancels whatever service call it is waiting on (a long poll gives up its wait at once).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from urllib.parse import unquote

from twisted.internet.defer import CancelledError, Deferred
from twisted.logger import Logger
from twisted.python.failure import Failure
from twisted.web.resource import IResource, Resource
from twisted.web.server import NOT_DONE_YET, Request

from qgate.core import jsonsafe
from qgate.core.errors import QGateError
from qgate.protocols.context import ProtocolContext
from qgate.protocols.http.call import Call
from qgate.protocols.http.endpoints import ZaqarAPI
from qgate.protocols.http.errors import HTTPError, from_core
from qgate.protocols.http.router import Response, Route, Router
from qgate.protocols.http.settings import HTTPSettings

log = Logger()

#: Request headers a browser may send cross-origin (preflight answer when it names none).
CORS_ALLOW_HEADERS = "Content-Type, Client-ID, X-Project-ID, X-Auth-Token, Accept"
#: Response headers a cross-origin script may read.
CORS_EXPOSE_HEADERS = "Location, Retry-After, Accept-Patch, Avro-Fingerprint"
CORS_MAX_AGE = "86400"


def _error(error: HTTPError) -> Response:
    return Response(
        error.status,
        {"title": error.title, "description": error.description},
        error.headers,
    )


@dataclass
class _Pending:
    """State shared by the callbacks of one in-flight request."""

    request: Request
    method: str
    gone: bool = False


class ApiResource(Resource):
    """The Zaqar v2 API as one leaf resource with its own router."""

    isLeaf = True

    def __init__(self, ctx: ProtocolContext[HTTPSettings]) -> None:
        super().__init__()
        self._auth = ctx.auth
        http = ctx.settings
        self._cors_origins: tuple[str, ...] = tuple(http.cors_origins)
        self._max_request_body: int = http.max_request_body
        self.api = ZaqarAPI(ctx)
        self.router: Router[Call] = Router()
        self.api.install(self.router)

    # -- twisted.web -----------------------------------------------------------------------

    def render(self, request: Request) -> object:
        method = bytes(request.method).decode("ascii", "replace").upper()
        pending = _Pending(request, method)
        d = Deferred.fromCoroutine(self._dispatch(request, method))
        request.notifyFinish().addErrback(self._client_gone, pending, d)
        d.addCallback(self._write, pending)
        d.addErrback(self._failed, pending)
        return NOT_DONE_YET

    # -- dispatch --------------------------------------------------------------------------

    @staticmethod
    def _segments(request: Request) -> list[str]:
        path: bytes = request.path
        segments = [unquote(s) for s in path.decode("ascii", "replace").split("/")[1:]]
        if segments and segments[-1] == "":
            segments.pop()  # /v2/queues/ is /v2/queues
        return segments

    async def _dispatch(self, request: Request, method: str) -> Response:
        try:
            route, params = self.router.find(self._segments(request))
            if method == "OPTIONS":
                return self._options(request, route)
            handler = self.router.handler(route, method)
            call = Call(request, method, params, self._auth, self._max_request_body)
            return await handler(call)
        except HTTPError as e:
            return _error(e)
        except QGateError as e:
            return _error(from_core(e))

    def _options(self, request: Request, route: Route[Call]) -> Response:
        """``OPTIONS``: the allowed methods, and the CORS preflight answer."""
        methods = ", ".join(route.methods)
        headers = {"Allow": methods}
        origin = _header(request, b"Origin")
        if (
            origin
            and self._cors_origin(origin)
            and _header(request, b"Access-Control-Request-Method")
        ):
            asked = _header(request, b"Access-Control-Request-Headers")
            headers.update(
                {
                    "Access-Control-Allow-Methods": methods,
                    "Access-Control-Allow-Headers": asked or CORS_ALLOW_HEADERS,
                    "Access-Control-Max-Age": CORS_MAX_AGE,
                }
            )
        return Response(204, headers=headers)

    def _cors_origin(self, origin: str) -> str | None:
        """The ``Access-Control-Allow-Origin`` value for ``origin``, or None if refused."""
        if "*" in self._cors_origins:
            return "*"
        return origin if origin in self._cors_origins else None

    # -- answering -------------------------------------------------------------------------

    def _client_gone(self, reason: Failure, pending: _Pending, d: Deferred[Response]) -> None:
        pending.gone = True
        d.cancel()

    def _failed(self, failure: Failure, pending: _Pending) -> None:
        if pending.gone and failure.check(CancelledError):
            return
        log.failure(
            "Unhandled error serving {method} {uri}",
            failure,
            method=pending.method,
            uri=bytes(pending.request.uri).decode("ascii", "replace"),
        )
        if pending.gone:
            return
        if pending.request.startedWriting:
            # Half an answer cannot be turned into an error: end the connection instead.
            pending.request.loseConnection()
            return
        self._write(
            _error(
                HTTPError(
                    500, "Internal server error", "The server could not complete the request."
                )
            ),
            pending,
        )

    def _write(self, response: Response, pending: _Pending) -> None:
        if pending.gone:
            return
        request = pending.request
        if response.body is not None:
            body = response.body
        else:
            body = b"" if response.document is None else self._json(response.document, pending)
        request.setResponseCode(response.status)
        request.setHeader(b"Server", b"qgate")
        origin = _header(request, b"Origin")
        allowed = self._cors_origin(origin) if origin else None
        if allowed:
            request.setHeader(b"Access-Control-Allow-Origin", allowed.encode())
            request.setHeader(b"Access-Control-Expose-Headers", CORS_EXPOSE_HEADERS.encode())
            if allowed != "*":
                request.setHeader(b"Vary", b"Origin")
        for name, value in response.headers.items():
            request.setHeader(name.encode("ascii"), value.encode("latin-1"))
        if response.document is not None or response.body is not None:
            request.setHeader(b"Content-Type", response.content_type.encode("ascii"))
        else:
            request.defaultContentType = None
        if response.status not in (204, 304) and response.status >= 200:
            request.setHeader(b"Content-Length", str(len(body)).encode("ascii"))
        request.write(body)
        request.finish()

    @staticmethod
    def _json(document: object, pending: _Pending) -> bytes:
        """The answer's JSON. A value strict JSON cannot write (metadata stored by an older
        version with a lone surrogate) is written leniently, never a failure."""
        try:
            return jsonsafe.dumps(document)
        except jsonsafe.JSONValueError as e:
            log.warn(
                "answer to {method} {uri} is not strict JSON ({reason}): written leniently",
                method=pending.method,
                uri=bytes(pending.request.uri).decode("ascii", "replace"),
                reason=e.reason,
            )
            return jsonsafe.dumps_lenient(document)


def _header(request: Request, name: bytes) -> str | None:
    value = request.getHeader(name)
    if value is None:
        return None
    return value.decode("latin-1") if isinstance(value, bytes) else str(value)


class RootResource(Resource):
    """``/``: the resources other protocols mount (``/stomp``, ``/avro``) by their first
    path segment; everything else is the API."""

    def __init__(self, api: IResource, mounts: Mapping[bytes, IResource]) -> None:
        super().__init__()
        self._api = api
        for path, child in mounts.items():
            self.putChild(path, child)

    def getChild(self, path: bytes, request: Request) -> IResource:
        return self._api


def build_resource(ctx: ProtocolContext[HTTPSettings]) -> RootResource:
    """The root resource of an HTTP listener: the API plus ``ctx.web_mounts``."""
    return RootResource(ApiResource(ctx), ctx.web_mounts)
