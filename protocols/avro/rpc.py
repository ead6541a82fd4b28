"""Avro RPC over HTTP at ``/avro`` (spec "Protocol Wire Format", "HTTP as Transport").

``rpc_resource(ctx)`` is the web mount of the registry entry ``PROTOCOLS["avro"]`` (settings
``[avro]``): a ``twisted.web`` resource mounted beside the Zaqar API on every HTTP listener.

* ``POST /avro`` with ``Content-Type: avro/binary``: the body is one framed call request;
  the answer is the framed call response, always 200 (errors travel inside it, as the
  spec says). A body that is not Avro RPC at all (bad framing, unreadable handshake) gets
  400 with a Zaqar-style JSON error; another content type gets 415.
* ``GET /avro``: the protocol (``qgate.avpr``) as JSON, for clients to generate code from.

Each message of ``qgate.avpr`` calls ``IQueueService`` and nothing else. Core errors come
back as the declared error ``QGateError {title, description, field}``.

Tenant: from the HTTP request's ``X-Project-Id`` and ``X-Auth-Token`` headers, checked by
``ctx.auth`` (once per request, when the message needs a tenant: ``ping`` does not). Call
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

from qgate.core import jsonsafe
from qgate.core.auth import IAuthenticator
from qgate.core.avro_bodies import format_fingerprint, media_type
from qgate.core.errors import InvalidArgument, QGateError
from qgate.core.interfaces import IQueueService
from qgate.core.model import DEFAULT_PRIORITY, Claim, Message, NewMessage, Overflow, QueueOptions
from qgate.protocols.avro import qgate_protocol
from qgate.protocols.avro.ipc import CONTENT_TYPE, AvroError, Responder
from qgate.protocols.avro.settings import AvroSettings
from qgate.protocols.context import ProtocolContext
from qgate.protocols.web import JSON_CONTENT_TYPE, Answer, error_answer, header, serve

__all__ = ["AvroRpcResource", "QGateCalls", "rpc_resource"]

log = Logger()


def _error(error: QGateError) -> AvroError:
    """A core error as the protocol's declared error."""
    return AvroError(
        "QGateError",
        {"title": error.title, "description": error.description, "field": error.field},
    )


def _options(record: Mapping[str, Any] | None, defaults: QueueOptions) -> QueueOptions | None:
    """The core options of a ``QueueOptions`` record; nulls take ``defaults``."""
    if record is None:
        return None

    def pick(key: str, default: Any) -> Any:
        value = record.get(key)
        return default if value is None else value

    return QueueOptions(
        durable=record["durable"],
        default_ttl=pick("defaultTtl", defaults.default_ttl),
        default_delay=pick("defaultDelay", defaults.default_delay),
        max_messages=record.get("maxMessages"),
        max_bytes=record.get("maxBytes"),
        overflow=Overflow(record.get("overflow", "REJECT").lower()),
        max_claim_count=record.get("maxClaimCount"),
        dead_letter_queue=record.get("deadLetterQueue"),
        dead_letter_ttl=record.get("deadLetterTtl"),
        schema_text=record.get("schema"),
    )


def _options_record(options: QueueOptions) -> dict[str, Any]:
    return {
        "durable": options.durable,
        "defaultTtl": options.default_ttl,
        "defaultDelay": options.default_delay,
        "maxMessages": options.max_messages,
        "maxBytes": options.max_bytes,
        "overflow": options.overflow.value.upper(),
        "maxClaimCount": options.max_claim_count,
        "deadLetterQueue": options.dead_letter_queue,
        "deadLetterTtl": options.dead_letter_ttl,
        "schema": options.schema_text,
    }


def _metadata(text: str | None) -> dict[str, Any] | None:
    if text is None:
        return None
    try:
        value = jsonsafe.loads(text)
    except jsonsafe.JSONValueError:
        value = None
    if not isinstance(value, dict):
        raise InvalidArgument("metadata must be a JSON object, as text", field="metadata")
    return value


def _message_record(message: Message, now: float, claim_id: str | None = None) -> dict[str, Any]:
    if claim_id is None and message.is_claimed(now):
        claim_id = message.claim_id
    return {
        "id": message.id,
        "age": message.age(now),
        "ttl": message.ttl,
        "claimId": claim_id,
        "claimCount": message.claim_count,
        "priority": message.priority,
        "body": message.body,
        "contentType": message.content_type,
        "headers": dict(message.headers),
    }


@dataclass
class QGateCalls:
    """The messages of ``qgate.avpr`` for one HTTP request (one caller, one tenant)."""

    service: IQueueService
    auth: IAuthenticator
    project: str | None
    token: str | None
    _tenant: str | None = field(default=None, init=False)

    async def __call__(self, name: str, params: dict[str, Any]) -> Any:
        handler = getattr(self, f"rpc_{name}", None)
        if handler is None:
            raise AvroError.system(f"message {name} is not served here")
        try:
            return await handler(**params)
        except QGateError as e:
            raise _error(e) from None

    async def tenant(self) -> str:
        if self._tenant is None:
            self._tenant = await self.auth.authenticate(self.project, self.token)
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
        core = _options(options, self.service.default_options)
        _, created = await self.service.create_queue(
            await self.tenant(), queue, core, _metadata(metadata)
        )
        return bool(created)

    async def rpc_getQueue(self, queue: str) -> dict[str, Any]:
        found = await self.service.get_queue(await self.tenant(), queue)
        return {
            "name": found.name,
            "options": _options_record(found.options),
            "metadata": jsonsafe.dumps_lenient(dict(found.metadata)).decode("utf-8"),
        }

    async def rpc_deleteQueue(self, queue: str) -> bool:
        return bool(await self.service.delete_queue(await self.tenant(), queue))

    async def rpc_publish(self, queue: str, messages: list[dict[str, Any]]) -> list[str]:
        new = [
            NewMessage(
                body=m["body"],
                content_type=m["contentType"],
                headers=m["headers"],
                ttl=m["ttl"],
                delay=m["delay"],
                priority=DEFAULT_PRIORITY if m["priority"] is None else m["priority"],
            )
            for m in messages
        ]
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
            self.service.release(await self.tenant(), queue, claim.id).addErrback(
                lambda f: log.failure("releasing an unanswered claim failed", f)
            )
            raise
        now = self._now()
        return {
            "id": claim.id,
            "ttl": claim.ttl,
            "grace": claim.grace,
            "age": claim.age(now),
            "messages": [_message_record(m, now, claim.id) for m in messages],
        }

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
        return [_message_record(m, now) for m in await self._messages(queue, found)]

    async def rpc_stats(self, queue: str) -> dict[str, Any]:
        stats = await self.service.queue_stats(await self.tenant(), queue)
        now = self._now()
        return {
            "total": stats.total,
            "available": stats.available,
            "claimed": stats.claimed,
            "delayed": stats.delayed,
            "oldestAge": None if stats.oldest is None else stats.oldest.age(now),
            "newestAge": None if stats.newest is None else stats.newest.age(now),
        }

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
