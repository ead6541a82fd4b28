"""The admin listener's JSON API: what the console and ``qgate queues|status`` call.

    GET    /api/status                          version, listeners, storage, workers
    GET    /api/queues?limit=N                  deepest N queues of every tenant, with rates
    GET    /api/queues/T/Q                      one queue: stats, options, DLQ sources
    GET    /api/queues/T/Q/messages?limit&after peek (claimed and delayed too; previews)
    POST   /api/queues/T/Q/messages             publish a test message {"body", ...}
    POST   /api/queues/T/Q/purge                delete every message
    POST   /api/queues/T/Q/move                 {"to": queue, "limit": n}: DLQ back to source
    DELETE /api/queues/T/Q                      delete the queue
    POST   /api/reload                          reload TLS certificates (as SIGHUP does)

Every call goes to core (``IQueueService`` + ``IQueueAdmin``) or to the gateway's
``IGatewayStatus``; errors answer ``{"title", "description"}`` like the public API.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import unquote

from twisted.web.server import Request

from qgate.core.admin import IQueueAdmin
from qgate.core.errors import InvalidArgument, QGateError, QueueNotFound
from qgate.core.model import Message, NewMessage
from qgate.protocols.context import ProtocolContext
from qgate.protocols.web import JSON_CONTENT_TYPE, Answer, error_answer


def ok(document: Any, status: int = 200) -> Answer:
    return Answer(status, json.dumps(document).encode(), JSON_CONTENT_TYPE)


@dataclass(frozen=True)
class Call:
    """One admin request as plain values (from HTTP, or from ``qgate ... --db``)."""

    method: str
    path: list[str]
    query: Mapping[str, str] = field(default_factory=dict)
    body: bytes = b""

    def number(self, name: str, default: int) -> int:
        value = self.query.get(name)
        if value is None:
            return default
        try:
            return int(value)
        except ValueError:
            raise InvalidArgument(f"{name} must be a whole number", field=name) from None

    def document(self) -> dict[str, Any]:
        if not self.body:
            return {}
        try:
            document = json.loads(self.body)
        except ValueError:
            raise InvalidArgument("the body is not JSON") from None
        if not isinstance(document, dict):
            raise InvalidArgument("the body must be a JSON object")
        return document


def call_of(request: Request, method: str, segments: list[str]) -> Call:
    query = {
        k.decode("utf-8", "replace"): v[0].decode("utf-8", "replace")
        for k, v in (request.args or {}).items()
        if v
    }
    body = request.content.read() if request.content is not None else b""
    return Call(method, [unquote(s) for s in segments], query, body)


def preview(body: bytes, limit: int) -> dict[str, Any]:
    """A body as an operator can look at it: text when it decodes, else hex; cut at
    ``limit`` bytes."""
    cut = body[:limit]
    try:
        return {"text": cut.decode("utf-8"), "size": len(body), "truncated": len(body) > limit}
    except UnicodeDecodeError:
        return {"hex": cut.hex(), "size": len(body), "truncated": len(body) > limit}


def message_document(m: Message, now: float, limit: int) -> dict[str, Any]:
    claimed = m.claim_id is not None and (m.claim_expires or 0) > now
    state = "claimed" if claimed else "delayed" if m.available_at > now else "available"
    return {
        "id": str(m.marker),
        "state": state,
        "claim_id": m.claim_id if claimed else None,
        "claim_expires_in": round((m.claim_expires or 0) - now, 1) if claimed else None,
        "claim_count": m.claim_count,
        "age": round(now - m.created_at, 1),
        "expires_in": round(m.expires_at - now, 1),
        "priority": m.priority,
        "content_type": m.content_type,
        "headers": dict(m.headers),
        "body": preview(m.body, limit),
    }


class AdminAPI:
    """The handlers of ``/api/...``, by method and path shape."""

    def __init__(self, ctx: ProtocolContext[Any]) -> None:
        self._service = ctx.service
        self._admin = IQueueAdmin(ctx.service)
        self._status = ctx.status
        self._clock = ctx.reactor
        self._preview = ctx.settings.preview_bytes

    async def answer(self, call: Call) -> Answer:
        try:
            return await self._route(call, call.method, call.path)
        except QueueNotFound as e:
            return error_answer(404, "Not found", str(e))
        except QGateError as e:
            return error_answer(400, e.title, e.description)

    async def _route(self, call: Call, method: str, path: list[str]) -> Answer:
        match method, path:
            case "GET", ["status"]:
                return ok(await self._status.status())
            case "POST", ["reload"]:
                return ok({"listeners": self._status.reload()})
            case "GET", ["queues"]:
                return await self._queues(call)
            case "GET", ["queues", tenant, name]:
                return await self._queue(tenant, name)
            case "DELETE", ["queues", tenant, name]:
                await self._service.delete_queue(tenant, name)
                return ok({"deleted": True})
            case "GET", ["queues", tenant, name, "messages"]:
                return await self._peek(call, tenant, name)
            case "POST", ["queues", tenant, name, "messages"]:
                return await self._publish(call, tenant, name)
            case "POST", ["queues", tenant, name, "purge"]:
                return ok({"purged": await self._service.purge_queue(tenant, name)})
            case "POST", ["queues", tenant, name, "move"]:
                return await self._move(call, tenant, name)
        return error_answer(404, "Not found", "no such admin resource")

    async def _queues(self, call: Call) -> Answer:
        report = await self._admin.queue_depths(call.number("limit", 100))
        rates = self._status.rates
        queues = []
        for q in report.queues:
            published, acked = rates.of(q.tenant, q.name)
            queues.append(
                {
                    "tenant": q.tenant,
                    "name": q.name,
                    "durable": q.durable,
                    "available": q.available,
                    "claimed": q.claimed,
                    "delayed": q.delayed,
                    "total": q.total,
                    "oldest_age": None
                    if q.oldest_created is None
                    else round(self._clock.seconds() - q.oldest_created, 1),
                    "published": published,
                    "acked": acked,
                }
            )
        others = report.others
        return ok(
            {
                "queues": queues,
                "count": report.count,
                "others": {"total": others.total, "queues": report.count - len(queues)},
                "waiters": self._admin.waiters(),
                "time": self._clock.seconds(),
            }
        )

    async def _queue(self, tenant: str, name: str) -> Answer:
        queue = await self._service.get_queue(tenant, name)
        stats = await self._service.queue_stats(tenant, name)
        sources = await self._admin.dead_letter_sources(tenant, name)
        published, acked = self._status.rates.of(tenant, name)
        options = queue.options
        return ok(
            {
                "tenant": tenant,
                "name": name,
                "durable": options.durable,
                "dead_letter_queue": options.dead_letter_queue,
                "max_claim_count": options.max_claim_count,
                "dead_letter_sources": sources,
                "total": stats.total,
                "available": stats.available,
                "claimed": stats.claimed,
                "delayed": stats.delayed,
                "published": published,
                "acked": acked,
                "metadata": dict(queue.metadata),
            }
        )

    async def _peek(self, call: Call, tenant: str, name: str) -> Answer:
        limit = call.number("limit", 20)
        messages = await self._admin.peek(tenant, name, limit, call.query.get("after"))
        now = self._clock.seconds()
        return ok({"messages": [message_document(m, now, self._preview) for m in messages]})

    async def _publish(self, call: Call, tenant: str, name: str) -> Answer:
        document = call.document()
        body = document.get("body", "")
        if not isinstance(body, str):
            raise InvalidArgument("body must be a string", field="body")
        headers = document.get("headers", {})
        if not isinstance(headers, dict) or not all(
            isinstance(k, str) and isinstance(v, str) for k, v in headers.items()
        ):
            raise InvalidArgument("headers must be an object of strings", field="headers")
        content_type = document.get("content_type", "text/plain")
        if not isinstance(content_type, str):
            raise InvalidArgument("content_type must be a string", field="content_type")
        message = NewMessage(body.encode(), content_type=content_type, headers=headers)
        ids = await self._service.publish(tenant, name, [message])
        return ok({"ids": ids}, 201)

    async def _move(self, call: Call, tenant: str, name: str) -> Answer:
        document = call.document()
        target = document.get("to")
        if target is None:
            sources = await self._admin.dead_letter_sources(tenant, name)
            if len(sources) != 1:
                raise InvalidArgument(
                    f"name the target queue ('to'): {len(sources)} queues dead-letter into "
                    f"{name!r}",
                    field="to",
                )
            target = sources[0]
        limit = document.get("limit", 1000)
        moved = await self._admin.move_messages(tenant, name, target, limit)
        return ok({"moved": moved, "to": target})
