"""The claim endpoints: claim (a long poll with ``wait=``), show, renew, release."""

from __future__ import annotations

from typing import Any

from twisted.logger import Logger

from qgate.core import jsonsafe
from qgate.core.errors import QueueNotFound
from qgate.core.model import Claim
from qgate.protocols.http import avro, wire
from qgate.protocols.http.call import Call
from qgate.protocols.http.errors import bad_body, bad_request
from qgate.protocols.http.handlers import Handlers, query_limit, queue_path
from qgate.protocols.http.router import Response

log = Logger()


class ClaimEndpoints(Handlers):
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
        limit = query_limit(call, self.bounds.claim)
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
            self.service.release(tenant, name, found.id, undelivered=True).addErrback(
                lambda f: log.failure("releasing an unanswered claim failed", f)
            )
            raise

    async def _claim_answer(self, call: Call, tenant: str, name: str, found: Claim) -> Response:
        """The answer to a claim, rendered to bytes here, so nothing about it can fail
        once it is returned."""
        path, now = queue_path(name), self._now()
        location = {"Location": f"{path}/claims/{found.id}"}
        if avro.wants_avro(call.header("Accept")):
            return await self._avro_page(tenant, name, found.messages, found.id, 201, location)
        bodies = await self._bodies(tenant, name, found.messages)
        rendered = [
            wire.render_message(m, path, now, found.id, bodies, with_checksum=self.checksums)
            for m in found.messages
        ]
        document = {"messages": rendered}
        return Response(201, headers=location, body=jsonsafe.dumps_lenient(document))

    async def get_claim(self, call: Call) -> Response:
        call.client_id()
        tenant, name = await self._scope(call)
        claim = await self.service.get_claim(tenant, name, call.params["claim_id"])
        bodies = await self._bodies(tenant, name, claim.messages)
        document = wire.render_claim(
            claim, queue_path(name), self._now(), bodies, with_checksum=self.checksums
        )
        return Response(200, document)

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
