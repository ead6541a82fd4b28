"""The message endpoints: post (JSON documents or an Avro container file), list (a long
poll with ``wait=``), get by ids, pop, delete."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from qgate.core.avro_bodies import AVRO_BINARY, avro_content_type, media_type
from qgate.core.errors import InvalidArgument, MessageClaimed, MessageNotFound, QueueNotFound
from qgate.core.model import Message, NewMessage
from qgate.protocols.http import avro, wire
from qgate.protocols.http.call import Call
from qgate.protocols.http.container import read_container
from qgate.protocols.http.errors import HTTPError, bad_request, not_found
from qgate.protocols.http.handlers import Handlers, check_limit, next_link, query_limit, queue_path
from qgate.protocols.http.router import Response


class MessageEndpoints(Handlers):
    async def post_messages(self, call: Call) -> Response:
        client = call.client_id()
        tenant, name = await self._scope(call)
        # No read of the queue here: the queue's own limits (max_post_bytes, bounds, its
        # schema) are the core's to check, in the same step that stores.
        limit = self.bounds.post_size
        if len(call.body()) > limit:
            raise self.collection_too_large()
        if media_type(call.header("Content-Type") or "") == AVRO_BINARY:
            messages = await self._container_messages(call, client, limit, tenant)
        else:
            messages = wire.parse_messages(call.json(), self.bounds, client)
        ids = await self.service.publish(tenant, name, messages, create=True)
        path = f"{queue_path(name)}/messages"
        return Response(
            201,
            {"resources": [f"{path}/{i}" for i in ids]},
            {"Location": f"{path}?ids={','.join(ids)}"},
        )

    def collection_too_large(self) -> HTTPError:
        """Zaqar's ``message_length`` refusal of a post over the API's largest."""
        return bad_request(
            f"Message collection size is too large. Max size {self.bounds.post_size}"
        )

    async def _container_messages(
        self, call: Call, client: str, limit: int, tenant: str
    ) -> list[NewMessage]:
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
        await self.service.register_schema(found.schema.text, tenant=tenant)
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

    async def get_messages(self, call: Call) -> Response:
        client = call.client_id()
        tenant, name = await self._scope(call)
        ids = call.query_list("ids")
        if ids is not None:
            return await self._get_by_ids(tenant, name, ids, avro.wants_avro(call.header("Accept")))
        limit = query_limit(call, self.bounds.page)
        marker = call.query("marker")
        echo = call.query_bool("echo")
        include_claimed = call.query_bool("include_claimed")
        include_delayed = call.query_bool("include_delayed")
        wait = call.query_wait(self.bounds.max_wait)

        async def observe(after: str | None) -> list[Message]:
            try:
                # With wait, the core also waits for a queue its first publish creates.
                found: list[Message] = await self.service.observe(
                    tenant,
                    name,
                    after=after,
                    limit=limit,
                    include_claimed=include_claimed,
                    include_delayed=include_delayed,
                    exclude_producer=None if echo else client,
                    wait=wait,
                )
            except QueueNotFound:
                return []  # Zaqar v2: listing a missing queue is an empty 200.
            return found

        try:
            messages = await observe(marker)
        except InvalidArgument as e:
            if e.field != "marker":
                raise
            # Zaqar lists from the start after a marker it never issued (another
            # server's, a deleted queue's): so does qgate, for one that is not a marker.
            messages = await observe(None)
        path = queue_path(name)
        now = self._now()
        if avro.wants_avro(call.header("Accept")):
            return await self._avro_page(tenant, name, messages)
        links = []
        if messages:
            links = next_link(f"{path}/messages", self._next_params(call, messages[-1].id))
        bodies = await self._bodies(tenant, name, messages)
        return Response(
            200,
            {
                "messages": [self._render(m, path, now, bodies) for m in messages],
                "links": links,
            },
        )

    @staticmethod
    def _next_params(call: Call, marker: str) -> list[tuple[str, str]]:
        """The query of the next page, as Zaqar writes it: the parameters given, in its
        order and as it parsed them, with the new marker (last when none was given)."""
        params: list[tuple[str, str]] = []
        if call.has_query("marker"):
            params.append(("marker", marker))
        if call.has_query("limit"):
            params.append(("limit", str(call.query_int("limit"))))
        for key in ("echo", "include_claimed", "include_delayed"):
            if call.has_query(key):
                params.append((key, "true" if call.query_bool(key) else "false"))
        if call.has_query("wait"):
            params.append(("wait", call.query("wait") or ""))
        if not call.has_query("marker"):
            params.append(("marker", marker))
        return params

    def _render(
        self, message: Message, path: str, now: float, bodies: Mapping[int, Any] | None
    ) -> dict[str, Any]:
        return wire.render_message(message, path, now, None, bodies, with_checksum=self.checksums)

    async def _get_by_ids(
        self, tenant: str, name: str, ids: list[str], as_avro: bool = False
    ) -> Response:
        check_limit(len(ids), self.bounds.page)
        try:
            messages = await self.service.get_messages(tenant, name, ids)
        except QueueNotFound:
            messages = []
        if not messages:
            # Zaqar formats the list itself into its description: "IDs: ['3', '4']".
            raise not_found(
                f"No messages with IDs: {ids} found in the queue {name} for project {tenant}."
            )
        if as_avro:
            return await self._avro_page(tenant, name, messages)
        path, now = queue_path(name), self._now()
        bodies = await self._bodies(tenant, name, messages)
        return Response(200, {"messages": [self._render(m, path, now, bodies) for m in messages]})

    async def get_message(self, call: Call) -> Response:
        call.client_id()
        tenant, name = await self._scope(call)
        message = await self.service.get_message(tenant, name, call.params["message_id"])
        bodies = await self._bodies(tenant, name, [message])
        return Response(200, self._render(message, queue_path(name), self._now(), bodies))

    async def delete_messages(self, call: Call) -> Response:
        call.client_id()
        tenant, name = await self._scope(call)
        ids = call.query_list("ids")
        pop = call.query_int("pop")
        # Zaqar's message_deletion rules.
        if ids is not None and pop is not None:
            raise bad_request("pop and id params cannot be present together in the delete request.")
        if pop is not None:
            check_limit(
                pop,
                self.bounds.claim,
                "Pop value must be at least 1 and may not be greater than {0}.",
            )
            try:
                popped = await self.service.pop_messages(tenant, name, pop)
            except QueueNotFound:
                popped = []
            now = self._now()
            bodies = await self._bodies(tenant, name, popped)
            return Response(
                200,
                {
                    "messages": [
                        wire.render_popped(m, now, bodies, with_checksum=self.checksums)
                        for m in popped
                    ]
                },
            )
        if ids is None:
            raise bad_request(
                'The request should have either "ids" or "pop" parameter in the request, '
                "to be able to delete."
            )
        check_limit(
            len(ids),
            self.bounds.page,
            "ids parameter should have at least 1 and not greater than {0} values.",
        )
        try:
            await self._delete_by_ids(tenant, name, ids, call.query_list("claim_ids") or [])
        except QueueNotFound:
            pass
        except MessageClaimed:
            raise self._claimed() from None
        return Response(204)

    async def _delete_by_ids(
        self, tenant: str, name: str, ids: list[str], claim_ids: list[str]
    ) -> None:
        """``DELETE ?ids=...``: as Zaqar's default (``message_delete_with_claim_id`` off),
        the messages are deleted whether a claim holds them or not, each by its own claim
        (python-zaqarclient's ``delete_messages`` sends no claim ids). With
        ``&claim_ids=...`` only messages held by one of those claims or by none are
        deleted; one held by another claim is a 403 (nothing more deleted)."""
        remaining = ids
        now = self._now()
        found = await self.service.get_messages(tenant, name, ids)
        holders = {m.claim_id for m in found if m.is_claimed(now)}
        if claim_ids:
            holders &= set(claim_ids)
        for claim_id in sorted(h for h in holders if h is not None):
            deleted = set(await self.service.delete_messages(tenant, name, ids, claim_id))
            remaining = [i for i in remaining if i not in deleted]
        if remaining:
            await self.service.delete_messages(tenant, name, remaining)

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
