"""The Zaqar v2 endpoints: each handler checks its input like Zaqar, calls the core's
``IQueueService`` and nothing else, and answers with Zaqar's status codes and documents.

Long polling (a qgate extension): ``wait=SECONDS`` on ``GET .../messages`` and
``POST .../claims`` is passed to the service, which parks the call until a publish or
release wakes the queue or the wait runs out; the answer is then the usual one (an empty
page, a 204). A queue that does not exist yet is waited for as well.

Avro (a qgate extension, ``docs/avro.md``): ``GET/PUT/DELETE /v2/queues/{q}/schema`` and the
``_schema`` metadata key manage a queue's schema; ``POST .../messages`` takes Avro container
files; ``GET .../messages`` and ``POST .../claims`` answer ``Accept: avro/binary`` with
container files of envelopes (``protocols.http.avro``).
"""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Iterable, Mapping, Sequence
from typing import Any, TypeVar
from urllib.parse import urlencode

from twisted.internet.defer import CancelledError
from twisted.logger import Logger
from twisted.python.failure import Failure

from qgate.core import jsonsafe
from qgate.core.avro_bodies import (
    AVRO_BINARY,
    avro_content_type,
    avro_writer,
    format_fingerprint,
    media_type,
)
from qgate.core.errors import MessageClaimed, MessageNotFound, QueueNotFound
from qgate.core.interfaces import IQueueService
from qgate.core.model import Claim, Message, NewMessage, QueueOptions
from qgate.protocols.context import ProtocolContext
from qgate.protocols.http import avro, wire
from qgate.protocols.http.call import Call
from qgate.protocols.http.container import read_container
from qgate.protocols.http.errors import (
    RETRY_AFTER,
    HTTPError,
    bad_body,
    bad_request,
    not_found,
)
from qgate.protocols.http.router import Response, Router
from qgate.protocols.http.settings import HTTPSettings

T = TypeVar("T")

log = Logger()

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

    def resource(template: str, variables: dict[str, str], allow: list[str]) -> dict[str, Any]:
        return {
            "href-template": template,
            "href-vars": variables,
            "hints": {"allow": allow, "formats": {"application/json": {}}},
        }

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
            "rel/ping": resource("/v2/ping", {}, ["GET", "HEAD"]),
            "rel/health": resource("/v2/health", {}, ["GET"]),
        }
    }


def _queue_path(name: str) -> str:
    return f"/v2/queues/{name}"


def _link(path: str, params: Iterable[tuple[str, str]]) -> list[dict[str, str]]:
    return [{"rel": "next", "href": f"{path}?{urlencode(list(params))}"}]


def _check_limit(value: int, high: int, message: str) -> int:
    if not 0 < value <= high:
        raise bad_request(message.format(high))
    return value


class ZaqarAPI:
    """The handlers of the API, bound to one gateway context."""

    def __init__(self, ctx: ProtocolContext[HTTPSettings]) -> None:
        self.service: IQueueService = ctx.service
        self.bounds = wire.Bounds.from_limits(ctx.service.limits, ctx.settings.max_wait)
        # The service's defaults, used when a PATCH removes a reserved key.
        self.defaults: QueueOptions = ctx.service.default_options
        self.home = _home_document()

    def install(self, router: Router[Call]) -> None:
        router.add("/", GET=self.get_versions)
        router.add("/v2", GET=self.get_home)
        router.add("/v2/ping", GET=self.ping)
        router.add("/v2/health", GET=self.health)
        router.add("/v2/queues", GET=self.list_queues)
        router.add(
            "/v2/queues/{queue}",
            PUT=self.create_queue,
            GET=self.get_queue,
            HEAD=self.queue_exists,
            PATCH=self.update_queue,
            DELETE=self.delete_queue,
        )
        router.add("/v2/queues/{queue}/stats", GET=self.queue_stats)
        router.add(
            "/v2/queues/{queue}/schema",
            GET=self.get_schema,
            PUT=self.put_schema,
            DELETE=self.delete_schema,
        )
        router.add("/v2/queues/{queue}/purge", POST=self.purge_queue)
        router.add(
            "/v2/queues/{queue}/messages",
            POST=self.post_messages,
            GET=self.get_messages,
            DELETE=self.delete_messages,
        )
        router.add(
            "/v2/queues/{queue}/messages/{message_id}",
            GET=self.get_message,
            DELETE=self.delete_message,
        )
        router.add("/v2/queues/{queue}/claims", POST=self.create_claim)
        router.add(
            "/v2/queues/{queue}/claims/{claim_id}",
            GET=self.get_claim,
            PATCH=self.update_claim,
            DELETE=self.delete_claim,
        )

    # -- helpers ---------------------------------------------------------------------------

    def _now(self) -> float:
        return float(self.service.clock.seconds())

    async def _scope(self, call: Call) -> tuple[str, str]:
        """(tenant, queue) of a queue endpoint, checked in Zaqar's hook order."""
        tenant = await call.tenant()
        return tenant, call.queue()

    def _storage_down(self, failure: Failure) -> bool | Failure:
        if failure.check(CancelledError):  # the client hung up: storage is not down
            return failure
        log.failure("storage check failed", failure)
        return False

    async def _storage_ok(self) -> bool:
        """A cheap storage round trip."""
        ok: bool = await self.service.ping().addErrback(self._storage_down)
        return ok

    # -- misc ------------------------------------------------------------------------------

    async def get_versions(self, call: Call) -> Response:
        return Response(300, VERSIONS)

    async def get_home(self, call: Call) -> Response:
        return Response(200, self.home, content_type="application/json-home")

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

    # -- queues ----------------------------------------------------------------------------

    async def list_queues(self, call: Call) -> Response:
        tenant = await call.tenant()
        limit = _check_limit(
            call.query_int("limit", wire.DEFAULT_LIMIT),
            self.bounds.queues_page,
            "Limit must be at least 1 and no greater than {0}.",
        )
        marker = call.query("marker")
        detailed = call.query_bool("detailed")
        queues = await self.service.list_queues(tenant, marker=marker, limit=limit)
        documents = []
        for queue in queues:
            document: dict[str, Any] = {"name": queue.name, "href": _queue_path(queue.name)}
            if detailed:
                document["metadata"] = wire.render_metadata(queue, self.bounds)
            documents.append(document)
        links = []
        if queues:
            # Zaqar: the next link repeats the given parameters with the new marker.
            params = [("marker", queues[-1].name)]
            params += [(k, call.query(k) or "") for k in ("limit", "detailed") if call.has_query(k)]
            links = _link("/v2/queues", params)
        body: dict[str, Any] = {"queues": documents, "links": links}
        if call.query_bool("with_count"):
            body["count"] = await self._count_queues(tenant)
        return Response(200, body)

    async def _count_queues(self, tenant: str) -> int:
        """``with_count``: the core has no count, so page through the tenant's queues."""
        count, marker, page = 0, None, self.service.limits.max_page
        while True:
            queues = await self.service.list_queues(tenant, marker=marker, limit=page)
            count += len(queues)
            if len(queues) < page:
                return count
            marker = queues[-1].name

    async def create_queue(self, call: Call) -> Response:
        tenant, name = await self._scope(call)
        data = call.body()
        if len(data) > self.bounds.metadata_size:
            raise bad_request(f"Queue metadata is too large. Max size: {self.bounds.metadata_size}")
        metadata: dict[str, Any] = {}
        if data.strip():
            document = call.json()
            if not isinstance(document, dict):
                raise bad_body("Document type not supported.")
            metadata = document
        wire.check_metadata(metadata, self.bounds)
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
        return Response(201 if created else 204, headers={"Location": _queue_path(name)})

    async def get_queue(self, call: Call) -> Response:
        tenant, name = await self._scope(call)
        queue = await self.service.get_queue(tenant, name)
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
            raise bad_body(f"Queue metadata is too large. Max size: {self.bounds.metadata_size}")
        media = (call.header("Content-Type") or "").split(";", 1)[0].strip().lower()
        if media != wire.PATCH_TYPE:
            raise HTTPError(
                415,
                "Unsupported media type",
                f"Accepted media type for PATCH: {wire.PATCH_TYPE}.",
                {"Accept-Patch": wire.PATCH_TYPE},
            )
        if not data.strip():
            raise bad_body("PATCH body could not be empty for update.")
        changes = wire.parse_patch(wire.parse_json(data))
        queue = await self.service.get_queue(tenant, name)
        metadata = wire.apply_patch(queue.metadata, changes)
        wire.check_metadata(metadata, self.bounds)
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
            return Response(200, {"messages": {"claimed": 0, "free": 0, "delayed": 0, "total": 0}})
        return Response(200, wire.render_stats(stats, _queue_path(name), self._now()))

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
        if "messages" in types:
            try:
                await self.service.purge_queue(tenant, name)
            except QueueNotFound:
                pass  # Zaqar purges a missing queue without complaint.
        # "subscriptions" (Zaqar's notification subscriptions) do not exist here.
        return Response(204)

    # -- messages --------------------------------------------------------------------------

    async def post_messages(self, call: Call) -> Response:
        client = call.client_id()
        tenant, name = await self._scope(call)
        # No read of the queue here: the queue's own limits (max_post_bytes, bounds, its
        # schema) are the core's to check, in the same step that stores.
        limit = self.bounds.post_size
        if len(call.body()) > limit:
            raise bad_request(f"Message collection size is too large. Max size {limit}")
        if media_type(call.header("Content-Type") or "") == AVRO_BINARY:
            messages = await self._container_messages(call, client, limit)
        else:
            messages = wire.parse_messages(call.json(), self.bounds, client)
        ids = await self.service.publish(tenant, name, messages, create=True)
        path = f"{_queue_path(name)}/messages"
        return Response(
            201,
            {"resources": [f"{path}/{i}" for i in ids]},
            {"Location": f"{path}?ids={','.join(ids)}"},
        )

    async def get_messages(self, call: Call) -> Response:
        client = call.client_id()
        tenant, name = await self._scope(call)
        ids = call.query_list("ids")
        if ids is not None:
            return await self._get_by_ids(tenant, name, ids, avro.wants_avro(call.header("Accept")))
        limit = _check_limit(
            call.query_int("limit", wire.DEFAULT_LIMIT),
            self.bounds.page,
            "Limit must be at least 1 and may not be greater than {0}.",
        )
        marker = call.query("marker")
        echo = call.query_bool("echo")
        include_claimed = call.query_bool("include_claimed")
        include_delayed = call.query_bool("include_delayed")
        wait = call.query_wait(self.bounds.max_wait)
        try:
            # With wait, the core also waits for a queue its first publish creates.
            messages = await self.service.observe(
                tenant,
                name,
                after=marker,
                limit=limit,
                include_claimed=include_claimed,
                include_delayed=include_delayed,
                exclude_producer=None if echo else client,
                wait=wait,
            )
        except QueueNotFound:
            messages = []  # Zaqar v2: listing a missing queue is an empty 200.
        path = _queue_path(name)
        now = self._now()
        if avro.wants_avro(call.header("Accept")):
            return await self._avro_page(tenant, name, messages)
        links = []
        if messages:
            params = [("marker", messages[-1].id)]
            params += [
                (k, call.query(k) or "")
                for k in ("limit", "echo", "include_claimed", "include_delayed", "wait")
                if call.has_query(k)
            ]
            links = _link(f"{path}/messages", params)
        bodies = await self._bodies(tenant, name, messages)
        return Response(
            200,
            {
                "messages": [wire.render_message(m, path, now, None, bodies) for m in messages],
                "links": links,
            },
        )

    async def _get_by_ids(
        self, tenant: str, name: str, ids: list[str], as_avro: bool = False
    ) -> Response:
        _check_limit(
            len(ids), self.bounds.page, "Limit must be at least 1 and may not be greater than {0}."
        )
        try:
            messages = await self.service.get_messages(tenant, name, ids)
        except QueueNotFound:
            messages = []
        if not messages:
            raise not_found(
                f"No messages with IDs: {', '.join(ids)} found in the queue {name} "
                f"for project {tenant}."
            )
        if as_avro:
            return await self._avro_page(tenant, name, messages)
        path, now = _queue_path(name), self._now()
        bodies = await self._bodies(tenant, name, messages)
        return Response(
            200, {"messages": [wire.render_message(m, path, now, None, bodies) for m in messages]}
        )

    async def get_message(self, call: Call) -> Response:
        call.client_id()
        tenant, name = await self._scope(call)
        message = await self.service.get_message(tenant, name, call.params["message_id"])
        bodies = await self._bodies(tenant, name, [message])
        return Response(
            200, wire.render_message(message, _queue_path(name), self._now(), None, bodies)
        )

    async def delete_messages(self, call: Call) -> Response:
        call.client_id()
        tenant, name = await self._scope(call)
        ids = call.query_list("ids")
        pop = call.query_int("pop")
        # Zaqar's message_deletion rules.
        if ids is not None and pop is not None:
            raise bad_request("pop and id params cannot be present together in the delete request.")
        if pop is not None:
            _check_limit(
                pop,
                self.bounds.claim,
                "Pop value must be at least 1 and may not be greater than {0}.",
            )
            try:
                popped = await self.service.pop_messages(tenant, name, pop)
            except QueueNotFound:
                popped = []
            path, now = _queue_path(name), self._now()
            bodies = await self._bodies(tenant, name, popped)
            return Response(
                200,
                {"messages": [wire.render_message(m, path, now, None, bodies) for m in popped]},
            )
        if ids is None:
            raise bad_request(
                'The request should have either "ids" or "pop" parameter in the request, '
                "to be able to delete."
            )
        _check_limit(
            len(ids),
            self.bounds.page,
            "ids parameter should have at least 1 and not greater than {0} values.",
        )
        try:
            await self.service.delete_messages(tenant, name, ids)
        except QueueNotFound:
            pass
        except MessageClaimed:
            raise self._claimed() from None
        return Response(204)

    @staticmethod
    def _claimed() -> HTTPError:
        return HTTPError(
            403,
            "Unable to delete",
            "This message is claimed; it cannot be deleted without a valid claim ID.",
        )

    async def delete_message(self, call: Call) -> Response:
        call.client_id()
        tenant, name = await self._scope(call)
        message_id = call.params["message_id"]
        claim_id = call.query("claim_id")
        try:
            deleted = await self.service.delete_messages(tenant, name, [message_id], claim_id)
        except QueueNotFound:
            return Response(204)  # Zaqar: deleting what is not there succeeds.
        except MessageClaimed:
            raise self._claimed() from None
        if deleted or claim_id is None:
            return Response(204)
        # The claim did not hold the message: tell why, as Zaqar does.
        try:
            message = await self.service.get_message(tenant, name, message_id)
        except (MessageNotFound, QueueNotFound):
            return Response(204)
        if message.is_claimed(self._now()):
            raise self._claimed()
        raise HTTPError(
            400,
            "Unable to delete",
            "A claim was specified, but the message is not currently claimed.",
        )

    # -- claims ----------------------------------------------------------------------------

    def _claim_times(self, document: Any, check_grace: bool) -> tuple[int, int]:
        if not isinstance(document, dict):
            raise bad_body("Document type not supported.")
        ttl = wire.checked_field(document, "ttl", int, wire.DEFAULT_CLAIM_TTL)
        grace = wire.checked_field(document, "grace", int, wire.DEFAULT_CLAIM_GRACE)
        lo, hi = self.bounds.claim_ttl
        if not lo <= ttl <= hi:
            raise bad_request(
                f"The TTL for a claim may not exceed {hi:g} seconds, and must be at least "
                f"{lo:g} seconds long."
            )
        lo, hi = self.bounds.claim_grace
        if check_grace and not lo <= grace <= hi:
            raise bad_request(
                f"The grace for a claim may not exceed {hi:g} seconds, and must be at least "
                f"{lo:g} seconds long."
            )
        return ttl, grace

    async def create_claim(self, call: Call) -> Response:
        call.client_id()
        tenant, name = await self._scope(call)
        limit = _check_limit(
            call.query_int("limit", wire.DEFAULT_LIMIT),
            self.bounds.claim,
            "Limit must be at least 1 and may not be greater than {0}.",
        )
        wait = call.query_wait(self.bounds.max_wait)
        # Zaqar: a claim without a body takes the default TTL and grace.
        ttl, grace = self._claim_times(call.json(default={}), check_grace=True)
        try:
            found = await self.service.claim(
                tenant, name, limit=limit, ttl=ttl, grace=grace, wait=wait
            )
        except QueueNotFound:
            found = None
        if found is None or not found.messages:
            return Response(204)
        try:
            return await self._claim_answer(call, tenant, name, found)
        except BaseException:
            # The claim is committed but cannot be answered (or the client went away):
            # give its messages back rather than hide them for ttl + grace.
            self.service.release(tenant, name, found.id).addErrback(
                lambda f: log.failure("releasing an unanswered claim failed", f)
            )
            raise

    async def _claim_answer(self, call: Call, tenant: str, name: str, found: Claim) -> Response:
        """The answer to a claim, rendered to bytes here, so nothing about it can fail
        once it is returned."""
        path, now = _queue_path(name), self._now()
        location = {"Location": f"{path}/claims/{found.id}"}
        if avro.wants_avro(call.header("Accept")):
            return await self._avro_page(tenant, name, found.messages, found.id, 201, location)
        bodies = await self._bodies(tenant, name, found.messages)
        rendered = [wire.render_message(m, path, now, found.id, bodies) for m in found.messages]
        document = {"messages": rendered}
        return Response(201, headers=location, body=jsonsafe.dumps_lenient(document))

    async def get_claim(self, call: Call) -> Response:
        call.client_id()
        tenant, name = await self._scope(call)
        claim = await self.service.get_claim(tenant, name, call.params["claim_id"])
        bodies = await self._bodies(tenant, name, claim.messages)
        return Response(200, wire.render_claim(claim, _queue_path(name), self._now(), bodies))

    async def update_claim(self, call: Call) -> Response:
        call.client_id()
        tenant, name = await self._scope(call)
        # Zaqar's claim_updating checks the TTL only; the core bounds the grace.
        ttl, grace = self._claim_times(call.json(), check_grace=False)
        await self.service.renew_claim(tenant, name, call.params["claim_id"], ttl, grace)
        return Response(204)

    async def delete_claim(self, call: Call) -> Response:
        call.client_id()
        tenant, name = await self._scope(call)
        try:
            await self.service.release(tenant, name, call.params["claim_id"])
        except QueueNotFound:
            pass  # Zaqar: releasing a claim that is not there succeeds.
        return Response(204)

    # -- Avro ------------------------------------------------------------------------------

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

    async def _container_messages(self, call: Call, client: str, limit: int) -> list[NewMessage]:
        """The messages of an Avro container file post: one per record, TTL and delay from
        the query (else the queue's defaults), stored as the file's schema wrote them. The
        file's schema is registered; on a queue with a schema the core resolves every
        record into it as it stores them (and refuses what it cannot read)."""
        ttl = call.query_int("ttl")
        if ttl is not None:
            wire.check_message_ttl(ttl, self.bounds)
        delay = call.query_int("delay")
        if delay is not None:
            wire.check_message_delay(delay, self.bounds)
        found = read_container(
            call.body(), max_bytes=limit, max_records=self.service.limits.max_batch
        )
        if not found.records:
            raise bad_request("No messages to enqueu.")
        await self.service.register_schema(found.schema.text)
        fingerprint, bodies = found.schema.fingerprint, found.datums
        content_type = avro_content_type(fingerprint)
        return [
            NewMessage(
                body=body,
                content_type=content_type,
                ttl=None if ttl is None else float(ttl),
                delay=None if delay is None else float(delay),
                producer=client,
            )
            for body in bodies
        ]

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
