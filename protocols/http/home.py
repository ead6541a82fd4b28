"""The API's own endpoints: the versions (``GET /``), the JSON Home document
(``GET /v2``), ``ping`` and ``health``."""

from __future__ import annotations

from typing import Any

from twisted.internet.defer import CancelledError
from twisted.logger import Logger
from twisted.python.failure import Failure

from qgate.protocols.context import ProtocolContext
from qgate.protocols.http.call import Call
from qgate.protocols.http.errors import RETRY_AFTER
from qgate.protocols.http.handlers import Handlers
from qgate.protocols.http.openapi import document_bytes
from qgate.protocols.http.router import Response
from qgate.protocols.http.settings import HTTPSettings

log = Logger()

#: The media type of the JSON Home document (``GET /v2``).
HOME_TYPE = "application/json-home"

#: ``GET /``: Zaqar answers 300 Multiple Choices with the versions it serves.
VERSIONS = {
    "versions": [
        {
            "id": "2",
            "status": "CURRENT",
            "updated": "2014-9-24T04:06:47Z",
            "media-types": [
                {"base": "application/json", "type": "application/vnd.openstack.messaging-v2+json"}
            ],
            "links": [{"href": "/v2/", "rel": "self"}],
        }
    ]
}


def _home_document() -> dict[str, Any]:
    """A JSON Home document of the v2 API (``GET /v2/``), like Zaqar's homedoc."""

    def resource(
        template: str, variables: dict[str, str], allow: list[str], accept_post: bool = False
    ) -> dict[str, Any]:
        hints: dict[str, Any] = {"allow": allow, "formats": {"application/json": {}}}
        if accept_post:
            hints["accept-post"] = ["application/json"]
        return {"href-template": template, "href-vars": variables, "hints": hints}

    queue = "param/queue_name"
    return {
        "resources": {
            "rel/queues": resource(
                "/v2/queues{?marker,limit,detailed,with_count}",
                {
                    "marker": "param/marker",
                    "limit": "param/queue_limit",
                    "detailed": "param/detailed",
                },
                ["GET"],
            ),
            "rel/queue": resource(
                "/v2/queues/{queue_name}",
                {"queue_name": queue},
                ["PUT", "GET", "HEAD", "PATCH", "DELETE"],
            ),
            "rel/queue_stats": resource(
                "/v2/queues/{queue_name}/stats", {"queue_name": queue}, ["GET"]
            ),
            "rel/queue_schema": resource(
                "/v2/queues/{queue_name}/schema", {"queue_name": queue}, ["GET", "PUT", "DELETE"]
            ),
            "rel/queue_share": resource(
                "/v2/queues/{queue_name}/share", {"queue_name": queue}, ["POST"]
            ),
            "rel/messages": resource(
                "/v2/queues/{queue_name}/messages"
                "{?marker,limit,echo,include_claimed,include_delayed,wait}",
                {"queue_name": queue, "marker": "param/marker", "limit": "param/messages_limit"},
                ["GET", "POST", "DELETE"],
            ),
            "rel/claims": resource(
                "/v2/queues/{queue_name}/claims{?limit,wait}",
                {"queue_name": queue, "limit": "param/claim_limit"},
                ["POST"],
            ),
            # Subscriptions: Zaqar's four entries, as its homedoc has them.
            "rel/subscriptions_get": resource(
                "/v2/queues/{queue_name}/subscriptions{?marker,limit}",
                {
                    "queue_name": queue,
                    "marker": "param/marker",
                    "limit": "param/subscription_limit",
                },
                ["GET"],
            ),
            "rel/subscriptions_post": resource(
                "/v2/queues/{queue_name}/subscriptions",
                {"queue_name": queue, "limit": "param/subscription_limit"},
                ["POST"],
                accept_post=True,
            ),
            "rel/subscription": resource(
                "/v2/queues/{queue_name}/subscriptions/{subscriptions_id}",
                {"queue_name": queue, "subscriptions_id": "param/subscriptions_id"},
                ["GET", "DELETE"],
            ),
            "rel/subscription_patch": resource(
                "/v2/queues/{queue_name}/subscriptions/{subscriptions_id}",
                {"queue_name": queue, "subscriptions_id": "param/subscriptions_id"},
                ["PATCH"],
                accept_post=True,
            ),
            "rel/ping": resource("/v2/ping", {}, ["GET", "HEAD"]),
            "rel/health": resource("/v2/health", {}, ["GET"]),
        }
    }


class HomeEndpoints(Handlers):
    def __init__(self, ctx: ProtocolContext[HTTPSettings]) -> None:
        super().__init__(ctx)
        self.home = _home_document()

    def _storage_down(self, failure: Failure) -> bool | Failure:
        if failure.check(CancelledError):  # the client hung up: storage is not down
            return failure
        log.failure("storage check failed", failure)
        return False

    async def _storage_ok(self) -> bool:
        """A cheap storage round trip."""
        ok: bool = await self.service.ping().addErrback(self._storage_down)
        return ok

    async def get_versions(self, call: Call) -> Response:
        return Response(300, VERSIONS)

    async def get_home(self, call: Call) -> Response:
        # Zaqar's homedoc lets caches keep it for a day.
        return Response(200, self.home, {"Cache-Control": "max-age=86400"}, content_type=HOME_TYPE)

    async def openapi(self, call: Call) -> Response:
        """The OpenAPI document of the API (``protocols/http/openapi.py``)."""
        return Response(200, headers={"Cache-Control": "max-age=86400"}, body=document_bytes())

    async def ping(self, call: Call) -> Response:
        """GET and HEAD: 204 while storage answers, 503 when it does not (Zaqar's GET;
        Zaqar's HEAD always says 204, here both check, for load balancers using either)."""
        if await self._storage_ok():
            return Response(204)
        return Response(503, headers={"Retry-After": RETRY_AFTER})

    async def health(self, call: Call) -> Response:
        """Zaqar-like health: whether storage answered, and how long it took; 503 while
        it does not (the core's ping gives up after a short timeout: never a hang)."""
        start = self._now()
        ok = await self._storage_ok()
        status = {"seconds": self._now() - start, "ref": None, "succeeded": ok}
        return Response(
            200 if ok else 503,
            {
                "catalog_reachable": True,
                "storage": {"storage_reachable": ok, "operation_status": {"ping": status}},
            },
            headers={} if ok else {"Retry-After": RETRY_AFTER},
        )
