"""Pre-signed URLs (Zaqar v2's ``POST /v2/queues/{q}/share`` and the ``URL-*`` headers):
what the share answers and refuses, and which signed requests are let in without a token."""

from __future__ import annotations

from dataclasses import replace
from datetime import UTC, datetime
from typing import Any

import pytest
import pytest_twisted
from twisted.internet.task import Clock

from qgate.core.auth import APIKeys, TenantAdmin
from qgate.core.service import QueueService
from qgate.gateway.config import ConfigError, parse
from qgate.protocols.http import build_resource
from qgate.protocols.http.settings import HTTPSettings
from qgate.protocols.http.signed import signature
from qgate.storage.memory import MemoryStorage
from tests.support.http import HTTP_TEST_CONFIG, Api, Reply, make_ctx

KEY = "test-secret"
SIGNING = replace(HTTP_TEST_CONFIG, signed_url_secret_key=KEY)

#: Computed with Zaqar's own ``zaqar.common.urls.create_signed_url("test-secret",
#: ["/v2/queues/jobs/messages", "/v2/queues/jobs/claims"], project="acme",
#: expires="2100-01-02T03:04:05", methods=["POST", "GET"])``.
ZAQAR_SIGNED = {
    "paths": ["/v2/queues/jobs/claims", "/v2/queues/jobs/messages"],
    "methods": ["GET", "POST"],
    "project": "acme",
    "expires": "2100-01-02T03:04:05",
    "signature": "d8cf0fa1f6a59a6184a3d0ed5296b9797ab2a7d689651fc85a98362ef2718b68",
}


def signing_api(service: QueueService, http: HTTPSettings = SIGNING, **kw: Any) -> Api:
    return Api(build_resource(make_ctx(service, http=http, **kw)))


@pytest.fixture
def api(service: QueueService) -> Api:
    return signing_api(service)


def url_headers(signed: dict[str, Any], **changes: str) -> dict[str, str | None]:
    """The headers python-zaqarclient's ``signed-url`` backend sends for ``signed``."""
    headers: dict[str, str | None] = {
        "URL-Signature": signed["signature"],
        "URL-Expires": signed["expires"],
        "URL-Methods": ",".join(signed["methods"]),
        "URL-Paths": ",".join(signed["paths"]),
    }
    headers.update(changes)
    return headers


async def share(api: Api, queue: str = "jobs", body: Any = None, **kw: Any) -> Reply:
    return await api.post(f"/v2/queues/{queue}/share", {} if body is None else body, **kw)


def when(clock: Clock, seconds: float = 0) -> str:
    moment = datetime.fromtimestamp(clock.seconds() + seconds, UTC)
    return moment.strftime("%Y-%m-%dT%H:%M:%S")


# -- the signature ---------------------------------------------------------------------------


def test_the_signature_is_zaqars_hmac_sha256() -> None:
    s = ZAQAR_SIGNED
    assert (
        signature(KEY.encode(), s["paths"], s["methods"], "acme", s["expires"]) == (s["signature"])
    )
    # The order paths and methods are given in does not matter: both are sorted first.
    assert (
        signature(KEY.encode(), s["paths"][::-1], ["POST", "GET"], "acme", s["expires"])
        == (s["signature"])
    )


# -- creating --------------------------------------------------------------------------------


@pytest_twisted.ensureDeferred
async def test_share_answers_200_with_zaqars_document_and_signature(api: Api) -> None:
    reply = await share(
        api,
        body={
            "paths": ["messages", "claims"],
            "methods": ["POST", "GET"],
            "expires": "2100-01-02T05:04:05.5+02:00",
        },
        project="acme",
    )
    assert reply.status == 200, reply.body
    # Same inputs, same answer as Zaqar's create_signed_url: the expiry in UTC to the second.
    assert reply.json == ZAQAR_SIGNED
    assert list(reply.json) == ["paths", "methods", "project", "expires", "signature"]


@pytest_twisted.ensureDeferred
async def test_share_signs_get_of_messages_for_a_day_by_default(api: Api, clock: Clock) -> None:
    reply = await share(api)
    assert reply.status == 200
    assert reply.json["paths"] == ["/v2/queues/jobs/messages"]
    assert reply.json["methods"] == ["GET"]
    assert reply.json["project"] == "p1"
    assert reply.json["expires"] == when(clock, 86400)


@pytest.mark.parametrize(
    ("body", "description"),
    [
        ({"dummy": "meh"}, "Unknown keys: {'dummy'}"),
        ({"paths": ["messages", "queues", "x"]}, "Invalid paths: {'queues', 'x'}"),
        ({"paths": "messages"}, "`paths` must be a non-empty list"),
        ({"methods": "GET"}, "`methods` should be a list"),
        ({"methods": ["GET", "get", "FOO"]}, "Invalid methods: {'FOO', 'get'}"),
        ({"expires": "wrong date format"}, "Unable to parse date string 'wrong date format'"),
        (
            {"expires": "1700000000"},
            "`expires` should be date format, for example 2016-01-01T00:00:00, "
            "not integer value: 1700000000",
        ),
        ({"expires": 12}, "`expires` should be date format"),
        ({"expires": "0"}, "Unable to parse date string '0'"),
        ({"expires": "9999-12-31T23:00:00-05:00"}, "Unable to parse date string"),
        ({"expires": "1970-01-01T00:00:00"}, "`expires` is lower than the current time"),
    ],
)
@pytest_twisted.ensureDeferred
async def test_share_refuses_what_zaqar_refuses(
    api: Api, service: QueueService, body: Any, description: str
) -> None:
    reply = await share(api, body=body)
    assert reply.status == 400
    assert reply.json["title"] == "Invalid API request"
    assert reply.json["description"].startswith(description)
    assert await service.list_queues("p1") == []


@pytest.mark.parametrize(
    ("data", "description"),
    [
        (b"", "Request body can not be empty"),
        (b"not json", "Request body could not be parsed"),
        (b"[]", "Document type not supported."),
    ],
)
@pytest_twisted.ensureDeferred
async def test_share_needs_a_json_object(api: Api, data: bytes, description: str) -> None:
    reply = await api.post("/v2/queues/jobs/share", data=data)
    assert reply.status == 400
    assert reply.json["title"] == "Invalid request body"
    assert reply.json["description"].startswith(description)


@pytest_twisted.ensureDeferred
async def test_without_a_secret_key_share_is_refused_as_zaqar_does(
    service: QueueService,
) -> None:
    api = signing_api(service, HTTP_TEST_CONFIG)
    reply = await share(api)
    assert reply.status == 400
    assert reply.json["title"] == "Invalid API request"
    assert reply.json["description"].startswith("The `key` can't be None")


# -- using -----------------------------------------------------------------------------------


@pytest_twisted.ensureDeferred
async def test_a_signed_url_posts_and_lists_messages_without_a_token_in_keys_mode(
    service: QueueService, clock: Clock
) -> None:
    store = MemoryStorage()
    admin = TenantAdmin(store, clock)
    await admin.create_tenant("acme")
    token = await admin.create_key("acme")
    api = signing_api(service, auth=APIKeys(store, clock))
    created = await share(
        api, body={"methods": ["GET", "POST"]}, project=None, headers={"X-Auth-Token": token}
    )
    assert created.status == 200
    signed = created.json
    assert signed["project"] == "acme"

    unsigned = await api.get("/v2/queues/jobs/messages", project="acme")
    assert unsigned.status == 401
    headers = url_headers(signed)
    [first] = await api.post_messages("jobs", {"n": 1}, project="acme", headers=headers)
    listed = await api.get("/v2/queues/jobs/messages?echo=true", project="acme", headers=headers)
    assert listed.status == 200
    assert listed.bodies == [{"n": 1}]
    # A resource below a signed path is covered: one message by its id.
    one = await api.get(f"/v2/queues/jobs/messages/{first}", project="acme", headers=headers)
    assert one.status == 200 and one.json["body"] == {"n": 1}
    assert (await service.queue_stats("acme", "jobs")).total == 1


@pytest_twisted.ensureDeferred
async def test_a_url_signed_by_zaqar_with_the_same_key_is_let_in(
    api: Api, service: QueueService
) -> None:
    await service.create_queue("acme", "jobs")
    reply = await api.get(
        "/v2/queues/jobs/messages", project="acme", headers=url_headers(ZAQAR_SIGNED)
    )
    assert reply.status == 200, reply.body  # let in: an empty page
    assert reply.json["messages"] == []


def tampered(signed: dict[str, Any]) -> dict[str, dict[str, str | None]]:
    """Header sets a signed request is refused with, by what is wrong with them."""
    sig = signed["signature"]
    return {
        "signature changed": url_headers(signed, **{"URL-Signature": sig[:-1] + "0"}),
        "signature missing a character": url_headers(signed, **{"URL-Signature": sig[:-1]}),
        "a method added": url_headers(signed, **{"URL-Methods": "DELETE,GET,POST"}),
        "a path added": url_headers(
            signed, **{"URL-Paths": "/v2/queues/jobs/messages,/v2/queues/other/messages"}
        ),
        "expiry moved": url_headers(signed, **{"URL-Expires": "2100-01-01T00:00:00"}),
        "expiry not a date": url_headers(signed, **{"URL-Expires": "soon"}),
        "expiry missing": url_headers(signed, **{"URL-Expires": None}),
        "paths missing": url_headers(signed, **{"URL-Paths": None}),
    }


@pytest.mark.parametrize(
    "case",
    [
        "signature changed",
        "signature missing a character",
        "a method added",
        "a path added",
        "expiry moved",
        "expiry not a date",
        "expiry missing",
        "paths missing",
    ],
)
@pytest_twisted.ensureDeferred
async def test_a_tampered_signed_request_is_404_and_changes_nothing(
    api: Api, service: QueueService, case: str
) -> None:
    signed = (await share(api, body={"methods": ["GET", "POST"]})).json
    headers = tampered(signed)[case]
    reply = await api.post(
        "/v2/queues/jobs/messages", {"messages": [{"body": 1, "ttl": 60}]}, headers=headers
    )
    assert reply.status == 404, reply.body
    assert reply.json["title"] == "Not found"
    assert await service.list_queues("p1") == []


@pytest.mark.parametrize(
    ("method", "path", "why"),
    [
        ("DELETE", "/v2/queues/jobs/messages?ids=1", "does not allow the method DELETE"),
        ("HEAD", "/v2/queues/jobs/messages", "does not allow the method HEAD"),
        ("GET", "/v2/queues/jobs", "does not cover this path"),
        ("GET", "/v2/queues/jobs/stats", "does not cover this path"),
        ("GET", "/v2/queues/other/messages", "does not cover this path"),
        ("GET", "/v2/queues/jobs/claims/abc", "does not cover this path"),
        ("GET", "/v2/queues", "does not cover this path"),
        ("POST", "/v2/queues/jobs/share", "does not cover this path"),
        ("GET", "/v2/ping", "does not cover this path"),
    ],
)
@pytest_twisted.ensureDeferred
async def test_only_the_signed_methods_and_paths_are_let_in(
    api: Api, service: QueueService, method: str, path: str, why: str
) -> None:
    await service.create_queue("p1", "jobs")
    signed = (await share(api, body={"methods": ["GET", "POST"]})).json
    reply = await api.request(method, path, headers=url_headers(signed))
    assert reply.status == 404
    if method != "HEAD":
        assert why in reply.json["description"]
    assert [q.name for q in await service.list_queues("p1")] == ["jobs"]


@pytest_twisted.ensureDeferred
async def test_a_signed_url_is_for_its_project_only(api: Api, service: QueueService) -> None:
    await service.create_queue("p1", "jobs")
    await service.create_queue("p2", "jobs")
    signed = (await share(api)).json
    reply = await api.get("/v2/queues/jobs/messages", project="p2", headers=url_headers(signed))
    assert reply.status == 404
    assert "signature does not match" in reply.json["description"]
    missing = await api.get("/v2/queues/jobs/messages", project=None, headers=url_headers(signed))
    assert missing.status == 404


@pytest_twisted.ensureDeferred
async def test_a_signed_url_stops_working_when_it_expires(
    api: Api, service: QueueService, clock: Clock
) -> None:
    await service.create_queue("p1", "jobs")
    signed = (await share(api, body={"expires": when(clock, 60)})).json
    headers = url_headers(signed)
    assert (await api.get("/v2/queues/jobs/messages", headers=headers)).status == 200
    clock.advance(59)
    assert (await api.get("/v2/queues/jobs/messages", headers=headers)).status == 200
    clock.advance(1)
    expired = await api.get("/v2/queues/jobs/messages", headers=headers)
    assert expired.status == 404
    assert expired.json["description"] == "The pre-signed URL has expired."


@pytest_twisted.ensureDeferred
async def test_a_dot_in_a_signed_queue_name_matches_only_a_dot(
    api: Api, service: QueueService
) -> None:
    """Zaqar matches signed paths as regular expressions, so ``a.b`` would also let in
    ``aXb``; here paths compare segment by segment."""
    await service.create_queue("p1", "aXb")
    signed = (await share(api, "a.b")).json
    assert (await api.get("/v2/queues/a.b/messages", headers=url_headers(signed))).status == 200
    other = await api.get("/v2/queues/aXb/messages", headers=url_headers(signed))
    assert other.status == 404


@pytest_twisted.ensureDeferred
async def test_a_signature_is_checked_before_the_client_id_and_instead_of_the_token(
    service: QueueService, clock: Clock
) -> None:
    """Zaqar's first hook: a bad signature is a 404 even without a Client-ID, and a valid
    token does not rescue it."""
    store = MemoryStorage()
    admin = TenantAdmin(store, clock)
    await admin.create_tenant("acme")
    token = await admin.create_key("acme")
    api = signing_api(service, auth=APIKeys(store, clock))
    headers = url_headers(ZAQAR_SIGNED, **{"URL-Signature": "0" * 64})
    no_client = await api.get("/v2/queues/jobs/messages", client=None, headers=headers)
    assert no_client.status == 404
    headers["X-Auth-Token"] = token
    with_token = await api.get("/v2/queues/jobs/messages", project="acme", headers=headers)
    assert with_token.status == 404
    # An empty URL-Signature is no signature: the token decides, as in Zaqar.
    headers["URL-Signature"] = ""
    token_only = await api.get("/v2/queues/jobs/messages", project="acme", headers=headers)
    assert token_only.status == 200


@pytest_twisted.ensureDeferred
async def test_without_a_secret_key_signed_requests_are_404_even_in_trusted_mode(
    service: QueueService,
) -> None:
    api = signing_api(service, HTTP_TEST_CONFIG)
    await service.create_queue("acme", "jobs")
    reply = await api.get(
        "/v2/queues/jobs/messages", project="acme", headers=url_headers(ZAQAR_SIGNED)
    )
    assert reply.status == 404
    assert reply.json["description"] == "Pre-signed URLs are not enabled on this server."
    plain = await api.get("/v2/queues/jobs/messages", project="acme")
    assert plain.status == 200


@pytest_twisted.ensureDeferred
async def test_the_share_is_in_the_json_home_document(api: Api) -> None:
    home = await api.get("/v2")
    share_rel = home.json["resources"]["rel/queue_share"]
    assert share_rel["href-template"] == "/v2/queues/{queue_name}/share"
    assert share_rel["hints"]["allow"] == ["POST"]


def test_the_secret_key_is_read_from_the_http_table_and_kept_out_of_its_repr() -> None:
    settings = parse({"http": {"signed_url_secret_key": KEY}}).settings("http")
    assert settings.signed_url_secret_key == KEY
    assert KEY not in repr(settings)
    assert parse({}).settings("http").signed_url_secret_key == ""
    with pytest.raises(ConfigError, match="http.signed_url_secret_key: expected a string"):
        parse({"http": {"signed_url_secret_key": 42}})


@pytest_twisted.ensureDeferred
async def test_a_url_signed_for_claims_claims_renews_and_acks(
    api: Api, service: QueueService
) -> None:
    await api.post_messages("jobs", "a", "b")
    body = {"paths": ["claims", "messages"], "methods": ["POST", "PATCH", "DELETE"]}
    headers = url_headers((await share(api, body=body)).json)
    claimed = await api.post("/v2/queues/jobs/claims?limit=1", {"ttl": 60}, headers=headers)
    assert claimed.status == 201, claimed.body
    [message] = claimed.json["messages"]
    claim_id = message["href"].split("claim_id=")[1]
    renewed = await api.patch(
        f"/v2/queues/jobs/claims/{claim_id}",
        {"ttl": 120},
        headers={**headers, "Content-Type": "application/json"},
    )
    assert renewed.status == 204, renewed.body
    acked = await api.delete(message["href"], headers=headers)
    assert acked.status == 204, acked.body
    assert (await service.queue_stats("p1", "jobs")).total == 1


@pytest_twisted.ensureDeferred
async def test_a_cors_preflight_allows_the_url_headers_by_default(api: Api) -> None:
    reply = await api.request(
        "OPTIONS",
        "/v2/queues/jobs/messages",
        headers={"Origin": "https://app.example", "Access-Control-Request-Method": "GET"},
    )
    assert reply.status == 204
    allowed = reply.header("Access-Control-Allow-Headers") or ""
    for name in ("URL-Signature", "URL-Expires", "URL-Methods", "URL-Paths"):
        assert name in allowed
