"""The ``twisted.web`` resources: the root (API plus the web mounts of other protocols) and
the API leaf that routes, runs a handler and writes its JSON answer.

Every request is answered through ``protocols.web.serve``, the lifecycle every protocol
served over HTTP shares: asynchronously (``NOT_DONE_YET``), the handler's Deferred cancelled
when the client hangs up first (a long poll gives up its wait at once), an unexpected
failure logged and answered with a JSON 500.
"""

from __future__ import annotations

from collections.abc import Mapping
from urllib.parse import unquote

from twisted.logger import Logger
from twisted.web.resource import IResource, Resource
from twisted.web.server import Request

from qgate.core import jsonsafe
from qgate.core.errors import QGateError
from qgate.core.metrics import HTTP_SECONDS
from qgate.protocols.context import ProtocolContext
from qgate.protocols.http import hooks
from qgate.protocols.http.call import Call
from qgate.protocols.http.endpoints import ZaqarAPI
from qgate.protocols.http.errors import BodyTooLarge, HTTPError, from_core
from qgate.protocols.http.router import Response, Route, Router
from qgate.protocols.http.settings import HTTPSettings
from qgate.protocols.site import default_refusal
from qgate.protocols.web import Answer, header, serve

log = Logger()

#: Request headers a browser may send cross-origin (preflight answer when it names none).
CORS_ALLOW_HEADERS = (
    "Content-Type, Client-ID, X-Project-ID, X-Auth-Token, Accept, "
    "URL-Signature, URL-Expires, URL-Methods, URL-Paths"
)
#: Response headers a cross-origin script may read.
CORS_EXPOSE_HEADERS = "Location, Retry-After, Accept-Patch, Avro-Fingerprint"
CORS_MAX_AGE = "86400"


def _error(error: HTTPError) -> Response:
    return Response(error.status, error.document(), error.headers)


def _segments(path: bytes) -> list[str]:
    segments = [unquote(s) for s in path.decode("ascii", "replace").split("/")[1:]]
    if segments and segments[-1] == "":
        segments.pop()  # /v2/queues/ is /v2/queues
    return segments


class ApiResource(Resource):
    """The Zaqar v2 API as one leaf resource with its own router."""

    isLeaf = True

    def __init__(self, ctx: ProtocolContext[HTTPSettings]) -> None:
        super().__init__()
        self._auth = ctx.auth
        self._service = ctx.service
        http = ctx.settings
        self._cors_origins: tuple[str, ...] = tuple(http.cors_origins)
        self._max_request_body: int = http.max_request_body
        self.api = ZaqarAPI(ctx)
        self._signed = self.api.share.signed
        self._metrics = ctx.metrics
        self._clock = ctx.reactor
        self.router: Router[Call] = Router()
        self.api.install(self.router)

    # -- twisted.web -----------------------------------------------------------------------

    def render(self, request: Request) -> object:
        # Set first, so that every answer carries them, a 500 of the lifecycle's too.
        request.setHeader(b"Server", b"qgate")
        origin = header(request, b"Origin")
        allowed = self._cors_origin(origin) if origin else None
        if allowed:
            request.setHeader(b"Access-Control-Allow-Origin", allowed.encode())
            request.setHeader(b"Access-Control-Expose-Headers", CORS_EXPOSE_HEADERS.encode())
            if allowed != "*":
                request.setHeader(b"Vary", b"Origin")
        method = bytes(request.method).decode("ascii", "replace").upper()
        return serve(request, self._answer(request, method))

    # -- dispatch --------------------------------------------------------------------------

    async def _answer(self, request: Request, method: str) -> Answer:
        started = self._clock.seconds()
        answer, route = await self._dispatch(request, method)
        # By route template (``/v2/queues/{queue}/messages``): bounded labels.
        self._metrics.observe(
            HTTP_SECONDS,
            self._clock.seconds() - started,
            protocol="http",
            method=method,
            route=self.router.label(route),
        )
        return answer

    async def _dispatch(self, request: Request, method: str) -> tuple[Answer, Route[Call] | None]:
        """The answer to ``request`` and the route it took (None: no route matched)."""
        route: Route[Call] | None = None
        try:
            segments = _segments(request.path)
            route, params = self.router.find(segments)
            if method == "OPTIONS":
                response = self._options(request, route)
            else:
                call = Call(
                    request,
                    method,
                    params,
                    self._auth,
                    self._max_request_body,
                    self._signed,
                    self._service,
                )
                # Zaqar's hooks run on every matched route, before its responder (even
                # the 405 of a method the route lacks).
                hooks.before(
                    call,
                    versioned=bool(segments) and route.template not in hooks.WITHOUT_CLIENT_ID,
                    also_serves=route.media.get(method, ()),
                )
                handler = self.router.handler(route, method)
                response = await handler(call)
        except BodyTooLarge as e:
            shown = (
                e
                if route is None
                else self.api.too_large(method, route.template, self._max_request_body)
            )
            response = _error(shown)
        except HTTPError as e:
            response = _error(e)
        except QGateError as e:
            response = _error(from_core(e))
        return self._encode(response, request, method), route

    def too_large(self, method: bytes, target: bytes, limit: int) -> Answer:
        """The answer to a body over ``limit`` sent with ``method`` to ``target``, before
        it is read (the site's refusal): what the route's size check says."""
        path = target.split(b"?", 1)[0]
        verb = method.decode("ascii", "replace").upper()
        try:
            route, _ = self.router.find(_segments(path))
        except HTTPError:
            error: HTTPError = BodyTooLarge(limit)
        else:
            error = self.api.too_large(verb, route.template, limit)
        return self._encode(_error(error), None, verb)

    def _options(self, request: Request, route: Route[Call]) -> Response:
        """``OPTIONS``: the allowed methods, and the CORS preflight answer."""
        methods = ", ".join(route.methods)
        headers = {"Allow": methods}
        origin = header(request, b"Origin")
        if (
            origin
            and self._cors_origin(origin)
            and header(request, b"Access-Control-Request-Method")
        ):
            asked = header(request, b"Access-Control-Request-Headers")
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

    @staticmethod
    def _encode(response: Response, request: Request | None, method: str) -> Answer:
        """A handler's response as the bytes to send."""
        if response.body is not None:
            return Answer(response.status, response.body, response.content_type, response.headers)
        if response.document is None:
            return Answer(response.status, headers=response.headers)
        try:
            body = jsonsafe.dumps(response.document)
        except jsonsafe.JSONValueError as e:
            # Metadata stored by an older version with a lone surrogate: written leniently,
            # never a failure.
            log.warn(
                "answer to {method} {uri} is not strict JSON ({reason}): written leniently",
                method=method,
                uri="" if request is None else bytes(request.uri).decode("ascii", "replace"),
                reason=e.reason,
            )
            body = jsonsafe.dumps_lenient(response.document)
        return Answer(response.status, body, response.content_type, response.headers)


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

    def too_large(self, method: bytes, target: bytes, limit: int) -> Answer:
        """The site's refusal of a body over ``limit``: the API's answer, or a 413 for the
        resources mounted beside it."""
        first = target.split(b"?", 1)[0].lstrip(b"/").split(b"/", 1)[0]
        if first in self.children or not isinstance(self._api, ApiResource):
            return default_refusal(method, target, limit)
        return self._api.too_large(method, target, limit)


def build_resource(ctx: ProtocolContext[HTTPSettings]) -> RootResource:
    """The root resource of an HTTP listener: the API plus ``ctx.web_mounts``."""
    return RootResource(ApiResource(ctx), ctx.web_mounts)
