"""Queues over HTTP: create, show, patch, list, stats, purge, delete, and their errors."""

from __future__ import annotations

import pytest
import pytest_twisted

from qgate.core.model import NewMessage, Overflow
from qgate.core.service import QueueService
from tests.support.http import Api

#: What GET shows for a queue made with no metadata: every reserved key at its default.
DEFAULT_METADATA = {
    "_default_message_ttl": 3600,
    "_default_message_delay": 0,
    "_max_messages_post_size": 262144,
    "_dead_letter_queue": None,
    "_dead_letter_queue_messages_ttl": None,
    "_max_claim_count": None,
    "_enable_encrypt_messages": False,
    "_flavor": "durable",
}


@pytest_twisted.ensureDeferred
async def test_put_creates_a_queue_with_201_then_answers_204(api: Api) -> None:
    first = await api.put("/v2/queues/jobs")
    assert first.status == 201
    assert first.header("Location") == "/v2/queues/jobs"
    assert first.body == b""
    again = await api.put("/v2/queues/jobs")
    assert again.status == 204


@pytest_twisted.ensureDeferred
async def test_get_shows_metadata_with_reserved_keys_filled_in(api: Api) -> None:
    await api.put("/v2/queues/jobs", {"description": "work", "_default_message_ttl": 120})
    reply = await api.get("/v2/queues/jobs")
    assert reply.status == 200
    assert reply.json == {
        **DEFAULT_METADATA,
        "description": "work",
        "_default_message_ttl": 120,
    }


@pytest_twisted.ensureDeferred
async def test_reserved_metadata_sets_the_queue_options(api: Api, service: QueueService) -> None:
    reply = await api.put(
        "/v2/queues/jobs",
        {
            "_default_message_ttl": 600,
            "_default_message_delay": 30,
            "_max_claim_count": 3,
            "_dead_letter_queue": "jobs-dead",
            "_dead_letter_queue_messages_ttl": 7200,
            "_max_messages": 10,
            "_max_bytes": 4096,
            "_overflow": "drop_oldest",
            "_flavor": "transient",
        },
    )
    assert reply.status == 201
    options = (await service.get_queue("p1", "jobs")).options
    assert options.default_ttl == 600
    assert options.default_delay == 30
    assert options.max_claim_count == 3
    assert options.dead_letter_queue == "jobs-dead"
    assert options.dead_letter_ttl == 7200
    assert options.max_messages == 10
    assert options.max_bytes == 4096
    assert options.overflow is Overflow.DROP_OLDEST
    assert options.durable is False
    shown = (await api.get("/v2/queues/jobs")).json
    assert shown["_flavor"] == "transient"
    assert shown["_overflow"] == "drop_oldest"
    assert shown["_max_claim_count"] == 3


@pytest.mark.parametrize(
    "metadata",
    [
        {"_default_message_ttl": 59},
        {"_default_message_ttl": 1209601},
        {"_default_message_ttl": "60"},
        {"_default_message_delay": 901},
        {"_max_messages_post_size": 0},
        {"_max_messages_post_size": 262145},
        {"_max_claim_count": 0},
        {"_dead_letter_queue": "no spaces"},
        {"_dead_letter_queue_messages_ttl": 10},
        {"_max_messages": True},
        {"_overflow": "explode"},
        {"_flavor": "gold"},
    ],
)
@pytest_twisted.ensureDeferred
async def test_bad_reserved_metadata_is_a_400_and_creates_nothing(
    api: Api, service: QueueService, metadata: dict[str, object]
) -> None:
    reply = await api.put("/v2/queues/jobs", metadata)
    assert reply.status == 400
    assert reply.json["title"] == "Invalid API request"
    assert await service.list_queues("p1") == []


@pytest_twisted.ensureDeferred
async def test_put_with_a_non_object_body_is_a_400(api: Api) -> None:
    reply = await api.put("/v2/queues/jobs", [1, 2])
    assert reply.status == 400
    assert reply.json == {
        "title": "Invalid request body",
        "description": "Document type not supported.",
    }


@pytest_twisted.ensureDeferred
async def test_metadata_over_64_kib_is_refused(api: Api) -> None:
    reply = await api.put("/v2/queues/jobs", {"blob": "x" * (64 * 1024)})
    assert reply.status == 400
    assert reply.json["description"] == "Queue metadata is too large. Max size: 65536"


@pytest.mark.parametrize("name", ["bad name", "a" * 65, "sl%2Fash", "caf%C3%A9"])
@pytest_twisted.ensureDeferred
async def test_an_invalid_queue_name_is_a_400_and_creates_nothing(
    api: Api, service: QueueService, name: str
) -> None:
    reply = await api.put(f"/v2/queues/{name}")
    assert reply.status == 400
    assert reply.json["title"] == "Invalid queue identification"
    assert await service.list_queues("p1") == []


@pytest_twisted.ensureDeferred
async def test_get_of_a_queue_never_created_shows_the_defaults_and_creates_nothing(
    api: Api, service: QueueService
) -> None:
    """Zaqar's queues are lazy: every name reads as an empty queue with the defaults."""
    reply = await api.get("/v2/queues/nope")
    assert reply.status == 200
    assert reply.json == DEFAULT_METADATA
    assert await service.list_queues("p1") == []
    assert (await api.get("/v2/queues")).json["queues"] == []


@pytest_twisted.ensureDeferred
async def test_head_of_a_missing_queue_is_404(api: Api) -> None:
    """HEAD (a qgate extension: Zaqar has none) says whether the queue exists."""
    head = await api.request("HEAD", "/v2/queues/nope")
    assert head.status == 404
    assert head.body == b""


@pytest_twisted.ensureDeferred
async def test_head_answers_204_for_an_existing_queue(api: Api) -> None:
    await api.put("/v2/queues/jobs")
    assert (await api.request("HEAD", "/v2/queues/jobs")).status == 204


@pytest_twisted.ensureDeferred
async def test_delete_removes_the_queue_and_its_messages(api: Api, service: QueueService) -> None:
    await api.post_messages("jobs", "a")
    assert (await api.delete("/v2/queues/jobs")).status == 204
    assert (await api.request("HEAD", "/v2/queues/jobs")).status == 404
    assert (await api.delete("/v2/queues/jobs")).status == 204  # deleting twice is fine
    assert await service.list_queues("p1") == []


# -- PATCH -----------------------------------------------------------------------------------


@pytest_twisted.ensureDeferred
async def test_patch_adds_replaces_and_removes_metadata(api: Api) -> None:
    await api.put("/v2/queues/jobs", {"keep": 1, "old": 2, "gone": 3})
    reply = await api.patch(
        "/v2/queues/jobs",
        [
            {"op": "add", "path": "/metadata/new", "value": "n"},
            {"op": "replace", "path": "/metadata/old", "value": 20},
            {"op": "remove", "path": "/metadata/gone"},
        ],
    )
    assert reply.status == 200
    assert reply.json == {**DEFAULT_METADATA, "keep": 1, "old": 20, "new": "n"}
    assert (await api.get("/v2/queues/jobs")).json == reply.json


@pytest_twisted.ensureDeferred
async def test_patch_of_reserved_keys_changes_and_resets_options(
    api: Api, service: QueueService
) -> None:
    await api.put("/v2/queues/jobs", {"_max_messages": 5})
    await api.patch(
        "/v2/queues/jobs",
        [
            {"op": "replace", "path": "/metadata/_default_message_ttl", "value": 90},
            {"op": "remove", "path": "/metadata/_max_messages"},
        ],
    )
    options = (await service.get_queue("p1", "jobs")).options
    assert options.default_ttl == 90
    assert options.max_messages is None


@pytest_twisted.ensureDeferred
async def test_patch_cannot_change_the_flavor(api: Api) -> None:
    await api.put("/v2/queues/jobs")
    reply = await api.patch(
        "/v2/queues/jobs", [{"op": "add", "path": "/metadata/_flavor", "value": "transient"}]
    )
    assert reply.status == 400
    assert "durability" in reply.json["description"]


@pytest_twisted.ensureDeferred
async def test_patch_needs_the_json_patch_content_type(api: Api) -> None:
    await api.put("/v2/queues/jobs")
    reply = await api.patch(
        "/v2/queues/jobs",
        [{"op": "add", "path": "/metadata/a", "value": 1}],
        headers={"Content-Type": "application/json"},
    )
    assert reply.status == 415
    assert reply.header("Accept-Patch") == "application/openstack-messaging-v2.0-json-patch"


@pytest.mark.parametrize(
    ("changes", "status"),
    [
        ({"op": "add"}, 400),
        ([{"path": "/metadata/a", "value": 1}], 400),
        ([{"op": "move", "path": "/metadata/a", "value": 1}], 400),
        ([{"op": "add", "path": "metadata/a", "value": 1}], 400),
        ([{"op": "add", "path": "/metadata", "value": 1}], 400),
        ([{"op": "add", "path": "/other/a", "value": 1}], 400),
        ([{"op": "add", "path": "/metadata/a"}], 400),
        (["add"], 400),
        ([{"op": "replace", "path": "/metadata/missing", "value": 1}], 409),
        ([{"op": "remove", "path": "/metadata/missing"}], 409),
        ([{"op": "add", "path": "/metadata/_default_message_ttl", "value": 5}], 400),
    ],
)
@pytest_twisted.ensureDeferred
async def test_bad_patches_are_refused_and_change_nothing(
    api: Api, changes: object, status: int
) -> None:
    await api.put("/v2/queues/jobs", {"a": 1})
    reply = await api.patch("/v2/queues/jobs", changes)
    assert reply.status == status
    assert set(reply.json) == {"title", "description"}
    assert (await api.get("/v2/queues/jobs")).json["a"] == 1


@pytest_twisted.ensureDeferred
async def test_patch_with_an_empty_body_is_a_400(api: Api) -> None:
    await api.put("/v2/queues/jobs")
    reply = await api.request(
        "PATCH",
        "/v2/queues/jobs",
        headers={"Content-Type": "application/openstack-messaging-v2.0-json-patch"},
    )
    assert reply.status == 400
    assert reply.json["description"] == "PATCH body could not be empty for update."


@pytest_twisted.ensureDeferred
async def test_patch_of_a_missing_queue_is_404(api: Api) -> None:
    reply = await api.patch("/v2/queues/nope", [{"op": "add", "path": "/metadata/a", "value": 1}])
    assert reply.status == 404


# -- listing ---------------------------------------------------------------------------------


@pytest_twisted.ensureDeferred
async def test_list_pages_with_next_links(api: Api) -> None:
    for name in ("c", "a", "b"):
        await api.put(f"/v2/queues/{name}", {"n": name})
    first = await api.get("/v2/queues?limit=2")
    assert first.status == 200
    assert first.json["queues"] == [
        {"name": "a", "href": "/v2/queues/a"},
        {"name": "b", "href": "/v2/queues/b"},
    ]
    [link] = first.json["links"]
    assert link["rel"] == "next"
    assert link["href"] == "/v2/queues?limit=2&marker=b"  # Zaqar's order
    second = await api.get(link["href"])
    assert [q["name"] for q in second.json["queues"]] == ["c"]
    last = await api.get(second.json["links"][0]["href"])
    assert last.json == {"queues": [], "links": []}


@pytest_twisted.ensureDeferred
async def test_detailed_listing_includes_metadata_and_count_counts(api: Api) -> None:
    await api.put("/v2/queues/a", {"n": 1})
    await api.put("/v2/queues/b")
    reply = await api.get("/v2/queues?detailed=true&with_count=true&limit=1")
    [queue] = reply.json["queues"]
    assert queue["metadata"]["n"] == 1
    assert queue["metadata"]["_default_message_ttl"] == 3600
    assert reply.json["count"] == 2


@pytest.mark.parametrize("query", ["limit=0", "limit=21", "limit=ten", "detailed=maybe"])
@pytest_twisted.ensureDeferred
async def test_bad_list_parameters_are_a_400(api: Api, query: str) -> None:
    reply = await api.get(f"/v2/queues?{query}")
    assert reply.status == 400
    assert set(reply.json) == {"title", "description"}


# -- stats and purge -------------------------------------------------------------------------


@pytest_twisted.ensureDeferred
async def test_stats_count_messages_by_state(api: Api, service: QueueService) -> None:
    await api.post_messages("jobs", "a", "b", "c")
    await service.publish("p1", "jobs", [NewMessage(b"later", delay=60)])
    await api.post("/v2/queues/jobs/claims?limit=1", {"ttl": 60, "grace": 60})
    stats = (await api.get("/v2/queues/jobs/stats")).json["messages"]
    # Zaqar counts delayed messages as free; qgate also says how many are delayed.
    assert {k: stats[k] for k in ("claimed", "free", "delayed", "total")} == {
        "claimed": 1,
        "free": 3,
        "delayed": 1,
        "total": 4,
    }
    assert set(stats["oldest"]) == {"age", "created", "href"}
    assert stats["oldest"]["href"] == "/v2/queues/jobs/messages/1"
    assert stats["newest"]["href"] == "/v2/queues/jobs/messages/4"
    assert stats["oldest"]["created"].endswith("Z")
    assert stats["oldest"]["age"] == 0


@pytest_twisted.ensureDeferred
async def test_stats_of_a_missing_or_empty_queue_are_zero(api: Api) -> None:
    missing = await api.get("/v2/queues/nope/stats")
    assert missing.status == 200
    assert missing.json == {"messages": {"claimed": 0, "free": 0, "total": 0}}
    await api.put("/v2/queues/empty")
    empty = (await api.get("/v2/queues/empty/stats")).json["messages"]
    assert empty["total"] == 0
    assert "oldest" not in empty


@pytest_twisted.ensureDeferred
async def test_purge_deletes_the_messages_and_keeps_the_queue(api: Api) -> None:
    await api.post_messages("jobs", "a", "b")
    reply = await api.post("/v2/queues/jobs/purge", {"resource_types": ["messages"]})
    assert reply.status == 204
    assert (await api.get("/v2/queues/jobs/stats")).json["messages"]["total"] == 0
    assert (await api.get("/v2/queues/jobs")).status == 200
    assert (await api.post("/v2/queues/jobs/purge")).status == 204  # no body: everything
    assert (await api.post("/v2/queues/nope/purge")).status == 204


@pytest.mark.parametrize("body", [{"resource_types": ["queues"]}, {"types": ["messages"]}])
@pytest_twisted.ensureDeferred
async def test_purge_of_unknown_resource_types_is_a_400(api: Api, body: object) -> None:
    await api.post_messages("jobs", "a")
    reply = await api.post("/v2/queues/jobs/purge", body)
    assert reply.status == 400
    assert (await api.get("/v2/queues/jobs/stats")).json["messages"]["total"] == 1


@pytest.mark.parametrize(
    ("method", "path", "status", "document"),
    [
        ("GET", "/v2/queues/ghost/stats", 200, {"messages": {"claimed": 0, "free": 0, "total": 0}}),
        ("GET", "/v2/queues/ghost/messages", 200, {"messages": [], "links": []}),
        ("GET", "/v2/queues/ghost/messages?ids=1", 404, None),
        ("GET", "/v2/queues/ghost/messages/1", 404, None),
        ("DELETE", "/v2/queues/ghost/messages?ids=1", 204, None),
        ("DELETE", "/v2/queues/ghost/messages?pop=1", 200, {"messages": []}),
        ("DELETE", "/v2/queues/ghost/messages/1", 204, None),
        ("POST", "/v2/queues/ghost/purge", 204, None),
        ("POST", "/v2/queues/ghost/claims", 204, None),
        ("GET", "/v2/queues/ghost/claims/feedface", 404, None),
        ("DELETE", "/v2/queues/ghost/claims/feedface", 204, None),
        ("DELETE", "/v2/queues/ghost", 204, None),
    ],
)
@pytest_twisted.ensureDeferred
async def test_a_queue_never_created_answers_as_zaqars_lazy_queues_and_stays_uncreated(
    api: Api, service: QueueService, method: str, path: str, status: int, document: object
) -> None:
    """What Zaqar 23 (Redis) answers for each request on a name never used."""
    reply = await api.request(method, path)
    assert reply.status == status
    if document is not None:
        assert reply.json == document
    assert await service.list_queues("p1") == []
