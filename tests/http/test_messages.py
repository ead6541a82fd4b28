"""Messages over HTTP: post, list, get, delete, pop, and what bad input gets."""

from __future__ import annotations

import base64
import hashlib
import json
import uuid
from dataclasses import replace

import pytest
import pytest_twisted
from twisted.internet.task import Clock

from qgate.core.model import NewMessage, QueueOptions
from qgate.core.service import QueueService
from qgate.protocols.http import build_resource
from tests.support.http import CLIENT, HTTP_TEST_CONFIG, OTHER_CLIENT, Api, make_ctx


@pytest_twisted.ensureDeferred
async def test_post_answers_201_with_resource_paths(api: Api, service: QueueService) -> None:
    reply = await api.post(
        "/v2/queues/jobs/messages",
        {"messages": [{"ttl": 300, "body": {"event": "start"}}, {"ttl": 60, "body": [1, "two"]}]},
    )
    assert reply.status == 201
    assert reply.json == {"resources": ["/v2/queues/jobs/messages/1", "/v2/queues/jobs/messages/2"]}
    assert reply.header("Location") == "/v2/queues/jobs/messages?ids=1,2"
    stored = await service.get_message("p1", "jobs", "1")
    assert json.loads(stored.body) == {"event": "start"}
    assert stored.content_type == "application/json"
    assert stored.producer == CLIENT
    assert stored.ttl == 300


@pytest_twisted.ensureDeferred
async def test_post_creates_the_queue_lazily_with_its_default_ttl(
    api: Api, service: QueueService
) -> None:
    await api.post("/v2/queues/lazy/messages", {"messages": [{"body": "x"}]})
    queue = await service.get_queue("p1", "lazy")
    assert queue.name == "lazy"
    assert (await service.get_message("p1", "lazy", "1")).ttl == queue.options.default_ttl


@pytest_twisted.ensureDeferred
async def test_delay_makes_a_message_invisible_until_it_is_due(api: Api, clock: Clock) -> None:
    await api.post("/v2/queues/jobs/messages", {"messages": [{"body": "later", "delay": 120}]})
    listed = await api.get("/v2/queues/jobs/messages?echo=true")
    assert listed.json["messages"] == []
    delayed = await api.get("/v2/queues/jobs/messages?echo=true&include_delayed=true")
    assert delayed.bodies == ["later"]
    clock.advance(120)
    due = await api.get("/v2/queues/jobs/messages?echo=true")
    assert due.bodies == ["later"]


@pytest_twisted.ensureDeferred
async def test_list_renders_messages_as_zaqar_does(api: Api, clock: Clock) -> None:
    await api.post_messages("jobs", {"n": 1})
    clock.advance(7)
    reply = await api.get("/v2/queues/jobs/messages?echo=true")
    assert reply.status == 200
    assert reply.json["messages"] == [
        {
            "id": "1",
            "href": "/v2/queues/jobs/messages/1",
            "ttl": 300,
            "age": 7,
            "body": {"n": 1},
            "claim_count": 0,
        }
    ]


@pytest_twisted.ensureDeferred
async def test_echo_decides_whether_a_client_sees_its_own_messages(api: Api) -> None:
    await api.post_messages("jobs", "mine")
    await api.post_messages("jobs", "theirs", client=OTHER_CLIENT)
    default = await api.get("/v2/queues/jobs/messages")
    assert default.bodies == ["theirs"]
    echoed = await api.get("/v2/queues/jobs/messages?echo=true")
    assert echoed.bodies == ["mine", "theirs"]


@pytest_twisted.ensureDeferred
async def test_a_client_id_with_or_without_dashes_is_the_same_client(api: Api) -> None:
    await api.post_messages("jobs", "mine", client=CLIENT)
    undashed = uuid.UUID(CLIENT).hex
    reply = await api.get("/v2/queues/jobs/messages", client=undashed)
    assert reply.json["messages"] == []


@pytest_twisted.ensureDeferred
async def test_listing_follows_next_links_to_the_end(api: Api) -> None:
    await api.post_messages("jobs", *range(5))
    bodies: list[object] = []
    path = "/v2/queues/jobs/messages?limit=2&echo=true"
    while True:
        reply = await api.get(path)
        if not reply.json["messages"]:
            assert reply.json["links"] == []
            break
        bodies += reply.bodies
        path = reply.json["links"][0]["href"]
        assert "echo=true" in path and "limit=2" in path
    assert bodies == [0, 1, 2, 3, 4]


@pytest.mark.parametrize(
    "marker", ["578edfe6508f153f256f717b", "3381af92-2b9e-11e3-b191-71861300734c", "-1", "abc"]
)
@pytest_twisted.ensureDeferred
async def test_a_marker_qgate_never_issued_lists_from_the_start(api: Api, marker: str) -> None:
    """Zaqar 23 (row 5): a marker it does not know is a listing from the start, not a 400
    (a client may hold another server's marker: a Mongo ObjectId, a Redis UUID)."""
    await api.post_messages("jobs", "a", "b", "c")
    reply = await api.get(f"/v2/queues/jobs/messages?marker={marker}&echo=true&limit=2")
    assert reply.status == 200
    assert reply.bodies == ["a", "b"]
    [link] = reply.json["links"]
    assert link["href"] == "/v2/queues/jobs/messages?marker=2&limit=2&echo=true"
    rest = await api.get(link["href"])
    assert rest.bodies == ["c"]


@pytest_twisted.ensureDeferred
async def test_next_links_write_the_parameters_as_zaqar_parsed_them(api: Api) -> None:
    await api.post_messages("jobs", "a")
    reply = await api.get("/v2/queues/jobs/messages?echo=yes&limit=05&include_claimed=0")
    [link] = reply.json["links"]
    assert (
        link["href"] == "/v2/queues/jobs/messages?limit=5&echo=true&include_claimed=false&marker=1"
    )


@pytest_twisted.ensureDeferred
async def test_claimed_messages_are_listed_only_when_asked(api: Api) -> None:
    await api.post_messages("jobs", "a", "b")
    claim = await api.post("/v2/queues/jobs/claims?limit=1", {"ttl": 60, "grace": 60})
    claim_id = (claim.header("Location") or "").rsplit("/", 1)[1]
    plain = await api.get("/v2/queues/jobs/messages?echo=true")
    assert plain.bodies == ["b"]
    everything = await api.get("/v2/queues/jobs/messages?echo=true&include_claimed=true")
    first = everything.json["messages"][0]
    assert first["href"] == f"/v2/queues/jobs/messages/1?claim_id={claim_id}"
    assert first["claim_id"] == claim_id
    assert first["claim_count"] == 1


@pytest_twisted.ensureDeferred
async def test_listing_a_missing_queue_is_an_empty_200(api: Api) -> None:
    reply = await api.get("/v2/queues/nope/messages")
    assert reply.status == 200
    assert reply.json == {"messages": [], "links": []}


@pytest.mark.parametrize("query", ["limit=0", "limit=21", "limit=x", "echo=perhaps"])
@pytest_twisted.ensureDeferred
async def test_bad_listing_parameters_are_a_400(api: Api, query: str) -> None:
    await api.post_messages("jobs", "a")
    reply = await api.get(f"/v2/queues/jobs/messages?{query}")
    assert reply.status == 400
    assert set(reply.json) == {"title", "description"}


@pytest.mark.parametrize(
    ("client", "title"),
    [(None, "Missing header value"), ("not-a-uuid", "Wrong UUID value")],
)
@pytest_twisted.ensureDeferred
async def test_message_endpoints_need_a_uuid_client_id(
    api: Api, client: str | None, title: str
) -> None:
    for method, path in [
        ("GET", "/v2/queues/jobs/messages"),
        ("POST", "/v2/queues/jobs/messages"),
        ("GET", "/v2/queues/jobs/messages/1"),
        ("DELETE", "/v2/queues/jobs/messages?ids=1"),
        ("POST", "/v2/queues/jobs/claims"),
    ]:
        reply = await api.request(method, path, client=client)
        assert reply.status == 400, (method, path)
        assert reply.json["title"] == title


@pytest_twisted.ensureDeferred
async def test_get_by_ids_returns_those_that_exist(api: Api) -> None:
    await api.post_messages("jobs", "a", "b", "c")
    reply = await api.get("/v2/queues/jobs/messages?ids=3,1,99,bogus")
    assert reply.status == 200
    assert sorted(m["body"] for m in reply.json["messages"]) == ["a", "c"]
    assert "links" not in reply.json
    none = await api.get("/v2/queues/jobs/messages?ids=98,99")
    assert none.status == 404
    # Zaqar formats the list of ids into its description as Python writes a list.
    assert none.json["description"] == (
        "No messages with IDs: ['98', '99'] found in the queue jobs for project p1."
    )
    too_many = await api.get("/v2/queues/jobs/messages?ids=" + ",".join(map(str, range(21))))
    assert too_many.status == 400


@pytest_twisted.ensureDeferred
async def test_get_one_message(api: Api) -> None:
    await api.post_messages("jobs", {"x": 1})
    reply = await api.get("/v2/queues/jobs/messages/1")
    assert reply.status == 200
    assert reply.json["body"] == {"x": 1}
    assert reply.json["href"] == "/v2/queues/jobs/messages/1"
    assert (await api.get("/v2/queues/jobs/messages/2")).status == 404
    assert (await api.get("/v2/queues/jobs/messages/bogus")).status == 404
    assert (await api.get("/v2/queues/nope/messages/1")).status == 404


@pytest_twisted.ensureDeferred
async def test_bulk_delete_by_ids(api: Api) -> None:
    await api.post_messages("jobs", "a", "b", "c")
    reply = await api.delete("/v2/queues/jobs/messages?ids=1,3,77")
    assert reply.status == 204
    assert await api.bodies_of("jobs") == ["b"]
    assert (await api.delete("/v2/queues/nope/messages?ids=1")).status == 204


@pytest_twisted.ensureDeferred
async def test_pop_removes_and_returns_messages(api: Api) -> None:
    await api.post_messages("jobs", "a", "b", "c")
    reply = await api.delete("/v2/queues/jobs/messages?pop=2")
    assert reply.status == 200
    assert reply.bodies == ["a", "b"]
    assert await api.bodies_of("jobs") == ["c"]
    empty = await api.delete("/v2/queues/nope/messages?pop=1")
    assert empty.status == 200
    assert empty.json == {"messages": []}


@pytest.mark.parametrize("query", ["", "?ids=1&pop=1", "?pop=0", "?pop=21", "?pop=x"])
@pytest_twisted.ensureDeferred
async def test_bad_bulk_deletes_are_a_400_and_delete_nothing(api: Api, query: str) -> None:
    await api.post_messages("jobs", "a")
    reply = await api.delete(f"/v2/queues/jobs/messages{query}")
    assert reply.status == 400
    assert (await api.get("/v2/queues/jobs/stats")).json["messages"]["total"] == 1


@pytest_twisted.ensureDeferred
async def test_a_bulk_delete_by_ids_deletes_claimed_messages_as_zaqar_does(api: Api) -> None:
    """Zaqar's default (``message_delete_with_claim_id`` off): ids alone delete claimed
    messages too; python-zaqarclient's ``delete_messages`` sends nothing else."""
    await api.post_messages("jobs", "a", "b", "c")
    claim = await api.post("/v2/queues/jobs/claims?limit=2", {"ttl": 60, "grace": 60})
    assert claim.status == 201
    reply = await api.delete("/v2/queues/jobs/messages?ids=1,2,3")
    assert reply.status == 204
    assert (await api.get("/v2/queues/jobs/stats")).json["messages"]["total"] == 0


@pytest_twisted.ensureDeferred
async def test_deleting_a_claimed_message_needs_its_claim_id(api: Api) -> None:
    await api.post_messages("jobs", "a", "b")
    claim = await api.post("/v2/queues/jobs/claims?limit=1", {"ttl": 60, "grace": 60})
    href = claim.json["messages"][0]["href"]
    claim_id = href.split("claim_id=")[1]
    without = await api.delete("/v2/queues/jobs/messages/1")
    assert without.status == 403
    assert without.json["title"] == "Unable to delete"
    other = await api.delete("/v2/queues/jobs/messages?ids=1&claim_ids=0123456789abcdef")
    assert other.status == 403  # named claims that do not hold it
    wrong = await api.delete("/v2/queues/jobs/messages/1?claim_id=0123456789abcdef")
    assert wrong.status == 403
    unclaimed = await api.delete(f"/v2/queues/jobs/messages/2?claim_id={claim_id}")
    assert unclaimed.status == 400
    assert unclaimed.json["description"] == (
        "A claim was specified, but the message is not currently claimed."
    )
    right = await api.delete(href)
    assert right.status == 204
    assert (await api.get("/v2/queues/jobs/messages/1")).status == 404
    assert (await api.delete("/v2/queues/jobs/messages/1")).status == 204


@pytest_twisted.ensureDeferred
async def test_claimed_messages_are_deleted_in_bulk_by_their_claim_ids(api: Api) -> None:
    """Zaqar 23 (row 3): ``DELETE ?ids=...&claim_ids=...`` deletes claimed messages in bulk
    (204), so a consumer acks its batch in one request."""
    await api.post_messages("jobs", "a", "b", "c", "d")
    first = await api.post("/v2/queues/jobs/claims?limit=1", {"ttl": 60, "grace": 60})
    second = await api.post("/v2/queues/jobs/claims?limit=1", {"ttl": 60, "grace": 60})
    ids = [(c.header("Location") or "").rsplit("/", 1)[1] for c in (first, second)]
    reply = await api.delete(f"/v2/queues/jobs/messages?ids=1,2,3&claim_ids={','.join(ids)}")
    assert reply.status == 204
    assert await api.bodies_of("jobs", include_claimed=True) == ["d"]


@pytest_twisted.ensureDeferred
async def test_a_bulk_delete_naming_another_claim_deletes_no_unclaimed_message(api: Api) -> None:
    await api.post_messages("jobs", "a", "b")
    await api.post("/v2/queues/jobs/claims?limit=1", {"ttl": 60, "grace": 60})
    reply = await api.delete("/v2/queues/jobs/messages?ids=1,2&claim_ids=0123456789abcdef")
    assert reply.status == 403
    assert await api.bodies_of("jobs", include_claimed=True) == ["a", "b"]


# -- bad posts -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("document", "title"),
    [
        ({"messages": [{"ttl": 59, "body": 1}]}, "Invalid API request"),
        ({"messages": [{"ttl": 1209601, "body": 1}]}, "Invalid API request"),
        ({"messages": [{"ttl": "300", "body": 1}]}, "Invalid request body"),
        ({"messages": [{"ttl": 300.5, "body": 1}]}, "Invalid request body"),
        ({"messages": [{"delay": 901, "body": 1}]}, "Invalid API request"),
        ({"messages": [{"ttl": 300}]}, "Invalid request body"),
        ({"messages": []}, "Invalid API request"),
        ({"messages": {"body": 1}}, "Invalid request body"),
        ({"messages": ["body"]}, "Invalid request body"),
        ({"body": 1}, "Invalid API request"),
        ([{"body": 1}], "Invalid API request"),
    ],
)
@pytest_twisted.ensureDeferred
async def test_bad_posts_are_a_400_and_store_nothing(
    api: Api, service: QueueService, document: object, title: str
) -> None:
    reply = await api.post("/v2/queues/jobs/messages", document)
    assert reply.status == 400
    assert reply.json["title"] == title
    assert await service.list_queues("p1") == []


@pytest.mark.parametrize(
    "data", [b"{not json", b"", b'{"messages": [{"body": NaN}]}', b"\xff\xfe", b"[" * 100_000]
)
@pytest_twisted.ensureDeferred
async def test_malformed_json_is_a_400(api: Api, service: QueueService, data: bytes) -> None:
    reply = await api.send("POST", "/v2/queues/jobs/messages", data, "application/json")
    assert reply.status == 400
    assert reply.json["title"] == "Invalid request body"
    assert b"Traceback" not in reply.body
    assert await service.list_queues("p1") == []


@pytest.mark.parametrize(
    ("content_type", "status"),
    [("application/x-www-form-urlencoded", 400), ("text/plain", 415), ("application/xml", 415)],
)
@pytest_twisted.ensureDeferred
async def test_a_body_that_is_not_json_is_refused(api: Api, content_type: str, status: int) -> None:
    reply = await api.send(
        "POST", "/v2/queues/jobs/messages", b'{"messages": [{"body": 1}]}', content_type
    )
    assert reply.status == status
    assert set(reply.json) == {"title", "description"}


@pytest_twisted.ensureDeferred
async def test_json_content_types_with_parameters_are_accepted(api: Api) -> None:
    reply = await api.send(
        "POST",
        "/v2/queues/jobs/messages",
        b'{"messages": [{"body": 1}]}',
        "application/json; charset=utf-8",
    )
    assert reply.status == 201


@pytest_twisted.ensureDeferred
async def test_posts_over_zaqars_size_limit_are_a_400(api: Api, service: QueueService) -> None:
    big = {"messages": [{"body": "x" * 262144}]}
    reply = await api.post("/v2/queues/jobs/messages", big)
    assert reply.status == 400
    assert reply.json["description"] == "Message collection size is too large. Max size 262144"
    await api.put("/v2/queues/small", {"_max_messages_post_size": 100})
    small = await api.post("/v2/queues/small/messages", {"messages": [{"body": "y" * 100}]})
    assert small.status == 400
    assert "max_post_bytes 100" in small.json["description"]
    assert (await service.queue_stats("p1", "small")).total == 0


@pytest_twisted.ensureDeferred
async def test_bodies_over_max_request_body_are_zaqars_400(api: Api, service: QueueService) -> None:
    """Zaqar 23 (row 2): 400, never 413, which python-zaqarclient takes for a success (the
    message would be lost without an error). The site's early refusal: test_site."""
    reply = await api.send(
        "POST", "/v2/queues/jobs/messages", b" " * (512 * 1024 + 1), "application/json"
    )
    assert reply.status == 400
    assert reply.json == {
        "title": "Invalid API request",
        "description": "Message collection size is too large. Max size 262144",
    }
    assert await service.list_queues("p1") == []


@pytest_twisted.ensureDeferred
async def test_a_full_bounded_queue_refuses_posts_with_409(api: Api) -> None:
    await api.put("/v2/queues/jobs", {"_max_messages": 1})
    await api.post_messages("jobs", "one")
    reply = await api.post("/v2/queues/jobs/messages", {"messages": [{"body": "two"}]})
    assert reply.status == 409
    assert reply.json["title"] == "Queue full"
    assert await api.bodies_of("jobs") == ["one"]


# -- bodies from other protocols -------------------------------------------------------------


@pytest_twisted.ensureDeferred
async def test_bodies_published_elsewhere_render_by_content_type(
    api: Api, service: QueueService
) -> None:
    await service.create_queue("p1", "mixed", QueueOptions())
    await service.publish(
        "p1",
        "mixed",
        [
            NewMessage(b"plain text", "text/plain"),
            NewMessage(b"\xff\x00\x10", "application/octet-stream"),
            NewMessage(b'{"a": [1]}', "application/vnd.thing+json"),
            # JSON-typed rows that are not JSON (the core refuses them): test_strict_json.
        ],
    )
    reply = await api.get("/v2/queues/mixed/messages?echo=true")
    assert reply.bodies == [
        "plain text",
        {
            "$binary": base64.b64encode(b"\xff\x00\x10").decode(),
            "content_type": "application/octet-stream",
        },
        {"a": [1]},
    ]


# -- checksums (Zaqar's enable_checksum) -----------------------------------------------------


@pytest_twisted.ensureDeferred
async def test_with_enable_checksum_every_message_shown_carries_its_bodys_md5(
    service: QueueService,
) -> None:
    """Zaqar 23 (row 9): ``MD5:`` and the MD5 of the body as Python's json.dumps writes it
    (the api-ref's sample bodies and checksums: test_zaqar_conformance)."""
    http = replace(HTTP_TEST_CONFIG, enable_checksum=True)
    api = Api(build_resource(make_ctx(service, http=http)))
    body = {"event": "BackupProgress", "current_bytes": "0", "é": [1.5, None]}
    expected = "MD5:" + hashlib.md5(json.dumps(body).encode()).hexdigest()
    await api.post_messages("jobs", body, "two", None)
    listed = (await api.get("/v2/queues/jobs/messages?echo=true")).json["messages"]
    assert [m.get("checksum") for m in listed] == [
        expected,
        "MD5:" + hashlib.md5(b'"two"').hexdigest(),
        None,  # Zaqar gives a null body no checksum
    ]
    assert (await api.get("/v2/queues/jobs/messages/1")).json["checksum"] == expected
    by_ids = (await api.get("/v2/queues/jobs/messages?ids=1")).json["messages"]
    assert by_ids[0]["checksum"] == expected
    claim = await api.post("/v2/queues/jobs/claims?limit=1", {"ttl": 60, "grace": 60})
    assert claim.json["messages"][0]["checksum"] == expected
    shown = (await api.get(claim.header("Location") or "")).json
    assert shown["messages"][0]["checksum"] == expected
    popped = (await api.delete("/v2/queues/jobs/messages?pop=1")).json["messages"]
    assert popped[0]["checksum"] == "MD5:" + hashlib.md5(b'"two"').hexdigest()


@pytest_twisted.ensureDeferred
async def test_without_enable_checksum_messages_carry_no_checksum(api: Api) -> None:
    await api.post_messages("jobs", {"n": 1})
    listed = (await api.get("/v2/queues/jobs/messages?echo=true")).json["messages"]
    assert "checksum" not in listed[0]
    assert "checksum" not in (await api.get("/v2/queues/jobs/messages/1")).json


@pytest.mark.parametrize(
    ("method", "path", "status"),
    [
        ("GET", "/v2/queues/q/messages/%C2%B2", 404),
        ("GET", "/v2/queues/q/messages/%D9%A1", 404),
        ("DELETE", "/v2/queues/q/messages/%C2%B2", 204),
        ("GET", "/v2/queues/q/messages?ids=%C2%B2", 404),
        ("DELETE", "/v2/queues/q/messages?ids=%C2%B2", 204),
        ("GET", "/v2/queues/q/messages?echo=true&marker=%C2%B2", 200),
    ],
)
@pytest_twisted.ensureDeferred
async def test_ids_of_non_ascii_digits_name_no_message(
    api: Api, method: str, path: str, status: int
) -> None:
    """Found by fuzzing: "²" is a digit to str.isdigit() but not to int(), a 500; and "١"
    (Arabic-Indic one) was message 1."""
    await api.post_messages("q", "a")
    reply = await api.request(method, path)
    assert reply.status == status, reply.body
    if method == "GET" and status == 200:
        assert reply.bodies == ["a"]
