"""Avro on the HTTP API: queue schemas, container file posts, Avro envelopes out."""

from __future__ import annotations

import io
import json
from typing import Any

import avro.datafile
import avro.io
import fastavro
import pytest_twisted
from twisted.internet.task import Clock

from qgate.core.avro_bodies import avro_content_type, format_fingerprint
from qgate.core.model import NewMessage
from qgate.core.schemas import parse_schema
from qgate.core.service import QueueService
from qgate.protocols.http.avro import QUEUE_SCHEMA_META, wants_avro
from tests.support.http import Api
from tests.support.schemas import READING_V1 as V1
from tests.support.schemas import READING_V2 as V2

AVRO = {"Content-Type": "avro/binary"}
ACCEPT_AVRO = {"Accept": "avro/binary"}


def container(schema: Any, records: list[Any], codec: str = "deflate") -> bytes:
    out = io.BytesIO()
    fastavro.writer(out, fastavro.parse_schema(schema), records, codec=codec)
    return out.getvalue()


def read_envelopes(data: bytes) -> tuple[list[dict[str, Any]], dict[str, bytes]]:
    """Records and metadata of a container file, read by apache avro (another client)."""
    reader = avro.datafile.DataFileReader(io.BytesIO(data), avro.io.DatumReader())
    records = list(reader)
    return records, dict(reader.meta)


# -- the schema of a queue -------------------------------------------------------------------


@pytest_twisted.ensureDeferred
async def test_put_get_and_delete_a_queue_schema(api: Api) -> None:
    await api.put("/v2/queues/q")
    assert (await api.get("/v2/queues/q/schema")).status == 404
    put = await api.put("/v2/queues/q/schema", V1)
    fingerprint = format_fingerprint(parse_schema(V1).fingerprint)
    assert put.status == 200
    assert put.json == {"fingerprint": fingerprint}
    got = await api.get("/v2/queues/q/schema")
    assert got.status == 200
    assert got.json == V1
    assert got.header("Avro-Fingerprint") == fingerprint
    assert (await api.get("/v2/queues/q")).json["_schema"] == V1
    assert (await api.delete("/v2/queues/q/schema")).status == 204
    missing = await api.get("/v2/queues/q/schema")
    assert missing.status == 404
    assert set(missing.json) == {"title", "description"}
    assert "_schema" not in (await api.get("/v2/queues/q")).json
    assert (await api.put("/v2/queues/nowhere/schema", V1)).status == 404


@pytest_twisted.ensureDeferred
async def test_bad_and_incompatible_schemas_are_refused_with_the_reason(api: Api) -> None:
    await api.put("/v2/queues/q")
    bad = await api.put(
        "/v2/queues/q/schema", {"type": "record", "name": "R", "fields": [{"name": "a"}]}
    )
    assert bad.status == 400
    assert "schema" in bad.json["description"]
    assert (await api.put("/v2/queues/q/schema", V1)).status == 200
    await api.post_messages("q", {"sensor": "s1", "value": 1.5})
    changed = {**V1, "fields": [V1["fields"][0], {"name": "value", "type": "string"}]}
    refused = await api.put("/v2/queues/q/schema", changed)
    assert refused.status == 400
    assert "body.value" in refused.json["description"]
    assert (await api.get("/v2/queues/q/schema")).json == V1


@pytest_twisted.ensureDeferred
async def test_the_schema_metadata_key_sets_and_clears_the_schema(
    api: Api, service: QueueService
) -> None:
    created = await api.put("/v2/queues/q", {"_schema": V1, "colour": "blue"})
    assert created.status == 201
    queue = await service.get_queue("p1", "q")
    assert queue.options.schema == parse_schema(V1).fingerprint
    assert queue.metadata == {"colour": "blue"}  # _schema lives in the options only
    shown = (await api.get("/v2/queues/q")).json
    assert shown["_schema"] == V1 and shown["colour"] == "blue"
    patched = await api.patch(
        "/v2/queues/q", [{"op": "replace", "path": "/metadata/_schema", "value": V2}]
    )
    assert patched.status == 200
    assert patched.json["_schema"] == V2
    await api.post_messages("q", {"sensor": "s", "value": 1.0})
    refused = await api.patch(
        "/v2/queues/q",
        [
            {"op": "replace", "path": "/metadata/_schema", "value": "string"},
            {"op": "add", "path": "/metadata/colour", "value": "red"},
        ],
    )
    assert refused.status == 400
    assert (await api.get("/v2/queues/q")).json["colour"] == "blue"  # nothing changed
    cleared = await api.patch("/v2/queues/q", [{"op": "remove", "path": "/metadata/_schema"}])
    assert cleared.status == 200
    assert "_schema" not in cleared.json
    assert (await service.get_queue("p1", "q")).options.schema is None
    wrong = await api.put("/v2/queues/other", {"_schema": 5})
    assert wrong.status == 400


# -- JSON in, JSON out -----------------------------------------------------------------------


@pytest_twisted.ensureDeferred
async def test_json_posts_to_a_schema_queue_are_checked_and_stored_as_avro(
    api: Api, service: QueueService
) -> None:
    await api.put("/v2/queues/q", {"_schema": V1})
    await api.post_messages("q", {"sensor": "s1", "value": 20.5}, {"sensor": "s2", "value": 3})
    stored = await service.observe("p1", "q", limit=10)
    assert {m.content_type for m in stored} == {avro_content_type(parse_schema(V1).fingerprint)}
    assert await api.bodies_of("q") == [
        {"sensor": "s1", "value": 20.5},
        {"sensor": "s2", "value": 3.0},
    ]
    refused = await api.post(
        "/v2/queues/q/messages",
        {"messages": [{"body": {"sensor": "ok", "value": 1}}, {"body": {"sensor": 7}}]},
    )
    assert refused.status == 400
    assert "messages[1].body.sensor" in refused.json["description"]
    assert len(await service.observe("p1", "q", limit=10)) == 2


# -- container files in ----------------------------------------------------------------------


@pytest_twisted.ensureDeferred
async def test_a_container_file_posts_one_message_per_record_resolved_into_the_schema(
    api: Api, service: QueueService
) -> None:
    await api.put("/v2/queues/q", {"_schema": V2})
    records = [{"sensor": f"s{i}", "value": i / 2} for i in range(30)]
    reply = await api.post(
        "/v2/queues/q/messages?ttl=120&delay=0", data=container(V1, records), headers=AVRO
    )
    assert reply.status == 201, reply.body
    assert len(reply.json["resources"]) == 30
    stored = await service.observe("p1", "q", limit=100)
    assert {m.ttl for m in stored} == {120}
    assert {m.content_type for m in stored} == {avro_content_type(parse_schema(V2).fingerprint)}
    bodies = await api.bodies_of("q")
    assert bodies[:2] == [
        {"sensor": "s0", "value": 0.0, "unit": "C"},
        {"sensor": "s1", "value": 0.5, "unit": "C"},
    ]


@pytest_twisted.ensureDeferred
async def test_a_container_file_on_a_queue_without_schema_keeps_its_writer(
    api: Api, service: QueueService
) -> None:
    reply = await api.post(
        "/v2/queues/free/messages",
        data=container(V1, [{"sensor": "a", "value": 1.0}], codec="null"),
        headers=AVRO,
    )
    assert reply.status == 201, reply.body
    (stored,) = await service.observe("p1", "free", limit=10)
    fingerprint = parse_schema(V1).fingerprint
    assert stored.content_type == avro_content_type(fingerprint)
    assert await api.bodies_of("free") == [{"sensor": "a", "value": 1.0}]
    # the writer was registered: the queue can now take a schema that reads it
    assert (await api.put("/v2/queues/free/schema", V2)).status == 200
    assert await api.bodies_of("free") == [{"sensor": "a", "value": 1.0, "unit": "C"}]


@pytest_twisted.ensureDeferred
async def test_bad_container_files_are_refused_naming_the_record_and_store_nothing(
    api: Api, service: QueueService
) -> None:
    await api.put("/v2/queues/q", {"_schema": V1})
    other = {**V1, "fields": [{"name": "sensor", "type": "long"}, V1["fields"][1]]}
    cases = [
        (container(other, [{"sensor": 1, "value": 1.0}]), "messages[0].body.sensor"),
        (b"Obj\x01garbage", "records"),
        (b"not avro at all", "not an Avro object container file"),
        (container(V1, []), "No messages"),
    ]
    good = container(V1, [{"sensor": "a", "value": 1.0}] * 3)
    truncated = good[:-20]
    cases.append((truncated, "records"))
    for data, words in cases:
        reply = await api.post("/v2/queues/q/messages", data=data, headers=AVRO)
        assert reply.status == 400, (words, reply.body)
        assert set(reply.json) == {"title", "description"}
        assert words in reply.json["description"], reply.json
    too_long = await api.post("/v2/queues/q/messages?ttl=5", data=good, headers=AVRO)
    assert too_long.status == 400
    assert "TTL" in too_long.json["description"]
    assert await service.observe("p1", "q", limit=10) == []


# -- Avro envelopes out ----------------------------------------------------------------------


@pytest_twisted.ensureDeferred
async def test_avro_readers_get_envelopes_with_bodies_in_the_current_schema(
    api: Api, clock: Clock
) -> None:
    await api.put("/v2/queues/q", {"_schema": V1})
    await api.post_messages("q", {"sensor": "json", "value": 1})
    await api.post(
        "/v2/queues/q/messages",
        data=container(V1, [{"sensor": "avro", "value": 2.0}]),
        headers=AVRO,
    )
    await api.put("/v2/queues/q/schema", V2)
    clock.advance(3)
    reply = await api.get("/v2/queues/q/messages?echo=true", headers=ACCEPT_AVRO)
    assert reply.status == 200
    assert reply.header("Content-Type") == "avro/binary"
    records, meta = read_envelopes(reply.body)
    v2 = parse_schema(V2)
    assert json.loads(meta[QUEUE_SCHEMA_META]) == V2
    assert [r["id"] for r in records] == ["1", "2"]
    assert {r["content_type"] for r in records} == {avro_content_type(v2.fingerprint)}
    assert [v2.decode(r["body"]) for r in records] == [
        {"sensor": "json", "value": 1.0, "unit": "C"},
        {"sensor": "avro", "value": 2.0, "unit": "C"},
    ]
    assert records[0]["age"] == 3.0 and records[0]["ttl"] == 300.0
    assert records[0]["claim_id"] is None
    by_id = await api.get("/v2/queues/q/messages?ids=2", headers=ACCEPT_AVRO)
    assert [r["id"] for r in read_envelopes(by_id.body)[0]] == ["2"]


@pytest_twisted.ensureDeferred
async def test_claims_answer_avro_envelopes_and_204_when_empty(api: Api) -> None:
    empty = await api.post("/v2/queues/q/claims", {"ttl": 60}, headers=ACCEPT_AVRO)
    assert empty.status == 204
    await api.post_messages("q", {"plain": "json"})
    reply = await api.post("/v2/queues/q/claims", {"ttl": 60}, headers=ACCEPT_AVRO)
    assert reply.status == 201
    claim_id = reply.header("Location").rsplit("/", 1)[1]
    records, meta = read_envelopes(reply.body)
    assert QUEUE_SCHEMA_META not in meta  # the queue has no schema
    # a JSON message without a schema: its stored bytes, under its own content type
    assert [(r["claim_id"], r["content_type"], r["body"]) for r in records] == [
        (claim_id, "application/json", b'{"plain":"json"}')
    ]
    assert records[0]["claim_count"] == 1


@pytest_twisted.ensureDeferred
async def test_json_readers_see_avro_published_elsewhere_and_binary_as_before(
    api: Api, service: QueueService
) -> None:
    writer = parse_schema(V1)
    await service.register_schema(V1)
    await service.publish(
        "p1",
        "q",
        [
            NewMessage(
                writer.encode_json({"sensor": "stomp", "value": 4.0}),
                content_type=avro_content_type(writer.fingerprint),
            ),
            NewMessage(b"\xff\x00", content_type="application/octet-stream"),
        ],
    )
    bodies = await api.bodies_of("q")
    assert bodies[0] == {"sensor": "stomp", "value": 4.0}
    assert bodies[1] == {"$binary": "/wA=", "content_type": "application/octet-stream"}
    claim = await api.post("/v2/queues/q/claims", {"ttl": 60})
    assert claim.bodies[0] == {"sensor": "stomp", "value": 4.0}
    one = await api.get("/v2/queues/q/messages/1")
    assert one.json["body"] == {"sensor": "stomp", "value": 4.0}


def test_accept_negotiation_follows_q_values_then_order() -> None:
    assert wants_avro("avro/binary")
    assert wants_avro("avro/binary, application/json")
    assert wants_avro("application/json;q=0.5, avro/binary")
    assert not wants_avro("application/json, avro/binary")
    assert not wants_avro("avro/binary;q=0, */*")
    assert not wants_avro(None)
    assert not wants_avro("application/json")
