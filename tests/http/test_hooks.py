"""Zaqar's before hooks on every route: form bodies, ``Accept`` (406) and ``Client-ID``."""

from __future__ import annotations

import pytest
import pytest_twisted

from qgate.core.service import QueueService
from qgate.protocols.http.hooks import accepts
from tests.support.http import Api

#: Every versioned route (Zaqar's require_client_id spares only ``/``; qgate also spares
#: the health probes, ping and health), with a method each.
VERSIONED = [
    ("GET", "/v2"),
    ("GET", "/v2/queues"),
    ("PUT", "/v2/queues/x"),
    ("GET", "/v2/queues/x"),
    ("PATCH", "/v2/queues/x"),
    ("DELETE", "/v2/queues/x"),
    ("GET", "/v2/queues/x/stats"),
    ("POST", "/v2/queues/x/purge"),
    ("GET", "/v2/queues/x/schema"),
    ("GET", "/v2/queues/x/messages"),
    ("POST", "/v2/queues/x/messages"),
    ("DELETE", "/v2/queues/x/messages?ids=1"),
    ("GET", "/v2/queues/x/messages/1"),
    ("DELETE", "/v2/queues/x/messages/1"),
    ("POST", "/v2/queues/x/claims"),
    ("GET", "/v2/queues/x/claims/c"),
    ("PATCH", "/v2/queues/x/claims/c"),
    ("DELETE", "/v2/queues/x/claims/c"),
    # A method the route lacks: Zaqar's hooks run before Falcon's 405.
    ("POST", "/v2/queues"),
]


@pytest.mark.parametrize(
    ("client", "title", "description"),
    [
        (None, "Missing header value", 'The "Client-Id" header is required.'),
        ("not-a-uuid", "Wrong UUID value", "Malformed hexadecimal UUID."),
    ],
    ids=["missing", "not-a-uuid"],
)
@pytest.mark.parametrize(("method", "path"), VERSIONED)
@pytest_twisted.ensureDeferred
async def test_every_versioned_route_needs_a_client_id_that_is_a_uuid(
    api: Api,
    service: QueueService,
    method: str,
    path: str,
    client: str | None,
    title: str,
    description: str,
) -> None:
    """Zaqar 23 (row 4): 400 and nothing done, without a Client-ID or with one that is not
    a UUID."""
    reply = await api.request(method, path, client=client)
    assert reply.status == 400
    assert reply.json == {"title": title, "description": description}
    assert await service.list_queues("p1") == []


@pytest_twisted.ensureDeferred
async def test_health_probes_answer_without_client_id_or_project(api: Api) -> None:
    """A deliberate difference: load balancers and orchestrators send neither header."""
    for method, path, status in (("GET", "/v2/ping", 204), ("HEAD", "/v2/ping", 204),
                                 ("GET", "/v2/health", 200)):
        reply = await api.request(method, path, client=None, project=None)
        assert reply.status == status, (method, path, reply.body)


@pytest_twisted.ensureDeferred
async def test_the_versions_document_and_unknown_paths_need_no_client_id(api: Api) -> None:
    assert (await api.get("/", client=None, project=None)).status == 300
    assert (await api.get("/v3/queues", client=None)).status == 404
    preflight = await api.request(
        "OPTIONS",
        "/v2/queues",
        client=None,
        headers={"Origin": "https://app.example", "Access-Control-Request-Method": "GET"},
    )
    assert preflight.status == 204


@pytest.mark.parametrize("accept", ["text/plain", "application/xml", "application/json;q=0", "x"])
@pytest.mark.parametrize("path", ["/", "/v2", "/v2/ping", "/v2/queues", "/v2/queues/x/stats"])
@pytest_twisted.ensureDeferred
async def test_an_accept_that_rules_json_out_is_a_406(api: Api, accept: str, path: str) -> None:
    """Zaqar 23 (row 6): 406 before anything else, with no body for a client that takes
    no JSON (Falcon writes its error documents only in a type the client accepts)."""
    reply = await api.get(path, client=None, headers={"Accept": accept})
    assert reply.status == 406
    assert reply.body == b""
    assert reply.header("Vary") == "Accept"


@pytest_twisted.ensureDeferred
async def test_a_406_to_a_client_taking_a_json_type_has_zaqars_document(api: Api) -> None:
    reply = await api.get("/v2/queues", headers={"Accept": "application/vnd.thing+json"})
    assert reply.status == 406
    assert reply.json == {
        "title": "406 Not Acceptable",
        "description": "Endpoint only serves `application/json`; specify client-side media "
        'type support with the "Accept" header.',
        "link": {
            "text": "14.1 Accept, Hypertext Transfer Protocol -- HTTP/1.1",
            "href": "http://www.w3.org/Protocols/rfc2616/rfc2616-sec14.html",
            "rel": "help",
        },
    }


@pytest.mark.parametrize(
    "accept", ["*/*", "application/*", "application/json", "text/plain, application/json;q=0.1"]
)
@pytest_twisted.ensureDeferred
async def test_an_accept_allowing_json_is_served(api: Api, accept: str) -> None:
    assert (await api.get("/v2/queues", headers={"Accept": accept})).status == 200


@pytest_twisted.ensureDeferred
async def test_the_types_a_route_serves_besides_json_are_acceptable_there_only(api: Api) -> None:
    home = await api.get("/v2", headers={"Accept": "application/json-home"})
    assert home.status == 200
    avro = await api.get("/v2/queues/x/messages", headers={"Accept": "avro/binary"})
    assert avro.status == 200
    assert (await api.get("/v2/queues", headers={"Accept": "avro/binary"})).status == 406


@pytest_twisted.ensureDeferred
async def test_a_form_body_is_refused_on_any_route(api: Api) -> None:
    reply = await api.send("DELETE", "/v2/queues/x", b"a=1", "application/x-www-form-urlencoded")
    assert reply.status == 400
    assert reply.json["title"] == "Invalid Content-Type"


@pytest.mark.parametrize(
    ("header", "media", "expected"),
    [
        (None, "application/json", True),
        ("", "application/json", True),
        ("*", "application/json", True),
        ("application/json; charset=utf-8", "application/json", True),
        ("application/*;q=0, application/json", "application/json", True),
        ("application/json;q=0, */*", "application/json", False),
        ("application/json;q=2", "application/json", False),
        ("application/json,", "application/json", False),
        ("text/html, application/xhtml+xml", "application/json", False),
    ],
)
def test_accepts_reads_accept_as_falcon_does(
    header: str | None, media: str, expected: bool
) -> None:
    """The most specific matching range decides (RFC 9110 12.5.1, Falcon 4's rules); a
    malformed header accepts nothing."""
    assert accepts(header, media) is expected
