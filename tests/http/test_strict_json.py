"""Strict JSON over HTTP: what is not JSON is a 400 that stores nothing, and whatever
storage holds (rows written before the core checked them) is answered, never a 500."""

from __future__ import annotations

import base64
import json
from typing import Any

import pytest
import pytest_twisted
from twisted.internet.task import Clock

from qgate.core.avro_bodies import avro_content_type
from qgate.core.model import NewMessage, QueueOptions
from qgate.core.schemas import parse_schema
from qgate.core.service import QueueService
from qgate.protocols.http import build_resource
from qgate.storage.memory import MemoryStorage
from tests.support.core import TEST_LIMITS
from tests.support.deferreds import fired
from tests.support.http import Api, make_ctx

JSON = {"Content-Type": "application/json"}


async def post_raw(api: Api, path: str, data: bytes) -> Any:
    return await api.request("POST", path, data=data, headers=JSON)


# -- requests --------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "body",
    [
        rb'"\ud800"',
        rb'{"x": "a\udfffb"}',
        rb'{"\ud800": 1}',
        b'{"x": 1e400}',
        b"[-1e400]",
        b'{"x": Infinity}',
        b"-Infinity",
    ],
)
@pytest_twisted.ensureDeferred
async def test_message_bodies_that_are_not_strict_json_are_a_400(
    api: Api, service: QueueService, body: bytes
) -> None:
    data = b'{"messages": [{"ttl": 300, "body": ' + body + b"}]}"
    reply = await post_raw(api, "/v2/queues/jobs/messages", data)
    assert reply.status == 400, reply.body
    assert reply.json["title"] == "Invalid request body"
    assert reply.json["description"].startswith("Request body could not be parsed: ")
    assert await service.list_queues("p1") == []


@pytest_twisted.ensureDeferred
async def test_an_integer_of_thousands_of_digits_is_a_400(api: Api, service: QueueService) -> None:
    data = b'{"messages": [{"ttl": 300, "body": ' + b"7" * 5000 + b"}]}"
    reply = await post_raw(api, "/v2/queues/jobs/messages", data)
    assert reply.status == 400
    assert reply.json["description"] == "JSON contains integer that is too large."
    assert await service.list_queues("p1") == []


@pytest_twisted.ensureDeferred
async def test_surrogate_pairs_are_characters_and_round_trip(api: Api) -> None:
    reply = await post_raw(
        api, "/v2/queues/jobs/messages", rb'{"messages": [{"ttl": 300, "body": "\ud83d\ude00"}]}'
    )
    assert reply.status == 201
    page = await api.get("/v2/queues/jobs/messages?echo=true")
    assert page.json["messages"][0]["body"] == "\U0001f600"


@pytest.mark.parametrize("data", [rb'{"a": "\ud800"}', b'{"a": NaN}', b'{"a": [1e999]}'])
@pytest_twisted.ensureDeferred
async def test_queue_metadata_that_is_not_strict_json_is_a_400(
    api: Api, service: QueueService, data: bytes
) -> None:
    reply = await api.request("PUT", "/v2/queues/jobs", data=data, headers=JSON)
    assert reply.status == 400
    assert reply.json["title"] == "Invalid request body"
    assert await service.list_queues("p1") == []


@pytest_twisted.ensureDeferred
async def test_a_patch_that_is_not_strict_json_is_a_400_and_changes_nothing(api: Api) -> None:
    await api.put("/v2/queues/jobs", {"a": 1})
    reply = await api.send(
        "PATCH",
        "/v2/queues/jobs",
        rb'[{"op": "add", "path": "/metadata/b", "value": "\udc00"}]',
        "application/openstack-messaging-v2.0-json-patch",
    )
    assert reply.status == 400
    assert (await api.get("/v2/queues/jobs")).json["a"] == 1
    assert "b" not in (await api.get("/v2/queues/jobs")).json


@pytest_twisted.ensureDeferred
async def test_a_claim_document_that_is_not_strict_json_is_a_400(
    api: Api, service: QueueService
) -> None:
    await api.post_messages("jobs", "a")
    reply = await post_raw(api, "/v2/queues/jobs/claims", b'{"ttl": 1e400, "grace": 60}')
    assert reply.status == 400
    assert (await service.queue_stats("p1", "jobs")).claimed == 0


@pytest.mark.parametrize(
    ("metadata", "named"),
    [
        ({"_overflow": []}, "_overflow"),
        ({"_overflow": {"a": 1}}, "_overflow"),
        ({"_flavor": {}}, "_flavor"),
        ({"_flavor": ["durable"]}, "_flavor"),
    ],
)
@pytest_twisted.ensureDeferred
async def test_wrong_typed_queue_options_are_a_400_naming_the_option(
    api: Api, service: QueueService, metadata: dict[str, Any], named: str
) -> None:
    reply = await api.put("/v2/queues/jobs", metadata)
    assert reply.status == 400, reply.body
    assert named in reply.json["description"]
    assert await service.list_queues("p1") == []
    await api.put("/v2/queues/other", {"x": 1})
    [(key, value)] = metadata.items()
    change = {"op": "add", "path": f"/metadata/{key}", "value": value}
    reply = await api.patch("/v2/queues/other", [change])
    assert reply.status == 400, reply.body
    assert named in reply.json["description"]
    assert (await api.get("/v2/queues/other")).json["x"] == 1


# -- what storage already holds --------------------------------------------------------------

#: Rows with a JSON content type that are not strict JSON, as an older version stored them.
POISON = [
    rb'"\ud800"',
    b'{"x": NaN}',
    b'{"x": Infinity}',
    b"[1e400]",
    b"{broken",
    b"\xff\xfe not UTF-8",
]


@pytest.fixture
def storage() -> MemoryStorage:
    return MemoryStorage()


@pytest.fixture
def service(clock: Clock, storage: MemoryStorage) -> QueueService:
    """A service over a store the test can write to directly, past the core's checks."""
    return QueueService(clock, storage, MemoryStorage(), limits=TEST_LIMITS)


@pytest.fixture
def api(service: QueueService) -> Api:
    return Api(build_resource(make_ctx(service)))


def plant(service: QueueService, storage: MemoryStorage, queue: str, bodies: list[bytes]) -> None:
    fired(service.create_queue("p1", queue, QueueOptions()))
    stored = [NewMessage(b, "application/json", ttl=300) for b in bodies]
    storage.publish_now("p1", queue, stored, service.clock.seconds(), None)


def expected(body: bytes) -> Any:
    """How a poison row is shown: its text, or its bytes in base64 (the module docstring
    of protocols.http.wire)."""
    try:
        return body.decode("utf-8")
    except UnicodeDecodeError:
        return {"$binary": base64.b64encode(body).decode(), "content_type": "application/json"}


@pytest_twisted.ensureDeferred
async def test_poison_rows_are_listed_as_their_text(
    api: Api, service: QueueService, storage: MemoryStorage
) -> None:
    plant(service, storage, "jobs", POISON)
    assert await api.bodies_of("jobs") == [expected(b) for b in POISON]


@pytest_twisted.ensureDeferred
async def test_poison_rows_are_claimed_and_answered(
    api: Api, service: QueueService, storage: MemoryStorage
) -> None:
    plant(service, storage, "jobs", POISON)
    reply = await api.post("/v2/queues/jobs/claims?limit=20", {"ttl": 60, "grace": 60})
    assert reply.status == 201, reply.body
    assert reply.bodies == [expected(b) for b in POISON]
    claim_id = reply.header("Location").rsplit("/", 1)[1]  # type: ignore[union-attr]
    shown = await api.get(f"/v2/queues/jobs/claims/{claim_id}")
    assert shown.status == 200
    assert len(shown.json["messages"]) == len(POISON)


@pytest_twisted.ensureDeferred
async def test_a_claim_that_cannot_be_answered_is_released(
    api: Api, service: QueueService, storage: MemoryStorage
) -> None:
    # An Avro row whose writer schema in the registry is damaged: decoding it for the
    # answer fails after the claim is committed.
    fingerprint = parse_schema('"string"').fingerprint
    storage.put_schema(fingerprint, "{damaged")
    fired(service.create_queue("p1", "jobs", QueueOptions()))
    row = NewMessage(b"\x02a", avro_content_type(fingerprint), ttl=300)
    storage.publish_now("p1", "jobs", [row], service.clock.seconds(), None)
    reply = await api.post("/v2/queues/jobs/claims", {"ttl": 60, "grace": 60})
    assert reply.status >= 400
    # Not hidden for ttl + grace under a claim nobody holds, and not counted as delivered.
    assert (await service.queue_stats("p1", "jobs")).claimed == 0
    [again] = await service.observe("p1", "jobs")
    assert again.claim_count == 0


@pytest_twisted.ensureDeferred
async def test_metadata_stored_by_an_older_version_is_shown(
    api: Api, service: QueueService, storage: MemoryStorage
) -> None:
    metadata = {"label": "a\ud800b", "ratio": float("nan"), "big": float("inf")}
    fired(storage.create_queue("p1", "jobs", QueueOptions(), metadata, 0.0))
    reply = await api.get("/v2/queues/jobs")
    assert reply.status == 200, reply.body
    assert reply.json["label"] == "a\ufffdb"
    assert reply.json["ratio"] is None and reply.json["big"] is None
    listed = await api.get("/v2/queues?detailed=true")
    assert listed.status == 200, listed.body
    assert listed.json["queues"][0]["metadata"]["label"] == "a\ufffdb"
    json.loads(listed.body)  # strict enough for any client: no NaN, valid UTF-8
