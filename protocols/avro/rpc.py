"""Avro RPC over HTTP at ``/avro`` (spec "Protocol Wire Format", "HTTP as Transport").

``rpc_resource(ctx)`` is the web mount of the registry entry ``PROTOCOLS["avro"]`` (settings
``[avro]``): a ``twisted.web`` resource mounted beside the Zaqar API on every HTTP listener.

* ``POST /avro`` with ``Content-Type: avro/binary``: the body is one framed call request;
  the answer is the framed call response, always 200 (errors travel inside it, as the
  spec says). A body that is not Avro RPC at all (bad framing, unreadable handshake) gets
  400 with a Zaqar-style JSON error; another content type gets 415.
* ``GET /avro``: the protocol (``qgate.avpr``) as JSON, for clients to generate code from.

Each message of ``qgate.avpr`` calls ``IQueueService`` and nothing else; ``records``
translates its records to and from core values. Core errors come back as the declared
error ``QGateError {title, description, field}``.

Tenant: from the HTTP request's ``X-Project-Id`` and ``X-Auth-Token`` headers, checked by
``ctx.auth`` (once per request, when the message needs a tenant: ``ping`` does not). The
HTTP connection then counts toward that tenant's ``max_connections``, as the Zaqar API's
do (``protocols.web.count_connection``). Call
metadata is not used for this: headers are what every HTTP client can set, and apache
avro's requestor offers no way to set call metadata.

When the client hangs up, the call's Deferred is cancelled, which cancels the core call it
waits on: a waiting ``claim`` or ``observe`` gives up its wait at once.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from twisted.logger import Logger
from twisted.web.resource import IResource, Resource
from twisted.web.server import Request

from qgate.core.auth import IAuthenticator
from qgate.core.avro_bodies import format_fingerprint, media_type
from qgate.core.errors import InvalidArgument, QGateError
from qgate.core.interfaces import IQueueService
from qgate.core.model import Claim, Message
from qgate.protocols.avro import qgate_protocol, records
from qgate.protocols.avro.ipc import CONTENT_TYPE, AvroError, Responder
from qgate.protocols.avro.settings import AvroSettings
from qgate.protocols.context import ProtocolContext
from qgate.protocols.web import (
    JSON_CONTENT_TYPE,
    Answer,
    count_connection,
    error_answer,
    header,
    serve,
)

__all__ = ["AvroRpcResource", "QGateCalls", "rpc_resource"]

log = Logger()


@dataclass
class QGateCalls:
    """The messages of ``qgate.avpr`` for one HTTP request (one caller, one tenant)."""

    service: IQueueService
    auth: IAuthenticator
    project: str | None
    token: str | None
    #: The client's address, for throttling failed authentications.
    peer: str | None = None
    #: The HTTP request, whose connection counts toward the tenant's max_connections.
    request: Request | None = None
    _tenant: str | None = field(default=None, init=False)

    async def __call__(self, name: str, params: dict[str, Any]) -> Any:
        handler = getattr(self, f"rpc_{name}", None)
        if handler is None:
            raise AvroError.system(f"message {name} is not served here")
        try:
            return await handler(**params)
        except QGateError as e:
            raise records.error(e) from None

    async def tenant(self) -> str:
        if self._tenant is None:
            tenant = await self.auth.authenticate(self.project, self.token, peer=self.peer)
            if self.request is not None:
                count_connection(self.request, self.service, tenant)
            self._tenant = tenant
        return self._tenant

    def _now(self) -> float:
        return float(self.service.clock.seconds())

    async def _messages(self, queue: str, messages: Sequence[Message]) -> list[Message]:
        """Avro bodies rewritten into the queue's current schema (as HTTP readers get)."""
        resolved: list[Message] = await self.service.resolve_bodies(
            await self.tenant(), queue, messages
        )
        return resolved

    # -- the protocol's messages -----------------------------------------------------------

    async def rpc_ping(self) -> bool:
        return bool(await self.service.ping())

    async def rpc_createQueue(
        self, queue: str, options: Mapping[str, Any] | None, metadata: str | None
    ) -> bool:
        core = records.options(options, self.service.default_options)
        _, created = await self.service.create_queue(
            await self.tenant(), queue, core, records.metadata(metadata)
        )
        return bool(created)

    async def rpc_getQueue(self, queue: str) -> dict[str, Any]:
        return records.queue_record(await self.service.get_queue(await self.tenant(), queue))

    async def rpc_deleteQueue(self, queue: str) -> bool:
        return bool(await self.service.delete_queue(await self.tenant(), queue))

    async def rpc_publish(self, queue: str, messages: list[dict[str, Any]]) -> list[str]:
        new = [records.new_message(m) for m in messages]
        ids: list[str] = await self.service.publish(await self.tenant(), queue, new)
        return ids

    async def rpc_claim(
        self, queue: str, limit: int, ttl: float, grace: float, wait: float
    ) -> dict[str, Any] | None:
        claim: Claim | None = await self.service.claim(
            await self.tenant(), queue, limit=limit, ttl=ttl, grace=grace, wait=wait
        )
        if claim is None:
            return None
        try:
            messages = await self._messages(queue, claim.messages)
        except BaseException:
            # Committed but not answered: give the messages back (as HTTP and STOMP do).
            self.service.release(await self.tenant(), queue, claim.id, undelivered=True).addErrback(
                lambda f: log.failure("releasing an unanswered claim failed", f)
            )
            raise
        return records.claim_record(claim, messages, self._now())

    async def rpc_renewClaim(self, queue: str, claimId: str, ttl: float, grace: float) -> None:
        await self.service.renew_claim(await self.tenant(), queue, claimId, ttl, grace)

    async def rpc_ack(self, queue: str, claimId: str, ids: list[str]) -> list[str]:
        done: list[str] = await self.service.ack(await self.tenant(), queue, claimId, ids)
        return done

    async def rpc_release(
        self, queue: str, claimId: str, ids: list[str] | None, delay: float
    ) -> int:
        return int(
            await self.service.release(await self.tenant(), queue, claimId, ids, delay=delay)
        )

    async def rpc_observe(
        self,
        queue: str,
        after: str | None,
        limit: int,
        includeClaimed: bool,
        includeDelayed: bool,
        wait: float,
    ) -> list[dict[str, Any]]:
        found = await self.service.observe(
            await self.tenant(),
            queue,
            after=after,
            limit=limit,
            include_claimed=includeClaimed,
            include_delayed=includeDelayed,
            wait=wait,
        )
        now = self._now()
        return [records.message_record(m, now) for m in await self._messages(queue, found)]

    async def rpc_stats(self, queue: str) -> dict[str, Any]:
        stats = await self.service.queue_stats(await self.tenant(), queue)
        return records.stats_record(stats, self._now())

    async def rpc_setSchema(self, queue: str, schema: str) -> str:
        fingerprint = await self.service.set_schema(await self.tenant(), queue, schema)
        return format_fingerprint(fingerprint)

    async def rpc_getSchema(self, queue: str) -> str | None:
        found = await self.service.get_schema(await self.tenant(), queue)
        return None if found is None else str(found[1])

    async def rpc_clearSchema(self, queue: str) -> None:
        await self.service.clear_schema(await self.tenant(), queue)


class AvroRpcResource(Resource):
    """``/avro``: Avro RPC over HTTP, one call per POST (``protocols.web.serve`` runs it)."""

    isLeaf = True

    def __init__(self, ctx: ProtocolContext[AvroSettings]) -> None:
        super().__init__()
        self.service = ctx.service
        self.auth = ctx.auth
        self.max_body = ctx.settings.max_request_body
        self.responder = Responder(qgate_protocol(), self._unbound, on_error=self._report)

    @staticmethod
    def _unbound(name: str, params: dict[str, Any]) -> Any:
        raise AssertionError("every call is served with its request's dispatch")

    @staticmethod
    def _report(error: BaseException) -> None:
        log.error("Avro RPC call failed: {error!r}", error=error)

    def render_GET(self, request: Request) -> bytes:
        request.setHeader(b"Content-Type", JSON_CONTENT_TYPE.encode("ascii"))
        return self.responder.protocol.text.encode("utf-8")

    def render_POST(self, request: Request) -> object:
        return serve(request, self._call(request))

    async def _call(self, request: Request) -> Answer:
        if media_type(header(request, b"Content-Type") or "") != CONTENT_TYPE:
            return error_answer(
                415, "Unsupported media type", f"Avro RPC takes {CONTENT_TYPE} bodies."
            )
        content = request.content
        body = b"" if content is None else content.read(self.max_body + 1)
        calls = QGateCalls(
            self.service,
            self.auth,
            header(request, b"X-Project-Id") or None,
            header(request, b"X-Auth-Token") or None,
            getattr(request.getClientAddress(), "host", None),
            request,
        )
        try:
            response = await self.responder.respond_framed(
                body, max_size=self.max_body, dispatch=calls
            )
        except InvalidArgument as e:
            # Not Avro RPC at all: bad framing, an unreadable handshake, too large.
            return error_answer(400, e.title, e.description)
        return Answer(200, response, CONTENT_TYPE)


def rpc_resource(ctx: ProtocolContext[AvroSettings]) -> IResource:
    """The registry entry: the ``/avro`` resource of an HTTP listener."""
    return AvroRpcResource(ctx)
