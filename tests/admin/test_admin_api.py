"""The admin listener in memory (StubTreq, Clock): /metrics after known traffic, series
bounded to the deepest queues, health, the JSON API the console and CLI use, admin keys."""

from __future__ import annotations

from typing import Any

import pytest
import pytest_twisted
from prometheus_client.parser import text_string_to_metric_families

from qgate.core.admin import ADMIN_TENANT
from qgate.core.auth import APIKeys, TenantAdmin
from qgate.core.metrics import EXPIRED
from qgate.core.model import QueueOptions
from qgate.gateway.config import Config, ListenerConfig
from qgate.gateway.metrics import DepthSampler, PrometheusMetrics
from qgate.gateway.registry import Protocols
from qgate.gateway.status import GatewayStatus, ListenerState
from qgate.protocols.admin import AdminResource
from qgate.protocols.admin.settings import AdminSettings
from qgate.protocols.http import build_resource
from qgate.storage.memory import MemoryStorage
from tests.support.core import memory_service, msgs
from tests.support.http import Api


class Admin:
    """The admin resource and the public API over one memory service, as a gateway
    builds them (``registry.Protocols``: each protocol's traffic counted)."""

    def __init__(self, clock: Any, auth: Any = None, top: int = 20) -> None:
        from qgate.core.auth import TrustedTenant

        self.clock = clock
        self.service = memory_service(clock)
        self.metrics = PrometheusMetrics("test")
        self.service.on_expired(lambda n: self.metrics.count(EXPIRED, n))
        self.status = GatewayStatus(clock, self.service, MemoryStorage(), self.metrics)
        state = ListenerState(ListenerConfig("admin", "tcp:0"), up=True)
        self.status.listeners.append(state)
        settings = dict(Config().protocols)
        settings["admin"] = AdminSettings(top_queues=top)
        protocols = Protocols(
            clock, self.service, auth or TrustedTenant(), settings, self.metrics, self.status
        )
        self.status.rates = protocols.rates
        self.protocols = protocols
        self.sampler = DepthSampler(
            clock, self.service, self.metrics.snapshot, top, 5.0, self.service.waiters
        )
        self.api = Api(AdminResource(protocols.contexts["admin"]))
        self.public = Api(build_resource(protocols.contexts["http"]), project="t1")
        self.http_service = protocols.contexts["http"].service

    async def metric(self, name: str, **labels: str) -> float | None:
        text = (await self.api.request("GET", "/metrics")).body.decode()
        return value(text, name, **labels)


def value(text: str, name: str, **labels: str) -> float | None:
    """The value of the first sample ``name`` with ``labels`` in exposition ``text``."""
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if sample.name == name and all(sample.labels.get(k) == v for k, v in labels.items()):
                return float(sample.value)
    return None


@pytest.fixture
def admin(clock) -> Admin:
    return Admin(clock)


@pytest_twisted.ensureDeferred
async def test_metrics_count_known_traffic_of_the_public_api(admin):
    api = admin.public
    await api.request(
        "POST", "/v2/queues/jobs/messages", {"messages": [{"body": i, "ttl": 60} for i in range(5)]}
    )
    reply = await api.request("POST", "/v2/queues/jobs/claims?limit=3", {"ttl": 60, "grace": 60})
    assert reply.status == 201, reply.body
    claimed = reply.json
    first = claimed["messages"][0]["href"]
    await api.request("DELETE", first)
    await admin.sampler.sample()
    assert await admin.metric("qgate_messages_published_total", protocol="http") == 5
    assert await admin.metric("qgate_messages_delivered_total", protocol="http", mode="claim") == 3
    assert await admin.metric("qgate_messages_acked_total", protocol="http") == 1
    assert (
        await admin.metric("qgate_queue_messages", tenant="t1", queue="jobs", state="available")
        == 2
    )
    assert (
        await admin.metric("qgate_queue_messages", tenant="t1", queue="jobs", state="claimed") == 2
    )
    assert await admin.metric("qgate_queues") == 1
    count = await admin.metric(
        "qgate_http_request_duration_seconds_count",
        route="/v2/queues/{queue}/messages",
        method="POST",
    )
    assert count == 1


@pytest_twisted.ensureDeferred
async def test_per_queue_series_are_the_deepest_queues_and_the_rest_summed(clock):
    admin = Admin(clock, top=3)
    for i in range(40):
        await admin.service.publish("t", f"q{i:02d}", msgs(*[b"x"] * (i + 1)))
    await admin.sampler.sample()
    text = (await admin.api.request("GET", "/metrics")).body.decode()
    series = [
        line
        for line in text.splitlines()
        if line.startswith("qgate_queue_messages{") and 'state="available"' in line
    ]
    assert len(series) == 3 + 1
    assert value(text, "qgate_queue_messages", queue="q39", state="available") == 40
    assert value(text, "qgate_queue_messages", queue="_other", state="available") == sum(
        range(1, 38)
    )
    assert value(text, "qgate_queues") == 40


@pytest_twisted.ensureDeferred
async def test_oldest_message_age_follows_the_clock(admin, clock):
    await admin.service.publish("t", "q", msgs(b"x"))
    clock.advance(30)
    await admin.sampler.sample()
    assert await admin.metric("qgate_queue_oldest_message_age_seconds", queue="q") == 30


@pytest_twisted.ensureDeferred
async def test_ready_needs_storage_and_every_listener(admin):
    live = await admin.api.request("GET", "/health/live")
    assert live.status == 200 and live.json == {"live": True}
    assert (await admin.api.request("GET", "/health/ready")).status == 200
    admin.status.listeners[0].up = False
    ready = await admin.api.request("GET", "/health/ready")
    assert ready.status == 503 and ready.json["listeners"] is False


@pytest_twisted.ensureDeferred
async def test_the_api_lists_peeks_publishes_moves_purges_and_deletes(admin, clock):
    service = admin.service
    options = QueueOptions(max_claim_count=1, dead_letter_queue="jobs-dlq")
    await service.create_queue("t", "jobs", options)
    await service.publish("t", "jobs", msgs(b"one", b"two"))
    await service.claim("t", "jobs", limit=2, ttl=5)
    clock.advance(6)
    await service.claim("t", "jobs", limit=2)  # both dead-lettered
    api = admin.api
    listing = (await api.request("GET", "/api/queues")).json
    assert [(q["name"], q["available"]) for q in listing["queues"]] == [
        ("jobs-dlq", 2),
        ("jobs", 0),
    ]
    queue = (await api.request("GET", "/api/queues/t/jobs-dlq")).json
    assert queue["dead_letter_sources"] == ["jobs"]
    peek = (await api.request("GET", "/api/queues/t/jobs-dlq/messages")).json["messages"]
    assert [m["body"]["text"] for m in peek] == ["one", "two"]
    assert peek[0]["state"] == "available" and peek[0]["claim_count"] == 1
    published = await api.request("POST", "/api/queues/t/jobs/messages", {"body": "test"})
    assert published.status == 201
    moved = (await api.request("POST", "/api/queues/t/jobs-dlq/move", {})).json
    assert moved == {"moved": 2, "to": "jobs"}
    assert (await service.queue_stats("t", "jobs")).total == 3
    assert (await api.request("POST", "/api/queues/t/jobs/purge")).json == {"purged": 3}
    assert (await api.request("DELETE", "/api/queues/t/jobs")).json == {"deleted": True}
    missing = await api.request("GET", "/api/queues/t/jobs")
    assert missing.status == 404 and "title" in missing.json


@pytest_twisted.ensureDeferred
async def test_a_peek_shows_the_claim_of_a_claimed_message(admin):
    await admin.service.publish("t", "q", msgs(b"\xff\x00binary"))
    claim = await admin.service.claim("t", "q", limit=1, ttl=30)
    [m] = (await admin.api.request("GET", "/api/queues/t/q/messages")).json["messages"]
    assert m["state"] == "claimed" and m["claim_id"] == claim.id
    assert m["body"]["hex"].startswith("ff00")


@pytest_twisted.ensureDeferred
async def test_bad_input_is_a_clear_error(admin):
    reply = await admin.api.request("GET", "/api/queues?limit=lots")
    assert reply.status == 400 and "limit" in reply.json["description"]
    await admin.service.publish("t", "q", msgs(b"x"))
    reply = await admin.api.request("POST", "/api/queues/t/q/move", {})
    assert reply.status == 400 and "to" in reply.json["description"]
    assert (await admin.api.request("GET", "/api/nothing")).status == 404


@pytest_twisted.ensureDeferred
async def test_the_console_page_and_its_files_are_served_from_qgate(admin):
    page = await admin.api.request("GET", "/console/")
    assert page.status == 200 and b"console.js" in page.body
    assert (
        (await admin.api.request("GET", "/console/console.js"))
        .header("content-type")
        .startswith("text/javascript")
    )
    assert (await admin.api.request("GET", "/console/nope")).status == 404
    assert b"http://" not in page.body and b"https://" not in page.body  # nothing from outside


@pytest_twisted.ensureDeferred
async def test_with_keys_only_an_admin_key_opens_the_admin_api(clock):
    store = MemoryStorage()
    tenants = TenantAdmin(store, clock)
    await tenants.create_tenant(ADMIN_TENANT)
    await tenants.create_tenant("acme")
    admin_key = await tenants.create_key(ADMIN_TENANT)
    tenant_key = await tenants.create_key("acme")
    admin = Admin(clock, auth=APIKeys(store, clock))
    api = admin.api
    assert (await api.request("GET", "/metrics")).status == 401
    bad = await api.request("GET", "/api/queues", headers={"Authorization": f"Bearer {tenant_key}"})
    assert bad.status == 401
    good = await api.request("GET", "/api/queues", headers={"Authorization": f"Bearer {admin_key}"})
    assert good.status == 200
    assert (await api.request("GET", "/metrics", headers={"X-Auth-Token": admin_key})).status == 200
    assert (await api.request("GET", "/health/live")).status == 200  # for load balancers


@pytest_twisted.ensureDeferred
async def test_expired_messages_the_reaper_deletes_are_counted(admin, clock):
    await admin.service.publish("t", "q", msgs(b"a", b"b", ttl=5))
    clock.advance(6)
    assert await admin.service.reap() == 2
    assert await admin.metric("qgate_messages_expired_total") == 2


def test_the_admin_listener_refuses_a_body_over_its_limit_before_reading_it(clock):
    from twisted.internet.address import IPv4Address
    from twisted.internet.testing import StringTransport

    admin = Admin(clock)
    limit = AdminSettings().max_request_body
    site = admin.protocols.listener("admin", ListenerConfig("admin", "tcp:0"))
    protocol = site.buildProtocol(IPv4Address("TCP", "127.0.0.1", 40000))
    transport = StringTransport()
    protocol.makeConnection(transport)
    protocol.dataReceived(
        b"POST /api/queues/t/jobs/messages HTTP/1.1\r\nHost: a\r\n"
        b"Content-Type: application/json\r\nContent-Length: %d\r\n\r\n" % (limit + 1)
    )
    head, _, body = transport.value().partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 413 ")
    assert str(limit) in body.decode()
