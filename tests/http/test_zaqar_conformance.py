"""The Zaqar v2 API reference, request by request: every documented request of the
versions, health, queues, messages and claims resources (``api-ref/source/*.inc``), with
its documented status, and its answer's fields and their JSON types as the reference's
samples (``api-ref/source/samples/*.json``, transcribed below) show them.

A field qgate sends that the sample lacks must be one Zaqar's own code sends (noted where
it is declared) or a qgate extension listed in ``docs/zaqar-compat.md`` (a test checks the
document names each). Deliberate differences of status are there too; the requests here
are the ones where qgate answers as Zaqar does. Everything runs in memory.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest
import pytest_twisted
from twisted.internet.task import Clock

from qgate.core.service import QueueService
from qgate.protocols.http import build_resource
from qgate.storage.memory import MemoryStorage
from tests.support.core import TEST_LIMITS
from tests.support.doubles import DownStorage
from tests.support.http import HTTP_TEST_CONFIG, Api, make_ctx

DOC = Path(__file__).resolve().parents[2] / "docs" / "zaqar-compat.md"

# -- the samples ------------------------------------------------------------------------------

PROGRESS = {"current_bytes": "0", "event": "BackupProgress", "total_bytes": "99614720"}
PROGRESS_CHECKSUM = "MD5:abf7213555626e29c3cb3e5dc58b3515"  # messages-get-response.json
STARTED_CHECKSUM = "MD5:82eb2714b7c0237d373947c046cac78d"  # claim_messages_response.json

VERSIONS_LIST_RESPONSE = {
    "versions": [
        {
            "status": "CURRENT",
            "updated": "2014-9-24T04:06:47Z",
            "media-types": [
                {"base": "application/json", "type": "application/vnd.openstack.messaging-v2+json"}
            ],
            "id": "2",
            "links": [{"href": "/v2/", "rel": "self"}],
        }
    ]
}
HEALTH_RESPONSE = {  # health-response.json, one pool and one operation
    "catalog_reachable": True,
    "storage": {
        "storage_reachable": True,
        "operation_status": {"ping": {"seconds": 0.0, "ref": None, "succeeded": True}},
    },
}
QUEUES_LIST_RESPONSE = {
    "queues": [{"href": "/v2/queues/beijing", "name": "beijing"}],
    "links": [{"href": "/v2/queues?marker=wellington", "rel": "next"}],
    "count": 3,
}
QUEUE_CREATE_REQUEST = {
    "_max_messages_post_size": 262144,
    "_default_message_ttl": 3600,
    "_default_message_delay": 30,
    "_dead_letter_queue": "dead_letter",
    "_dead_letter_queue_messages_ttl": 3600,
    "_max_claim_count": 10,
    "_enable_encrypt_messages": True,
    "description": "Queue for international traffic billing.",
}
QUEUE_SHOW_RESPONSE = {
    "_max_messages_post_size": 262144,
    "_default_message_ttl": 3600,
    "description": "Queue used for billing.",
    "_max_claim_count": 10,
    "_dead_letter_queue": "dead_letter",
    "_dead_letter_queue_messages_ttl": 3600,
    "_enable_encrypt_messages": True,
}
QUEUE_UPDATE_REQUEST = [{"op": "replace", "path": "/metadata/max_timeout", "value": 100}]
QUEUE_UPDATE_RESPONSE = {"max_timeout": 100}
QUEUE_STATS_RESPONSE = {"messages": {"claimed": 10, "total": 20, "free": 10}}
PURGE_QUEUE_REQUEST = {"resource_types": ["messages", "subscriptions"]}
MESSAGES_POST_REQUEST = {
    "messages": [
        {
            "ttl": 300,
            "delay": 20,
            "body": {"event": "BackupStarted", "backup_id": "c378813c-3f0b-11e2-ad92-7823d2b0f3ce"},
        },
        {"body": {"event": "BackupProgress", "current_bytes": "0", "total_bytes": "99614720"}},
    ]
}
MESSAGES_POST_RESPONSE = {
    "resources": [
        "/v2/queues/demoqueue/messages/51db6f78c508f17ddc924357",
        "/v2/queues/demoqueue/messages/51db6f78c508f17ddc924358",
    ]
}
MESSAGE = {
    "body": PROGRESS,
    "age": 482,
    "href": "/v2/queues/beijing/messages/578edfe6508f153f256f717b",
    "id": "578edfe6508f153f256f717b",
    "ttl": 3600,
    "checksum": PROGRESS_CHECKSUM,
}
MESSAGES_LIST_RESPONSE = {
    "messages": [MESSAGE],
    "links": [{"href": "/v2/queues/beijing/messages?marker=17&echo=true", "rel": "next"}],
}
MESSAGES_GET_BYIDS_RESPONSE = {"messages": [{k: v for k, v in MESSAGE.items() if k != "checksum"}]}
MESSAGES_GET_RESPONSE = MESSAGE
MESSAGES_DELETE_BYPOP_RESPONSE = {
    "messages": [
        {
            "body": PROGRESS,
            "age": 443,
            "claim_count": 1,
            "claim_id": "51db7067821e727dc24df754",
            "id": "578f0055508f153f256f717f",
            "ttl": 3600,
        }
    ]
}
CLAIM_MESSAGES_REQUEST = {"ttl": 300, "grace": 300}
CLAIM_MESSAGES_RESPONSE = {
    "messages": [
        {
            "body": {"event": "BackupStarted"},
            "age": 239,
            "href": "/v2/queues/demoqueue/messages/51db6f78c508f17ddc924357"
            "?claim_id=51db7067821e727dc24df754",
            "ttl": 300,
            "checksum": STARTED_CHECKSUM,
        }
    ]
}
CLAIM_QUERY_RESPONSE = {
    "age": 57,
    "href": "/v2/queues/demoqueue/claims/51db7067821e727dc24df754",
    "messages": [
        {
            "body": {"event": "BackupStarted"},
            "age": 296,
            "href": "/v2/queues/demoqueue/messages/51db6f78c508f17ddc924357"
            "?claim_id=51db7067821e727dc24df754",
            "ttl": 300,
        }
    ],
    "ttl": 300,
}
CLAIM_UPDATE_REQUEST = {"ttl": 300, "grace": 300}

# -- what qgate may send beyond a sample ------------------------------------------------------

#: Fields Zaqar's own code sends that a sample leaves out.
ZAQAR_SENDS: Mapping[str, frozenset[str]] = {
    # queues._get_reserved_metadata fills these into every queue document.
    "queue": frozenset(["_default_message_delay", "_dead_letter_queue", "_max_claim_count"])
    | frozenset(["_dead_letter_queue_messages_ttl", "_enable_encrypt_messages"])
    | frozenset(["_max_messages_post_size", "_default_message_ttl"]),
    # wsgi.utils.format_message always writes the id.
    "message": frozenset(["id"]),
    # stats: oldest and newest while the queue holds messages.
    "stats": frozenset(["oldest", "newest"]),
}
#: qgate's extensions, each named in docs/zaqar-compat.md.
QGATE_EXTRAS: Mapping[str, frozenset[str]] = {
    "queue": frozenset(["_flavor"]),
    "message": frozenset(["claim_count", "claim_id"]),
    "stats": frozenset(["delayed"]),
    "claim": frozenset(["grace"]),
    "popped": frozenset(),
}


def extras(kind: str) -> frozenset[str]:
    return ZAQAR_SENDS.get(kind, frozenset()) | QGATE_EXTRAS.get(kind, frozenset())


# -- comparing shapes -------------------------------------------------------------------------


def json_type(value: Any) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "boolean"
    if isinstance(value, int | float):
        return "number"
    if isinstance(value, str):
        return "string"
    if isinstance(value, list):
        return "array"
    assert isinstance(value, dict), value
    return "object"


def assert_shape(
    actual: Any,
    sample: Any,
    allowed: Mapping[str, frozenset[str]] | None = None,
    types: Mapping[str, frozenset[str]] | None = None,
    path: str = "",
) -> None:
    """``actual`` has every field of ``sample``, each of the sample's JSON type (or one of
    ``types[path]``), recursively into objects and into every element of arrays (against
    the sample's first); its other fields are among ``allowed[path]``. Paths are dotted,
    ``[]`` for an array's elements (``messages[].claim_id``)."""
    allowed, types = allowed or {}, types or {}
    want = types.get(path, frozenset([json_type(sample)]))
    assert json_type(actual) in want, f"{path or 'document'}: {actual!r} is not {sorted(want)}"
    if isinstance(sample, dict) and isinstance(actual, dict):
        missing = set(sample) - set(actual)
        assert not missing, f"{path or 'document'} lacks {sorted(missing)}"
        unknown = set(actual) - set(sample) - allowed.get(path, frozenset())
        assert not unknown, f"{path or 'document'} has unexpected {sorted(unknown)}"
        for key, value in sample.items():
            assert_shape(actual[key], value, allowed, types, f"{path}.{key}".lstrip("."))
    elif isinstance(sample, list) and isinstance(actual, list) and sample:
        for item in actual:
            assert_shape(item, sample[0], allowed, types, f"{path}[]")


MESSAGE_FIELDS = {"messages[]": extras("message")}
MESSAGE_BODY = {"messages[].body": frozenset(["object"])}


# -- fixtures ---------------------------------------------------------------------------------


@pytest.fixture
def zaqar(service: QueueService) -> Api:
    """The API with Zaqar's ``enable_checksum`` on, as the message samples show."""
    http = replace(HTTP_TEST_CONFIG, enable_checksum=True)
    return Api(build_resource(make_ctx(service, http=http)))


async def post_progress(api: Api, count: int = 1) -> None:
    """``count`` messages of the samples' BackupProgress body to the queue ``beijing``."""
    posted = {"messages": [{"body": PROGRESS}] * count}
    assert (await api.post("/v2/queues/beijing/messages", posted)).status == 201


async def claim(api: Api, queue: str = "demoqueue") -> str:
    reply = await api.post(f"/v2/queues/{queue}/claims", CLAIM_MESSAGES_REQUEST)
    assert reply.status == 201
    return (reply.header("Location") or "").rsplit("/", 1)[1]


# -- versions.inc -----------------------------------------------------------------------------


@pytest_twisted.ensureDeferred
async def test_get_root_lists_the_versions_with_300(zaqar: Api) -> None:
    reply = await zaqar.get("/", client=None, project=None)
    assert reply.status == 300
    assert reply.json == VERSIONS_LIST_RESPONSE


# -- health.inc -------------------------------------------------------------------------------


@pytest_twisted.ensureDeferred
async def test_ping_is_a_204_without_a_body(zaqar: Api) -> None:
    reply = await zaqar.get("/v2/ping")
    assert (reply.status, reply.body) == (204, b"")


@pytest_twisted.ensureDeferred
async def test_health_is_a_200_shaped_like_the_sample(zaqar: Api) -> None:
    reply = await zaqar.get("/v2/health")
    assert reply.status == 200
    assert_shape(
        reply.json,
        HEALTH_RESPONSE,
        types={"storage.operation_status.ping.ref": frozenset(["null", "string"])},
    )


@pytest_twisted.ensureDeferred
async def test_ping_and_health_are_503_while_storage_is_down(clock: Clock) -> None:
    down = QueueService(clock, DownStorage("ping"), MemoryStorage(), limits=TEST_LIMITS)
    api = Api(build_resource(make_ctx(down)))
    assert (await api.get("/v2/ping")).status == 503
    assert (await api.get("/v2/health")).status == 503


# -- queues.inc -------------------------------------------------------------------------------


@pytest_twisted.ensureDeferred
async def test_list_queues_is_a_200_shaped_like_the_sample(zaqar: Api) -> None:
    for name in ("beijing", "london", "wellington"):
        assert (await zaqar.put(f"/v2/queues/{name}")).status == 201
    reply = await zaqar.get("/v2/queues?with_count=true")
    assert reply.status == 200
    assert_shape(reply.json, QUEUES_LIST_RESPONSE)
    assert reply.json["count"] == 3
    assert reply.json["links"][0]["href"] == "/v2/queues?marker=wellington"
    detailed = await zaqar.get("/v2/queues?detailed=true&limit=1")
    sample = {"queues": [{**QUEUES_LIST_RESPONSE["queues"][0], "metadata": {}}], "links": []}
    assert_shape(
        detailed.json,
        sample,
        {"queues[].metadata": extras("queue")},
        {"links": frozenset(["array"])},
    )


@pytest_twisted.ensureDeferred
async def test_list_queues_documented_errors(zaqar: Api) -> None:
    assert (await zaqar.get("/v2/queues?limit=21")).status == 400
    assert (await zaqar.get("/v2/queues", project=None)).status == 401


@pytest_twisted.ensureDeferred
async def test_create_queue_with_the_sample_is_201_then_204(zaqar: Api) -> None:
    reply = await zaqar.put("/v2/queues/billing", QUEUE_CREATE_REQUEST)
    assert (reply.status, reply.body) == (201, b"")
    assert reply.header("Location") == "/v2/queues/billing"
    assert (await zaqar.put("/v2/queues/billing", QUEUE_CREATE_REQUEST)).status == 204
    assert (await zaqar.put("/v2/queues/bad", {"_default_message_ttl": 59})).status == 400


@pytest_twisted.ensureDeferred
async def test_show_queue_is_a_200_shaped_like_the_sample(zaqar: Api) -> None:
    await zaqar.put("/v2/queues/dead_letter")
    await zaqar.put("/v2/queues/billing", {**QUEUE_SHOW_RESPONSE})
    reply = await zaqar.get("/v2/queues/billing")
    assert reply.status == 200
    assert_shape(reply.json, QUEUE_SHOW_RESPONSE, {"": extras("queue")})
    assert {k: reply.json[k] for k in QUEUE_SHOW_RESPONSE} == QUEUE_SHOW_RESPONSE
    # Zaqar's queues are lazy: a name never used shows the defaults, 200.
    fresh = await zaqar.get("/v2/queues/never-created")
    assert fresh.status == 200
    sample = {k: v for k, v in QUEUE_SHOW_RESPONSE.items() if k != "description"}
    assert_shape(
        fresh.json,
        sample,
        {"": extras("queue")},
        {
            key: frozenset(["null", json_type(QUEUE_SHOW_RESPONSE[key])])
            for key in ("_max_claim_count", "_dead_letter_queue", "_dead_letter_queue_messages_ttl")
        },
    )
    assert (await zaqar.get("/v2/queues/not%20valid")).status == 400


@pytest_twisted.ensureDeferred
async def test_update_queue_with_the_sample_is_a_200_shaped_like_the_sample(zaqar: Api) -> None:
    # The sample replaces a key, which Zaqar refuses (409) unless it is set or reserved.
    await zaqar.put("/v2/queues/billing", {"max_timeout": 10})
    reply = await zaqar.patch("/v2/queues/billing", QUEUE_UPDATE_REQUEST)
    assert reply.status == 200
    assert_shape(reply.json, QUEUE_UPDATE_RESPONSE, {"": extras("queue")})
    assert reply.json["max_timeout"] == 100
    conflict = [{"op": "replace", "path": "/metadata/nothing", "value": 1}]
    assert (await zaqar.patch("/v2/queues/billing", conflict)).status == 409
    assert (await zaqar.patch("/v2/queues/nowhere", QUEUE_UPDATE_REQUEST)).status == 404
    assert (await zaqar.patch("/v2/queues/billing", [{"op": "move"}])).status == 400


@pytest_twisted.ensureDeferred
async def test_delete_queue_is_a_204_without_a_body(zaqar: Api) -> None:
    await zaqar.put("/v2/queues/billing")
    reply = await zaqar.delete("/v2/queues/billing")
    assert (reply.status, reply.body) == (204, b"")
    assert (await zaqar.delete("/v2/queues/billing")).status == 204


@pytest_twisted.ensureDeferred
async def test_queue_stats_are_a_200_shaped_like_the_sample(zaqar: Api) -> None:
    empty = await zaqar.get("/v2/queues/demoqueue/stats")
    assert empty.status == 200
    assert empty.json == {"messages": {"claimed": 0, "free": 0, "total": 0}}
    await zaqar.post("/v2/queues/demoqueue/messages", MESSAGES_POST_REQUEST)
    await zaqar.post("/v2/queues/demoqueue/claims?limit=1", CLAIM_MESSAGES_REQUEST)
    reply = await zaqar.get("/v2/queues/demoqueue/stats")
    assert reply.status == 200
    assert_shape(reply.json, QUEUE_STATS_RESPONSE, {"messages": extras("stats")})
    stats = reply.json["messages"]
    assert (stats["claimed"], stats["free"], stats["total"]) == (1, 1, 2)
    for end in ("oldest", "newest"):
        assert set(stats[end]) == {"age", "created", "href"}


@pytest_twisted.ensureDeferred
async def test_purge_with_the_sample_is_a_204(zaqar: Api) -> None:
    await zaqar.post("/v2/queues/demoqueue/messages", MESSAGES_POST_REQUEST)
    reply = await zaqar.post("/v2/queues/demoqueue/purge", PURGE_QUEUE_REQUEST)
    assert (reply.status, reply.body) == (204, b"")
    assert (await zaqar.get("/v2/queues/demoqueue/stats")).json["messages"]["total"] == 0
    bad = await zaqar.post("/v2/queues/demoqueue/purge", {"resource_types": ["queues"]})
    assert bad.status == 400


# -- messages.inc -----------------------------------------------------------------------------


@pytest_twisted.ensureDeferred
async def test_post_messages_with_the_sample_is_a_201_shaped_like_the_sample(zaqar: Api) -> None:
    reply = await zaqar.post("/v2/queues/demoqueue/messages", MESSAGES_POST_REQUEST)
    assert reply.status == 201
    assert_shape(reply.json, MESSAGES_POST_RESPONSE)
    assert reply.json["resources"] == [
        "/v2/queues/demoqueue/messages/1",
        "/v2/queues/demoqueue/messages/2",
    ]
    assert reply.header("Location") == "/v2/queues/demoqueue/messages?ids=1,2"
    no_messages = await zaqar.post("/v2/queues/demoqueue/messages", {"messages": []})
    assert no_messages.status == 400


@pytest_twisted.ensureDeferred
async def test_list_messages_is_a_200_shaped_like_the_sample(zaqar: Api) -> None:
    await post_progress(zaqar, 2)
    reply = await zaqar.get("/v2/queues/beijing/messages?echo=true")
    assert reply.status == 200
    assert_shape(reply.json, MESSAGES_LIST_RESPONSE, MESSAGE_FIELDS)
    assert [m["checksum"] for m in reply.json["messages"]] == [PROGRESS_CHECKSUM] * 2
    assert reply.json["links"][0]["href"] == "/v2/queues/beijing/messages?echo=true&marker=2"
    assert (await zaqar.get("/v2/queues/beijing/messages?limit=0")).status == 400


@pytest_twisted.ensureDeferred
async def test_get_messages_by_ids_is_a_200_shaped_like_the_sample(zaqar: Api) -> None:
    await post_progress(zaqar)
    reply = await zaqar.get("/v2/queues/beijing/messages?ids=1,99")
    assert reply.status == 200
    allowed = {"messages[]": extras("message") | {"checksum"}}
    assert_shape(reply.json, MESSAGES_GET_BYIDS_RESPONSE, allowed)
    assert (await zaqar.get("/v2/queues/beijing/messages?ids=99")).status == 404


@pytest_twisted.ensureDeferred
async def test_delete_messages_by_ids_is_a_204_and_by_pop_a_200_like_the_sample(
    zaqar: Api,
) -> None:
    await post_progress(zaqar, 3)
    by_ids = await zaqar.delete("/v2/queues/beijing/messages?ids=1,99")
    assert (by_ids.status, by_ids.body) == (204, b"")
    popped = await zaqar.delete("/v2/queues/beijing/messages?pop=1")
    assert popped.status == 200
    # The pop holds no claim once it answers: its claim_id is null (Zaqar shows its own).
    assert_shape(
        popped.json,
        MESSAGES_DELETE_BYPOP_RESPONSE,
        {"messages[]": frozenset(["checksum"])},
        {"messages[].claim_id": frozenset(["string", "null"])},
    )
    assert popped.json["messages"][0]["checksum"] == PROGRESS_CHECKSUM
    assert (await zaqar.delete("/v2/queues/beijing/messages")).status == 400


@pytest_twisted.ensureDeferred
async def test_get_a_message_is_a_200_shaped_like_the_sample(zaqar: Api) -> None:
    await post_progress(zaqar)
    reply = await zaqar.get("/v2/queues/beijing/messages/1")
    assert reply.status == 200
    assert_shape(reply.json, MESSAGES_GET_RESPONSE, {"": extras("message")})
    assert reply.json["checksum"] == PROGRESS_CHECKSUM
    assert (await zaqar.get("/v2/queues/beijing/messages/2")).status == 404


@pytest_twisted.ensureDeferred
async def test_delete_a_message_is_a_204(zaqar: Api) -> None:
    await post_progress(zaqar, 2)
    reply = await zaqar.delete("/v2/queues/beijing/messages/1")
    assert (reply.status, reply.body) == (204, b"")
    claim_id = await claim(zaqar, "beijing")
    assert (await zaqar.delete("/v2/queues/beijing/messages/2")).status == 403
    held = await zaqar.delete(f"/v2/queues/beijing/messages/2?claim_id={claim_id}")
    assert held.status == 204


# -- claims.inc -------------------------------------------------------------------------------


@pytest_twisted.ensureDeferred
async def test_claim_with_the_sample_is_a_201_shaped_like_the_sample(zaqar: Api) -> None:
    empty = await zaqar.post("/v2/queues/demoqueue/claims", CLAIM_MESSAGES_REQUEST)
    assert (empty.status, empty.body) == (204, b"")
    await zaqar.post(
        "/v2/queues/demoqueue/messages", {"messages": [{"body": {"event": "BackupStarted"}}]}
    )
    reply = await zaqar.post("/v2/queues/demoqueue/claims?limit=1", CLAIM_MESSAGES_REQUEST)
    assert reply.status == 201
    assert_shape(reply.json, CLAIM_MESSAGES_RESPONSE, MESSAGE_FIELDS)
    [message] = reply.json["messages"]
    claim_id = (reply.header("Location") or "").rsplit("/", 1)[1]
    assert reply.header("Location") == f"/v2/queues/demoqueue/claims/{claim_id}"
    assert message["href"] == f"/v2/queues/demoqueue/messages/1?claim_id={claim_id}"
    assert message["checksum"] == STARTED_CHECKSUM
    bad = await zaqar.post("/v2/queues/demoqueue/claims", {"ttl": 300, "grace": 30})
    assert bad.status == 400


@pytest_twisted.ensureDeferred
async def test_query_a_claim_is_a_200_shaped_like_the_sample(zaqar: Api) -> None:
    await zaqar.post(
        "/v2/queues/demoqueue/messages", {"messages": [{"body": {"event": "BackupStarted"}}]}
    )
    claim_id = await claim(zaqar)
    reply = await zaqar.get(f"/v2/queues/demoqueue/claims/{claim_id}")
    assert reply.status == 200
    allowed = {"": extras("claim"), "messages[]": extras("message") | {"checksum"}}
    assert_shape(reply.json, CLAIM_QUERY_RESPONSE, allowed)
    assert reply.json["href"] == f"/v2/queues/demoqueue/claims/{claim_id}"
    assert (await zaqar.get("/v2/queues/demoqueue/claims/feedface")).status == 404


@pytest_twisted.ensureDeferred
async def test_update_a_claim_with_the_sample_is_a_204(zaqar: Api) -> None:
    await zaqar.post("/v2/queues/demoqueue/messages", {"messages": [{"body": "x"}]})
    claim_id = await claim(zaqar)
    path = f"/v2/queues/demoqueue/claims/{claim_id}"
    reply = await zaqar.request("PATCH", path, CLAIM_UPDATE_REQUEST)
    assert (reply.status, reply.body) == (204, b"")
    missing = await zaqar.request(
        "PATCH", "/v2/queues/demoqueue/claims/feedface", CLAIM_UPDATE_REQUEST
    )
    assert missing.status == 404


@pytest_twisted.ensureDeferred
async def test_release_a_claim_is_a_204(zaqar: Api) -> None:
    await zaqar.post("/v2/queues/demoqueue/messages", {"messages": [{"body": "x"}]})
    claim_id = await claim(zaqar)
    reply = await zaqar.delete(f"/v2/queues/demoqueue/claims/{claim_id}")
    assert (reply.status, reply.body) == (204, b"")
    assert (await zaqar.delete(f"/v2/queues/demoqueue/claims/{claim_id}")).status == 204


# -- every request: documented errors shared by all -------------------------------------------

#: Every documented request, with a body where it needs one.
REQUESTS: list[tuple[str, str, Any]] = [
    ("GET", "/v2/queues", None),
    ("PUT", "/v2/queues/q", None),
    ("PATCH", "/v2/queues/q", QUEUE_UPDATE_REQUEST),
    ("GET", "/v2/queues/q", None),
    ("DELETE", "/v2/queues/q", None),
    ("GET", "/v2/queues/q/stats", None),
    ("POST", "/v2/queues/q/purge", PURGE_QUEUE_REQUEST),
    ("POST", "/v2/queues/q/messages", MESSAGES_POST_REQUEST),
    ("GET", "/v2/queues/q/messages", None),
    ("GET", "/v2/queues/q/messages?ids=1", None),
    ("DELETE", "/v2/queues/q/messages?ids=1", None),
    ("DELETE", "/v2/queues/q/messages?pop=1", None),
    ("GET", "/v2/queues/q/messages/1", None),
    ("DELETE", "/v2/queues/q/messages/1", None),
    ("POST", "/v2/queues/q/claims", CLAIM_MESSAGES_REQUEST),
    ("GET", "/v2/queues/q/claims/c", None),
    ("PATCH", "/v2/queues/q/claims/c", CLAIM_UPDATE_REQUEST),
    ("DELETE", "/v2/queues/q/claims/c", None),
]


async def send(api: Api, method: str, path: str, body: Any, **kw: Any) -> Any:
    if method == "PATCH" and "/claims/" not in path:
        return await api.patch(path, body, **kw)
    if body is None:
        return await api.request(method, path, **kw)
    return await api.request(method, path, body, **kw)


@pytest.mark.parametrize(("method", "path", "body"), REQUESTS)
@pytest_twisted.ensureDeferred
async def test_every_request_without_a_project_is_a_401(
    zaqar: Api, method: str, path: str, body: Any
) -> None:
    """401 is documented for every request; qgate's answer to a request that names no
    tenant (docs/zaqar-compat.md: Zaqar without auth says 400)."""
    reply = await send(zaqar, method, path, body, project=None)
    assert reply.status == 401
    assert reply.json["title"] == "Unauthorized"


@pytest.mark.parametrize(("method", "path", "body"), REQUESTS)
@pytest_twisted.ensureDeferred
async def test_every_request_is_a_503_while_storage_is_down(
    clock: Clock, method: str, path: str, body: Any
) -> None:
    methods = [name for name in dir(MemoryStorage) if not name.startswith("_")]
    durable = DownStorage(*[m for m in methods if callable(getattr(MemoryStorage, m))])
    down = QueueService(clock, durable, MemoryStorage(), limits=TEST_LIMITS)
    api = Api(build_resource(make_ctx(down)))
    reply = await send(api, method, path, body)
    assert reply.status == 503
    assert reply.json["title"] == "Service temporarily unavailable"


@pytest.mark.parametrize(("method", "path", "body"), [r for r in REQUESTS if "/queues/q" in r[1]])
@pytest_twisted.ensureDeferred
async def test_every_request_with_a_bad_queue_name_is_a_400(
    zaqar: Api, method: str, path: str, body: Any
) -> None:
    reply = await send(zaqar, method, path.replace("/queues/q", "/queues/no%20spaces"), body)
    assert reply.status == 400
    assert reply.json["title"] == "Invalid queue identification"


# -- the document -----------------------------------------------------------------------------


def test_every_qgate_extra_field_is_listed_in_the_compatibility_document() -> None:
    text = DOC.read_text()
    for names in QGATE_EXTRAS.values():
        for name in names:
            assert re.search(rf"`{re.escape(name)}`", text), f"{name} is not in {DOC.name}"
