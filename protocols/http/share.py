"""``POST /v2/queues/{q}/share``: a pre-signed URL of the queue (Zaqar's ``urls.Resource``),
checked and answered as Zaqar does; the signing is ``protocols.http.signed``."""

from __future__ import annotations

from qgate.protocols.context import ProtocolContext
from qgate.protocols.http.call import Call
from qgate.protocols.http.errors import bad_body, bad_request
from qgate.protocols.http.handlers import Handlers, queue_path
from qgate.protocols.http.router import Response
from qgate.protocols.http.settings import HTTPSettings
from qgate.protocols.http.signed import SignedURLs, shown

#: The keys a share request may have, and the paths it may sign (Zaqar's).
KNOWN_KEYS = frozenset({"paths", "methods", "expires"})
VALID_PATHS = frozenset({"messages", "subscriptions", "claims"})


class ShareEndpoints(Handlers):
    def __init__(self, ctx: ProtocolContext[HTTPSettings]) -> None:
        super().__init__(ctx)
        self.signed = SignedURLs(ctx.settings.signed_url_secret_key, ctx.reactor)

    async def share_queue(self, call: Call) -> Response:
        """Signs ``paths`` (default ``messages``) of the queue for ``methods`` (default
        GET) until ``expires`` (default a day), for the caller's project. Zaqar answers
        200 (not 201: nothing is created) and checks nothing about the queue itself."""
        call.client_id()
        tenant, name = await self._scope(call)
        document = call.json()
        if not isinstance(document, dict):
            raise bad_body("Document type not supported.")
        unknown = set(document) - KNOWN_KEYS
        if unknown:
            raise bad_request(f"Unknown keys: {shown(unknown)}")
        paths = document.get("paths")
        if not paths:
            paths = ["messages"]
        elif not isinstance(paths, list):
            raise bad_request("`paths` must be a non-empty list")
        else:
            invalid = [p for p in paths if not isinstance(p, str) or p not in VALID_PATHS]
            if invalid:
                raise bad_request(f"Invalid paths: {shown(invalid)}")
        try:
            signed = self.signed.create(
                tenant,
                [f"{queue_path(name)}/{path}" for path in paths],
                methods=document.get("methods"),
                expires=document.get("expires"),
            )
        except ValueError as e:
            raise bad_request(str(e)) from None
        return Response(200, signed)
