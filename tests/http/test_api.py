"""The API as a whole: versions, ping, health, routing errors, CORS, authentication,
tenant isolation, and what an unexpected error looks like."""

from __future__ import annotations

from dataclasses import replace
from typing import Any

import pytest_twisted
from twisted.internet.defer import Deferred, fail
from twisted.internet.task import Clock
from zope.interface import implementer
from zope.interface.verify import verifyObject

from qgate.core.auth import APIKeys, IAuthenticator, TenantAdmin
from qgate.core.service import QueueService
from qgate.protocols.http import build_resource
from qgate.storage.memory import MemoryStorage
from tests.support.core import TEST_LIMITS
from tests.support.deferreds import has_result
from tests.support.doubles import DownStorage
from tests.support.http import HTTP_TEST_CONFIG, Api, make_ctx


@implementer(IAuthenticator)
class ExplodingAuth:
    """An authenticator with a bug in it."""

    needs_token = False

    def authenticate(
        self,
        tenant: str | None,
        token: str | None,
        assumed: str | None = None,
        peer: str | None = None,
    ) -> Deferred[str]:
        return fail(RuntimeError("secret internals"))


@pytest_twisted.ensureDeferred
async def test_the_root_lists_the_api_versions_with_300(api: Api) -> None:
    reply = await api.get("/", client=None, project=None)
    assert reply.status == 300
    [version] = reply.json["versions"]
    assert version["id"] == "2"
    assert version["links"] == [{"href": "/v2/", "rel": "self"}]


@pytest_twisted.ensureDeferred
async def test_v2_serves_a_json_home_document(api: Api) -> None:
    for path in ("/v2", "/v2/"):
        reply = await api.get(path)
        assert reply.status == 200
        assert reply.header("Content-Type") == "application/json-home"
        assert "rel/queues" in reply.json["resources"]


@pytest_twisted.ensureDeferred
async def test_ping_answers_204_without_a_project(api: Api) -> None:
    for method in ("GET", "HEAD"):
        reply = await api.request(method, "/v2/ping", project=None)
        assert reply.status == 204
        assert reply.body == b""


@pytest_twisted.ensureDeferred
async def test_ping_answers_503_when_storage_is_down(clock: Clock, logged: list[Any]) -> None:
    down = DownStorage("list_queues", "ping")
    broken = QueueService(clock, down, MemoryStorage(), limits=TEST_LIMITS)
    api = Api(build_resource(make_ctx(broken)))
    assert (await api.get("/v2/ping")).status == 503
    assert (await api.request("HEAD", "/v2/ping")).status == 503
    health = await api.get("/v2/health")
    assert health.status == 503
    assert health.header("Retry-After") == "1"
    assert health.json["storage"]["storage_reachable"] is False
    assert any(e.get("log_failure") for e in logged)
    listing = await api.get("/v2/queues")
    assert listing.status == 503
    assert listing.header("Retry-After") == "1"
    assert listing.json["title"] == "Service temporarily unavailable"


class HangingStorage(MemoryStorage):
    """A store whose backend accepts a question and never answers it."""

    def ping(self) -> Deferred[Any]:
        return Deferred()


@pytest_twisted.ensureDeferred
async def test_health_and_ping_say_503_after_a_short_timeout_when_storage_hangs(
    clock: Clock, logged: list[Any]
) -> None:
    hanging = QueueService(clock, HangingStorage(), MemoryStorage(), limits=TEST_LIMITS)
    api = Api(build_resource(make_ctx(hanging)))
    health = api.start("GET", "/v2/health")
    ping = api.start("GET", "/v2/ping")
    clock.advance(1.9)
    api.flush()
    assert not has_result(health) and not has_result(ping)
    clock.advance(0.1)  # the core's ping timeout: 2 s
    api.flush()
    assert (await health).status == 503
    assert (await ping).status == 503


@pytest_twisted.ensureDeferred
async def test_health_reports_reachable_storage(api: Api) -> None:
    reply = await api.get("/v2/health")
    assert reply.status == 200
    assert reply.json["catalog_reachable"] is True
    status = reply.json["storage"]["operation_status"]["ping"]
    assert status["succeeded"] is True


@pytest_twisted.ensureDeferred
async def test_unknown_routes_are_a_json_404(api: Api) -> None:
    for path in ("/v3/queues", "/v2/queues/a/b/c", "/v2/topics", "/favicon.ico"):
        reply = await api.get(path)
        assert reply.status == 404, path
        assert reply.json == {
            "title": "Not found",
            "description": "The requested resource could not be found.",
        }


@pytest_twisted.ensureDeferred
async def test_wrong_methods_are_a_json_405_naming_the_allowed_ones(api: Api) -> None:
    reply = await api.request("PUT", "/v2/queues/jobs/messages")
    assert reply.status == 405
    assert reply.header("Allow") == "DELETE, GET, HEAD, OPTIONS, POST"
    assert reply.json["title"] == "Method not allowed"
    odd = await api.request("BREW", "/v2/queues")
    assert odd.status == 405


@pytest_twisted.ensureDeferred
async def test_options_lists_the_allowed_methods(api: Api) -> None:
    reply = await api.request("OPTIONS", "/v2/queues/jobs/claims/abc")
    assert reply.status == 204
    assert reply.header("Allow") == "DELETE, GET, HEAD, OPTIONS, PATCH"


@pytest_twisted.ensureDeferred
async def test_web_mounts_are_served_beside_the_api(api: Api) -> None:
    reply = await api.get("/stomp")
    assert reply.status == 200
    assert reply.body == b"stomp here"


# -- CORS ------------------------------------------------------------------------------------


@pytest_twisted.ensureDeferred
async def test_cors_headers_answer_any_origin_by_default(api: Api) -> None:
    reply = await api.get("/v2/queues", headers={"Origin": "https://app.example"})
    assert reply.header("Access-Control-Allow-Origin") == "*"
    assert "Location" in (reply.header("Access-Control-Expose-Headers") or "")
    plain = await api.get("/v2/queues")
    assert plain.header("Access-Control-Allow-Origin") is None


@pytest_twisted.ensureDeferred
async def test_cors_preflight_needs_no_credentials(api: Api) -> None:
    reply = await api.request(
        "OPTIONS",
        "/v2/queues/jobs/messages",
        client=None,
        project=None,
        headers={
            "Origin": "https://app.example",
            "Access-Control-Request-Method": "POST",
            "Access-Control-Request-Headers": "client-id, x-project-id, content-type",
        },
    )
    assert reply.status == 204
    assert reply.header("Access-Control-Allow-Origin") == "*"
    assert reply.header("Access-Control-Allow-Methods") == "DELETE, GET, HEAD, OPTIONS, POST"
    assert reply.header("Access-Control-Allow-Headers") == "client-id, x-project-id, content-type"
    assert reply.header("Access-Control-Max-Age") == "86400"


@pytest_twisted.ensureDeferred
async def test_cors_answers_only_listed_origins(service: QueueService) -> None:
    http = replace(HTTP_TEST_CONFIG, cors_origins=("https://good.example",))
    api = Api(build_resource(make_ctx(service, http=http)))
    good = await api.get("/v2/queues", headers={"Origin": "https://good.example"})
    assert good.header("Access-Control-Allow-Origin") == "https://good.example"
    assert good.header("Vary") == "Origin"
    bad = await api.get("/v2/queues", headers={"Origin": "https://evil.example"})
    assert bad.status == 200
    assert bad.header("Access-Control-Allow-Origin") is None
    off = Api(build_resource(make_ctx(service, http=replace(HTTP_TEST_CONFIG, cors_origins=()))))
    none = await off.get("/v2/queues", headers={"Origin": "https://good.example"})
    assert none.header("Access-Control-Allow-Origin") is None


# -- tenants ---------------------------------------------------------------------------------


@pytest_twisted.ensureDeferred
async def test_a_tenant_never_sees_another_tenants_queues(api: Api) -> None:
    await api.put("/v2/queues/secret", {"owner": "p1"})
    await api.post_messages("secret", "p1 data")
    other = {"project": "p2"}
    assert (await api.get("/v2/queues", **other)).json["queues"] == []
    assert "count" not in (await api.get("/v2/queues?with_count=true", **other)).json
    assert "owner" not in (await api.get("/v2/queues/secret", **other)).json
    assert (await api.get("/v2/queues/secret/messages?echo=true", **other)).json["messages"] == []
    assert (await api.get("/v2/queues/secret/messages/1", **other)).status == 404
    assert (await api.get("/v2/queues/secret/stats", **other)).json["messages"]["total"] == 0
    assert (
        await api.post("/v2/queues/secret/claims", {"ttl": 60, "grace": 60}, **other)
    ).status == 204
    assert (await api.delete("/v2/queues/secret/messages?pop=1", **other)).json["messages"] == []
    assert (await api.delete("/v2/queues/secret", **other)).status == 204
    # p2 had a view of nothing and changed nothing of p1's.
    mine = await api.get("/v2/queues/secret/messages?echo=true")
    assert mine.bodies == ["p1 data"]
    assert (await api.get("/v2/queues/secret")).json["owner"] == "p1"


@pytest_twisted.ensureDeferred
async def test_a_missing_or_malformed_project_is_refused(api: Api) -> None:
    missing = await api.get("/v2/queues", project=None)
    assert missing.status == 401
    assert missing.json["title"] == "Unauthorized"
    malformed = await api.get("/v2/queues", project="no spaces allowed")
    assert malformed.status == 400


@pytest_twisted.ensureDeferred
async def test_api_keys_name_the_tenant(service: QueueService, clock: Clock) -> None:
    store = MemoryStorage()
    admin = TenantAdmin(store, clock)
    await admin.create_tenant("acme")
    token = await admin.create_key("acme")
    auth = APIKeys(store, clock)
    api = Api(build_resource(make_ctx(service, auth=auth)), project="")
    created = await api.put("/v2/queues/jobs", project=None, headers={"X-Auth-Token": token})
    assert created.status == 201
    assert (await service.get_queue("acme", "jobs")).name == "jobs"
    refused = await api.get("/v2/queues", project=None, headers={"X-Auth-Token": "qg_x_y"})
    assert refused.status == 401
    other = await api.get("/v2/queues", project="p9", headers={"X-Auth-Token": token})
    assert other.status == 401


# -- failures --------------------------------------------------------------------------------


@pytest_twisted.ensureDeferred
async def test_an_unexpected_error_is_a_logged_json_500_and_serving_goes_on(
    service: QueueService, logged: list[dict[str, Any]]
) -> None:
    verifyObject(IAuthenticator, ExplodingAuth())
    broken = make_ctx(service, auth=ExplodingAuth())
    api = Api(build_resource(broken))
    reply = await api.get("/v2/queues")
    assert reply.status == 500
    assert reply.json == {
        "title": "Internal server error",
        "description": "The server could not complete the request.",
    }
    assert b"secret internals" not in reply.body
    failures = [e["log_failure"] for e in logged if "log_failure" in e]
    assert any(f.check(RuntimeError) for f in failures)
    assert (await api.get("/v2/ping")).status == 204
    assert (await api.get("/v2/queues")).status == 500
