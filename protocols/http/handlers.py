"""What every group of Zaqar endpoints shares: the service, the API's bounds, the clock,
paths and links, and the Avro forms of message answers."""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from typing import Any
from urllib.parse import urlencode

from qgate.core.avro_bodies import AVRO_BINARY, avro_writer
from qgate.core.errors import QueueNotFound
from qgate.core.interfaces import IQueueService
from qgate.core.model import Message, QueueOptions
from qgate.protocols.context import ProtocolContext
from qgate.protocols.http import avro, wire
from qgate.protocols.http.call import Call
from qgate.protocols.http.errors import bad_request
from qgate.protocols.http.router import Response
from qgate.protocols.http.settings import HTTPSettings


def queue_path(name: str) -> str:
    return f"/v2/queues/{name}"


def next_link(path: str, params: Iterable[tuple[str, str]]) -> list[dict[str, str]]:
    return [{"rel": "next", "href": f"{path}?{urlencode(list(params))}"}]


#: Zaqar's description of a message or claim ``limit`` out of range.
LIMIT_RANGE = "Limit must be at least 1 and may not be greater than {0}."


def check_limit(value: int, high: int, message: str = LIMIT_RANGE) -> int:
    if not 0 < value <= high:
        raise bad_request(message.format(high))
    return value


def query_limit(call: Call, high: int, message: str = LIMIT_RANGE) -> int:
    """The ``limit`` query parameter, 1 to ``high`` (Zaqar's default page when absent)."""
    return check_limit(call.query_int("limit", wire.DEFAULT_LIMIT), high, message)


class Handlers:
    """Handlers bound to one gateway context (each group of endpoints is one)."""

    def __init__(self, ctx: ProtocolContext[HTTPSettings]) -> None:
        self.service: IQueueService = ctx.service
        self.bounds = wire.Bounds.from_limits(ctx.service.limits, ctx.settings.max_wait)
        # The service's defaults, used when a PATCH removes a reserved key.
        self.defaults: QueueOptions = ctx.service.default_options
        #: Zaqar's ``enable_checksum``: messages shown carry their body's MD5.
        self.checksums: bool = ctx.settings.enable_checksum

    def _now(self) -> float:
        return float(self.service.clock.seconds())

    async def _scope(self, call: Call) -> tuple[str, str]:
        """(tenant, queue) of a queue endpoint, checked in Zaqar's hook order."""
        tenant = await call.tenant()
        return tenant, call.queue()

    async def _bodies(
        self, tenant: str, name: str, messages: Sequence[Message]
    ) -> Mapping[int, Any] | None:
        """The JSON of the Avro bodies among ``messages``, by marker (None when there are
        none: the common case costs no call)."""
        if not any(avro_writer(m.content_type, m.body) is not None for m in messages):
            return None
        bodies: Mapping[int, Any] = await self.service.decode_bodies(tenant, name, messages)
        return bodies

    async def _avro_page(
        self,
        tenant: str,
        name: str,
        messages: Sequence[Message],
        claim_id: str | None = None,
        status: int = 200,
        headers: Mapping[str, str] | None = None,
    ) -> Response:
        """``Accept: avro/binary``: a container file of envelopes, Avro bodies in the
        queue's current schema (which the file's metadata carries)."""
        resolved = await self.service.resolve_bodies(tenant, name, messages)
        schema = None
        if messages:
            try:
                found = await self.service.get_schema(tenant, name)
            except QueueNotFound:
                found = None
            schema = None if found is None else found[1]
        data = avro.envelopes_file(resolved, self._now(), claim_id, schema)
        return Response(status, headers=dict(headers or {}), content_type=AVRO_BINARY, body=data)
