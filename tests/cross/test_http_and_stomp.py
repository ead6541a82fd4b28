"""HTTP and STOMP on one queue: what one publishes the other consumes, and a STOMP
consumer and an HTTP claimer never hold the same message at the same time."""

from __future__ import annotations

import json

import pytest_twisted
from twisted.internet.task import Clock

from qgate.core.service import QueueService
from qgate.protocols.http import build_resource
from tests.support.core import memory_service
from tests.support.http import Api
from tests.support.http import make_ctx as http_ctx
from tests.support.stomp import Client
from tests.support.stomp import make_ctx as stomp_ctx


def shop(clock: Clock) -> tuple[QueueService, Api, Client]:
    """A memory service, with an HTTP API and a connected STOMP client on it, both for the
    tenant "shop"."""
    service = memory_service(clock)
    api = Api(build_resource(http_ctx(service)), project="shop")
    stomp = Client(stomp_ctx(service, heartbeat_ms=0))
    stomp.connect(host="shop")
    return service, api, stomp


@pytest_twisted.ensureDeferred
async def test_a_stomp_consumer_and_an_http_claimer_share_a_queue_without_overlap(clock):
    _, api, stomp = shop(clock)

    posted = await api.post(
        "/v2/queues/orders/messages",
        {"messages": [{"body": {"n": i}, "ttl": 300} for i in range(6)]},
    )
    assert posted.status == 201

    # STOMP takes three and does not ack them yet: they stay claimed by its subscription.
    stomp.send(
        "SUBSCRIBE",
        {
            "destination": "/queue/orders",
            "id": "s",
            "ack": "client-individual",
            "prefetch-count": "3",
        },
    )
    held = stomp.messages()
    assert len(held) == 3
    held_bodies = [json.loads(f.body) for f in held]
    assert all(f.headers["content-type"] == "application/json" for f in held)

    # HTTP claims everything it can: only the other three.
    claim = await api.post("/v2/queues/orders/claims?limit=10", {"ttl": 60, "grace": 60})
    assert claim.status == 201
    claimed_bodies = claim.bodies
    assert len(claimed_bodies) == 3
    assert not {b["n"] for b in claimed_bodies} & {b["n"] for b in held_bodies}
    assert {b["n"] for b in claimed_bodies} | {b["n"] for b in held_bodies} == set(range(6))

    # Nothing is left for a second HTTP claimer while both hold their messages.
    assert (await api.post("/v2/queues/orders/claims", {"ttl": 60, "grace": 60})).status == 204

    # STOMP NACKs one: back in the queue, and its subscription, with room again, takes it
    # back at once (redelivered); HTTP still finds nothing.
    stomp.send("NACK", {"id": held[0].headers["ack"]})
    [redelivered] = stomp.messages()
    assert json.loads(redelivered.body) == held_bodies[0]
    assert redelivered.headers["redelivered"] == "true"
    assert (await api.post("/v2/queues/orders/claims", {"ttl": 60, "grace": 60})).status == 204

    # The STOMP connection goes away: what it held returns, and HTTP claims exactly that.
    stomp.lose()
    again = await api.post("/v2/queues/orders/claims?limit=10", {"ttl": 60, "grace": 60})
    assert sorted(m["body"]["n"] for m in again.json["messages"]) == sorted(
        b["n"] for b in held_bodies
    )


@pytest_twisted.ensureDeferred
async def test_what_stomp_sends_reads_back_over_http_with_its_bytes_and_type(clock):
    service, api, stomp = shop(clock)
    stomp.send(
        "SEND",
        {
            "destination": "/queue/replies",
            "content-type": "text/plain; charset=utf-8",
            "x-trace": "ä-1",
            "receipt": "r1",
        },
        "grüße".encode(),
    )
    assert stomp.next().headers["receipt-id"] == "r1"
    listed = await api.get("/v2/queues/replies/messages?echo=true")
    assert listed.status == 200
    [message] = listed.json["messages"]
    assert message["body"] == "grüße"
    stored = await service.observe("shop", "replies")
    assert stored[0].content_type == "text/plain; charset=utf-8"
    assert stored[0].headers["x-trace"] == "ä-1"
