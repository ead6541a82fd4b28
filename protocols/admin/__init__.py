"""The admin listener (``protocol = "admin"``): Prometheus ``/metrics``, health checks for
load balancers, the operators' JSON API (``api``) and the web console (``/console``).

It is a listener of its own, never mounted on the public API. With ``auth.mode = "keys"``
every path but ``/health/*`` needs an admin key (``qgate admin-key create``) as
``Authorization: Bearer <key>`` or ``X-Auth-Token``: a key of the reserved tenant
``core.admin.ADMIN_TENANT``, checked by the gateway's authenticator like any other key.
Tenant keys are refused.

``/metrics`` renders prometheus_client's text format from the gateway's registry on the
reactor thread: every series there is in memory (queue depths are sampled ahead), so a
scrape does no I/O. (prometheus_client's own ``twisted.MetricsResource`` imports the
global reactor and runs the registry in a thread pool; the rendering is the same
``generate_latest``.)
"""

from __future__ import annotations

from importlib import resources
from typing import Any

from prometheus_client.exposition import CONTENT_TYPE_LATEST, generate_latest
from twisted.internet.interfaces import IProtocolFactory
from twisted.web.resource import Resource
from twisted.web.server import Request

from qgate.core.admin import ADMIN_TENANT
from qgate.core.errors import QGateError
from qgate.protocols.admin.api import AdminAPI, call_of, ok
from qgate.protocols.admin.settings import AdminSettings
from qgate.protocols.context import ProtocolContext
from qgate.protocols.site import QGateSite
from qgate.protocols.web import Answer, error_answer, header, serve

__all__ = ["AdminResource", "AdminSite", "listener_factory"]

_STATIC = {
    "": ("console.html", "text/html; charset=utf-8"),
    "console.js": ("console.js", "text/javascript; charset=utf-8"),
    "console.css": ("console.css", "text/css; charset=utf-8"),
}


def _static(name: str) -> bytes:
    return resources.files("qgate.protocols.admin").joinpath(name).read_bytes()


def _token(request: Request) -> str | None:
    value = header(request, b"Authorization")
    if value and value.lower().startswith("bearer "):
        return value[7:].strip()
    return header(request, b"X-Auth-Token")


class AdminResource(Resource):
    """Every path of the admin listener, as one leaf."""

    isLeaf = True

    def __init__(self, ctx: ProtocolContext[AdminSettings]) -> None:
        super().__init__()
        self._ctx = ctx
        self._auth = ctx.auth
        self._api = AdminAPI(ctx)
        self._status = ctx.status
        self._console = ctx.settings.console

    def render(self, request: Request) -> object:
        request.setHeader(b"Server", b"qgate")
        request.setHeader(b"Cache-Control", b"no-store")
        method = bytes(request.method).decode("ascii", "replace").upper()
        return serve(request, self._answer(request, method))

    async def _answer(self, request: Request, method: str) -> Answer:
        segments = [s.decode("utf-8", "replace") for s in request.postpath or []]
        segments = segments[:-1] if segments and segments[-1] == "" else segments
        match segments:
            case ["health", "live"]:
                return ok({"live": True})
            case ["health", "ready"]:
                state = await self._status.ready()
                return ok(state, 200 if state["ready"] else 503)
            case ["console", *rest] if self._console and method == "GET":
                return self._page("/".join(rest))
            case [] if self._console and method == "GET":
                return Answer(302, b"", None, {"Location": "/console/"})
        refused = await self._check(request)
        if refused is not None:
            return refused
        match segments:
            case ["metrics"] if method == "GET":
                registry = self._ctx.metrics.registry
                body = generate_latest(registry) if registry is not None else b""
                return Answer(200, body, CONTENT_TYPE_LATEST)
            case ["api", *rest]:
                return await self._api.answer(call_of(request, method, rest))
        return error_answer(404, "Not found", "no such admin resource")

    async def _check(self, request: Request) -> Answer | None:
        if not getattr(self._auth, "needs_token", False):
            return None
        token = _token(request)
        if not token:
            return error_answer(
                401, "Unauthorized", "an admin key is required (Authorization: Bearer ...)"
            )
        try:
            await self._auth.authenticate(ADMIN_TENANT, token)
        except QGateError:
            return error_answer(401, "Unauthorized", "not an admin key")
        return None

    def _page(self, name: str) -> Answer:
        found = _STATIC.get(name)
        if found is None:
            return error_answer(404, "Not found", "no such console file")
        return Answer(200, _static(found[0]), found[1])


class AdminSite(QGateSite):
    """The admin ``Site``: the public HTTP listener's bounds on request heads and bodies
    (``protocols/site.py``), with the admin's own body limit. Its access log is the
    gateway's (``gateway/access.py``)."""


def listener_factory(ctx: ProtocolContext[AdminSettings], listener: Any) -> IProtocolFactory:
    """The protocol factory of an ``admin`` listener."""
    settings = ctx.settings
    return AdminSite(
        AdminResource(ctx),
        max_request_body=settings.max_request_body,
        idle_timeout=settings.idle_timeout,
        reactor=ctx.reactor,
    )
