"""The queue endpoints: list, create, show, update (JSON patch of metadata), delete,
stats and purge, and the queue's Avro schema (``/v2/queues/{q}/schema``)."""

from __future__ import annotations

import copy
import dataclasses
import json
from typing import Any

from qgate.core.avro_bodies import format_fingerprint
from qgate.core.errors import QueueNotFound
from qgate.core.model import Queue
from qgate.protocols.http import wire
from qgate.protocols.http.call import Call
from qgate.protocols.http.errors import HTTPError, bad_body, bad_request, not_found
from qgate.protocols.http.handlers import Handlers, next_link, query_limit, queue_path
from qgate.protocols.http.patch import PATCH_TYPE, apply_patch, parse_patch
from qgate.protocols.http.router import Response
from qgate.protocols.http.subscriptions import check_retry_policy


class QueueEndpoints(Handlers):
    async def list_queues(self, call: Call) -> Response:
        tenant = await call.tenant()
        limit = query_limit(
            call, self.bounds.queues_page, "Limit must be at least 1 and no greater than {0}."
        )
        marker = call.query("marker")
        detailed = call.query_bool("detailed")
        queues = await self.service.list_queues(tenant, marker=marker, limit=limit)
        documents = []
        for queue in queues:
            document: dict[str, Any] = {"name": queue.name, "href": queue_path(queue.name)}
            if detailed:
                document["metadata"] = wire.render_metadata(queue, self.bounds)
            documents.append(document)
        links = []
        if queues:
            links = next_link("/v2/queues", self._next_params(call, queues[-1].name))
        body: dict[str, Any] = {"queues": documents, "links": links}
        if call.query_bool("with_count"):
            count = await self._count_queues(tenant)
            if count:
                body["count"] = count  # Zaqar leaves a count of 0 out
        return Response(200, body)

    @staticmethod
    def _next_params(call: Call, marker: str) -> list[tuple[str, str]]:
        """The query of the next page as Zaqar writes it: the parameters given (not
        ``with_count``), in its order and as it parsed them, with the new marker (last
        when none was given). ``name`` is repeated; like Zaqar's Redis store, qgate does
        not filter by it."""
        params: list[tuple[str, str]] = []
        if call.has_query("marker"):
            params.append(("marker", marker))
        if call.has_query("limit"):
            params.append(("limit", str(call.query_int("limit"))))
        if call.has_query("detailed"):
            params.append(("detailed", "true" if call.query_bool("detailed") else "false"))
        if call.has_query("name"):
            params.append(("name", call.query("name") or ""))
        if not call.has_query("marker"):
            params.append(("marker", marker))
        return params

    async def _count_queues(self, tenant: str) -> int:
        """``with_count``: the core has no count, so page through the tenant's queues."""
        count, marker, page = 0, None, self.service.limits.max_page
        while True:
            queues = await self.service.list_queues(tenant, marker=marker, limit=page)
            count += len(queues)
            if len(queues) < page:
                return count
            marker = queues[-1].name

    def metadata_too_large(self, patch: bool) -> HTTPError:
        """Zaqar's ``queue_metadata_length`` refusal (a body error on PATCH, an API error
        on PUT, as Zaqar titles them)."""
        description = f"Queue metadata is too large. Max size: {self.bounds.metadata_size}"
        return bad_body(description) if patch else bad_request(description)

    async def create_queue(self, call: Call) -> Response:
        tenant, name = await self._scope(call)
        data = call.body()
        if len(data) > self.bounds.metadata_size:
            raise self.metadata_too_large(patch=False)
        metadata: dict[str, Any] = {}
        if data.strip():
            document = call.json()
            if not isinstance(document, dict):
                raise bad_body("Document type not supported.")
            metadata = document
        wire.check_metadata(metadata, self.bounds)
        check_retry_policy(metadata)  # Zaqar checks the queue's _retry_policy too
        options = None
        if any(key in wire.OPTION_KEYS for key in metadata):
            options = wire.options_for(metadata, self.defaults, self.defaults, metadata)
        schema = metadata.pop(wire.SCHEMA_KEY, None)
        if schema is not None:
            # Set at creation, in one step: no message can land before the schema.
            options = dataclasses.replace(
                options or self.defaults, schema_text=wire.schema_text(schema)
            )
        _, created = await self.service.create_queue(tenant, name, options, metadata)
        return Response(201 if created else 204, headers={"Location": queue_path(name)})

    async def get_queue(self, call: Call) -> Response:
        """The queue's metadata. A queue never created reads as one with the defaults
        (Zaqar's queues are lazy: any name is an empty queue) and is not created."""
        tenant, name = await self._scope(call)
        try:
            queue = await self.service.get_queue(tenant, name)
        except QueueNotFound:
            queue = Queue(tenant, name, self.defaults, {}, self._now())
        return Response(200, wire.render_metadata(queue, self.bounds))

    async def queue_exists(self, call: Call) -> Response:
        """HEAD: 204 when the queue exists, else 404 (python-zaqarclient's ``exists()``)."""
        tenant, name = await self._scope(call)
        await self.service.get_queue(tenant, name)
        return Response(204)

    async def update_queue(self, call: Call) -> Response:
        tenant, name = await self._scope(call)
        data = call.body()
        if len(data) > self.bounds.metadata_size:
            raise self.metadata_too_large(patch=True)
        media = (call.header("Content-Type") or "").split(";", 1)[0].strip().lower()
        if media != PATCH_TYPE:
            raise HTTPError(
                415,
                "Unsupported media type",
                f"Accepted media type for PATCH: {PATCH_TYPE}.",
                {"Accept-Patch": PATCH_TYPE},
            )
        if not data.strip():
            raise bad_body("PATCH body could not be empty for update.")
        changes = parse_patch(wire.parse_json(data))
        queue = await self.service.get_queue(tenant, name)
        metadata = apply_patch(queue.metadata, changes)
        wire.check_metadata(metadata, self.bounds)
        check_retry_policy(metadata)  # Zaqar checks the queue's _retry_policy too
        touched = {change.key for change in changes}
        if metadata.get("_flavor") is None:
            # Durability is fixed at creation; forgetting the key does not change it.
            touched.discard("_flavor")
        defaults = dataclasses.replace(self.defaults, durable=queue.options.durable)
        options = wire.options_for(metadata, queue.options, defaults, touched)
        schema = metadata.pop(wire.SCHEMA_KEY, None)
        if wire.SCHEMA_KEY in touched:
            # First, so a schema that is refused leaves the queue as it was.
            if schema is None:
                await self.service.clear_schema(tenant, name)
            else:
                await self.service.set_schema(tenant, name, wire.schema_text(schema))
        updated = await self.service.update_queue(tenant, name, options, metadata)
        return Response(200, wire.render_metadata(updated, self.bounds))

    async def delete_queue(self, call: Call) -> Response:
        tenant, name = await self._scope(call)
        await self.service.delete_queue(tenant, name)
        return Response(204)

    async def queue_stats(self, call: Call) -> Response:
        tenant, name = await self._scope(call)
        try:
            stats = await self.service.queue_stats(tenant, name)
        except QueueNotFound:
            # Zaqar v2: a queue that does not exist has empty stats.
            return Response(200, copy.deepcopy(wire.MISSING_QUEUE_STATS))
        return Response(200, wire.render_stats(stats, queue_path(name), self._now()))

    async def purge_queue(self, call: Call) -> Response:
        tenant, name = await self._scope(call)
        types = ["messages", "subscriptions"]
        if call.body().strip():
            document = call.json()
            if not isinstance(document, dict) or "resource_types" not in document:
                raise bad_request('Post body must contain key "resource_types".')
            types = document["resource_types"]
            if not isinstance(types, list) or not set(types) <= {"messages", "subscriptions"}:
                raise bad_request("Resource types must be a sub set of {messages, subscriptions}.")
        try:
            if "messages" in types:
                await self.service.purge_queue(tenant, name)
            if "subscriptions" in types:
                await self.service.purge_subscriptions(tenant, name)
        except QueueNotFound:
            pass  # Zaqar purges a missing queue without complaint.
        return Response(204)

    async def get_schema(self, call: Call) -> Response:
        tenant, name = await self._scope(call)
        found = await self.service.get_schema(tenant, name)
        if found is None:
            raise not_found(f"Queue {name} has no schema.")
        fingerprint, text = found
        return Response(
            200, json.loads(text), {"Avro-Fingerprint": format_fingerprint(fingerprint)}
        )

    async def put_schema(self, call: Call) -> Response:
        """Sets the queue's schema; refused (400, naming the field) when it cannot read the
        current schema or the messages in the queue."""
        tenant, name = await self._scope(call)
        document = call.json()
        fingerprint = await self.service.set_schema(tenant, name, wire.schema_text(document))
        shown = format_fingerprint(fingerprint)
        return Response(200, {"fingerprint": shown}, {"Avro-Fingerprint": shown})

    async def delete_schema(self, call: Call) -> Response:
        tenant, name = await self._scope(call)
        await self.service.clear_schema(tenant, name)
        return Response(204)
