"""Tenant bounds over HTTP: a quota is a 403 and a rate limit a 429 with Retry-After, both
with Zaqar's error body naming the bound; nothing of a refused batch is stored."""

from __future__ import annotations

import pytest_twisted

from qgate.core.guard import TenantGuard
from qgate.core.quotas import Quotas, TenantQuotas
from qgate.protocols.http import build_resource
from tests.support.core import make_clock, memory_service
from tests.support.http import Api, Mounted, make_ctx


def api_with(**quotas: float) -> tuple[Api, TenantGuard]:
    clock = make_clock()
    guard = TenantGuard(memory_service(clock), clock, TenantQuotas(Quotas(**quotas)))  # type: ignore[arg-type]
    return Api(build_resource(make_ctx(guard, mounts={b"stomp": Mounted()}))), guard


@pytest_twisted.ensureDeferred
async def test_a_publish_over_the_message_quota_is_a_403_naming_it_and_stores_nothing():
    api, guard = api_with(max_messages=2)
    await api.post_messages("q", 1)
    reply = await api.post("/v2/queues/q/messages", {"messages": [{"body": 2}, {"body": 3}]})
    assert reply.status == 403
    assert reply.json["title"] == "Quota exceeded"
    assert "max_messages quota is 2" in reply.json["description"]
    assert (await guard.queue_stats("p1", "q")).total == 1


@pytest_twisted.ensureDeferred
async def test_a_request_over_the_rate_is_a_429_with_retry_after():
    api, guard = api_with(request_rate=1, request_burst=1)
    assert (await api.put("/v2/queues/q")).status == 201
    reply = await api.get("/v2/queues/q/stats")
    assert reply.status == 429
    assert reply.header("Retry-After") == "1"
    assert reply.json["title"] == "Too many requests"
    assert "request_rate" in reply.json["description"]
    guard.clock.advance(1)
    assert (await api.get("/v2/queues/q/stats")).status == 200


@pytest_twisted.ensureDeferred
async def test_a_key_used_outside_its_scope_is_a_403_naming_what_it_may_not_do():
    from twisted.internet.defer import Deferred

    from qgate.core.auth import APIKeys, TenantAdmin
    from qgate.storage.memory import MemoryStorage

    clock = make_clock()
    store = MemoryStorage()
    admin = TenantAdmin(store, clock)
    await Deferred.fromCoroutine(admin.create_tenant("acme"))
    token = await Deferred.fromCoroutine(admin.create_key("acme", ("jobs.*",), ("publish",)))
    guard = TenantGuard(memory_service(clock), clock, TenantQuotas(), store)
    ctx = make_ctx(guard, auth=APIKeys(store, clock), mounts={b"stomp": Mounted()})
    api = Api(build_resource(ctx), project="acme")
    key = {"X-Auth-Token": token}
    body = {"messages": [{"body": 1}]}
    assert (await api.post("/v2/queues/jobs.a/messages", body, headers=key)).status == 201
    refused = await api.post("/v2/queues/logs/messages", body, headers=key)
    assert refused.status == 403 and "queue 'logs'" in refused.json["description"]
    consume = await api.post("/v2/queues/jobs.a/claims", {"ttl": 60}, headers=key)
    assert consume.status == 403 and "may not consume" in consume.json["description"]
    assert (await guard.queue_stats("acme", "jobs.a")).total == 1
