"""Schema-checked queues through IQueueService, on memory, SQLite and PostgreSQL.

Each test runs once per backend (the ``service`` fixture); time comes from a task.Clock.
"""

from __future__ import annotations

import json
from typing import Any

import pytest
import pytest_twisted
from twisted.internet.defer import succeed

from qgate.core.avro_bodies import avro_content_type, avro_writer, format_fingerprint
from qgate.core.errors import InvalidArgument, QueueNotFound
from qgate.core.model import NewMessage, QueueOptions
from qgate.core.schemas import (
    IncompatibleSchema,
    InvalidAvroData,
    InvalidSchema,
    parse_schema,
    to_single_object,
)
from qgate.core.service import SCHEMA_TTL, QueueService
from qgate.storage.memory import MemoryStorage
from tests.support.core import TEST_LIMITS
from tests.support.doubles import Delegating
from tests.support.schemas import USER_V1 as V1
from tests.support.schemas import USER_V2 as V2
from tests.support.schemas import with_fields

T = "tenant-a"


def as_json(*values: Any) -> list[NewMessage]:
    return [NewMessage(json.dumps(v).encode(), content_type="application/json") for v in values]


async def everything(service, queue: str = "q") -> list[Any]:
    return await service.observe(T, queue, limit=100, include_claimed=True)


async def json_of(service, queue: str = "q") -> list[Any]:
    found = await everything(service, queue)
    decoded = await service.decode_bodies(T, queue, found)
    return [decoded[m.marker] for m in found]


@pytest_twisted.ensureDeferred
async def test_json_is_stored_as_avro_and_reads_back_as_the_same_json(service):
    await service.create_queue(T, "q")
    fingerprint = await service.set_schema(T, "q", json.dumps(V1))
    assert fingerprint == parse_schema(V1).fingerprint
    assert await service.get_schema(T, "q") == (fingerprint, parse_schema(V1).text)
    await service.publish(T, "q", as_json({"id": 1, "name": "ann"}, {"id": 2, "name": "bo"}))
    stored = await everything(service)
    assert [m.content_type for m in stored] == [avro_content_type(fingerprint)] * 2
    assert stored[0].body == parse_schema(V1).encode_json({"id": 1, "name": "ann"})
    assert await json_of(service) == [{"id": 1, "name": "ann"}, {"id": 2, "name": "bo"}]


@pytest_twisted.ensureDeferred
async def test_an_invalid_record_fails_the_batch_naming_index_and_field(service):
    await service.create_queue(T, "q")
    await service.set_schema(T, "q", V1)
    with pytest.raises(InvalidAvroData) as e:
        await service.publish(T, "q", as_json({"id": 1, "name": "ok"}, {"id": "two", "name": "x"}))
    assert e.value.field == "messages[1].body.id"
    assert "messages[1].body.id" in e.value.description
    with pytest.raises(InvalidAvroData) as e:
        await service.publish(T, "q", as_json({"id": 1}))
    assert e.value.field == "messages[0].body.name"
    with pytest.raises(InvalidArgument) as e:
        await service.publish(T, "q", [NewMessage(b"hello", content_type="text/plain")])
    assert e.value.field == "messages[0].content_type"
    # A JSON body that is not JSON is refused before any schema sees it (core.limits).
    with pytest.raises(InvalidArgument) as e:
        await service.publish(T, "q", [NewMessage(b"{nope", content_type="application/json")])
    assert e.value.field == "messages[0].body"
    assert await everything(service) == []


@pytest_twisted.ensureDeferred
async def test_adding_a_field_with_a_default_reads_old_messages_with_the_default(service):
    await service.create_queue(T, "q")
    await service.set_schema(T, "q", V1)
    await service.publish(T, "q", as_json({"id": 1, "name": "old"}))
    fingerprint = await service.set_schema(T, "q", V2)
    assert fingerprint == parse_schema(V2).fingerprint
    await service.publish(T, "q", as_json({"id": 2, "name": "new", "email": "n@example.org"}))
    assert await json_of(service) == [
        {"id": 1, "name": "old", "email": None},
        {"id": 2, "name": "new", "email": "n@example.org"},
    ]
    # Avro readers get every body rewritten into the current schema.
    resolved = await service.resolve_bodies(T, "q", await everything(service))
    assert {m.content_type for m in resolved} == {avro_content_type(fingerprint)}
    assert parse_schema(V2).decode(resolved[0].body) == {"id": 1, "name": "old", "email": None}


@pytest.mark.parametrize(
    ("schema", "path"),
    [
        (with_fields(V1, {"name": "age", "type": "int"}), "body.age"),  # new field, no default
        ({**V1, "fields": [{"name": "id", "type": "string"}, V1["fields"][1]]}, "body.id"),
        (json.dumps("string"), "body"),
    ],
)
@pytest_twisted.ensureDeferred
async def test_a_schema_that_cannot_read_the_queued_messages_is_refused(service, schema, path):
    await service.create_queue(T, "q")
    fingerprint = await service.set_schema(T, "q", V1)
    await service.publish(T, "q", as_json({"id": 1, "name": "kept"}))
    with pytest.raises(IncompatibleSchema) as e:
        await service.set_schema(T, "q", schema)
    assert e.value.path == path
    assert path in e.value.description
    assert (await service.get_schema(T, "q"))[0] == fingerprint
    assert await json_of(service) == [{"id": 1, "name": "kept"}]


@pytest_twisted.ensureDeferred
async def test_only_the_messages_in_the_queue_bound_a_new_schema(service, clock):
    await service.create_queue(T, "q")
    await service.set_schema(T, "q", V1)
    await service.set_schema(T, "q", json.dumps("string"))  # empty: anything goes
    await service.publish(
        T,
        "q",
        as_json("just text"),
    )
    assert await json_of(service) == ["just text"]
    with pytest.raises(IncompatibleSchema):
        await service.set_schema(T, "q", V1)
    clock.advance(3600)  # the message expires: it no longer counts
    await service.set_schema(T, "q", V1)
    await service.clear_schema(T, "q")
    assert await service.get_schema(T, "q") is None


class StaleScan(Delegating):
    """A store whose writer scan always comes back empty, as if every message landed
    after it: what the transaction that sets the schema must catch."""

    def schema_writers(self, tenant: str, name: str, now: float) -> Any:
        return succeed([])


@pytest_twisted.ensureDeferred
async def test_writers_that_land_after_the_scan_are_checked_before_the_schema_is_set(
    durable, clock
):
    service = QueueService(clock, StaleScan(durable), MemoryStorage(), limits=TEST_LIMITS)
    writer = parse_schema(V1)
    await service.register_schema(V1)
    body = writer.encode_json({"id": 1, "name": "early"})
    await service.publish(T, "q", [NewMessage(body, avro_content_type(writer.fingerprint))])
    with pytest.raises(IncompatibleSchema) as e:
        await service.set_schema(T, "q", with_fields(V1, {"name": "age", "type": "int"}))
    assert e.value.path == "body.age"
    assert await service.get_schema(T, "q") is None
    await service.set_schema(T, "q", V2)
    assert await json_of(service) == [{"id": 1, "name": "early", "email": None}]


@pytest_twisted.ensureDeferred
async def test_avro_bodies_are_checked_and_stored_in_the_queue_schema(service):
    await service.create_queue(T, "q")
    v1, v2 = parse_schema(V1), parse_schema(V2)
    await service.set_schema(T, "q", V2)
    await service.register_schema(json.dumps(V1))  # an older producer's schema
    await service.publish(
        T,
        "q",
        [
            # single-object encoding, written by the queue's schema
            NewMessage(to_single_object(v2.fingerprint, v2.encode_json({"id": 1, "name": "a"}))),
            # bare Avro binary of the older schema, named by the content type
            NewMessage(
                v1.encode_json({"id": 2, "name": "b"}),
                content_type=avro_content_type(v1.fingerprint),
            ),
        ],
    )
    stored = await everything(service)
    assert {m.content_type for m in stored} == {avro_content_type(v2.fingerprint)}
    assert [v2.decode(m.body) for m in stored] == [
        {"id": 1, "name": "a", "email": None},
        {"id": 2, "name": "b", "email": None},
    ]


@pytest_twisted.ensureDeferred
async def test_avro_bodies_that_do_not_fit_are_refused(service):
    await service.create_queue(T, "q")
    await service.set_schema(T, "q", V2)
    other_id = {**V1, "fields": [{"name": "id", "type": "string"}, V1["fields"][1]]}
    incompatible = parse_schema(other_id)
    await service.register_schema(other_id)
    unknown = parse_schema(with_fields(V1, {"name": "x", "type": "int", "default": 0}))
    v2 = parse_schema(V2)
    cases = [
        # truncated data
        (NewMessage(b"\x02", content_type=avro_content_type(v2.fingerprint)), InvalidAvroData),
        # a writer the queue's schema cannot read (id is a string there)
        (
            NewMessage(
                incompatible.encode_json({"id": "1", "name": "x"}),
                content_type=avro_content_type(incompatible.fingerprint),
            ),
            IncompatibleSchema,
        ),
        # a writer nobody registered
        (NewMessage(to_single_object(unknown.fingerprint, b"\x02\x00\x00")), InvalidArgument),
        # a fingerprint parameter that is not one
        (NewMessage(b"\x02", content_type="avro/binary; fingerprint=zz"), InvalidArgument),
    ]
    good = as_json({"id": 1, "name": "fine"})
    for message, error in cases:
        with pytest.raises(error) as e:
            await service.publish(T, "q", [*good, message])
        assert e.value.field is not None and e.value.field.startswith("messages[1]"), e.value
    assert await everything(service) == []


@pytest_twisted.ensureDeferred
async def test_a_service_that_missed_a_schema_change_is_corrected_by_storage(service, durable):
    """Two services on one store, like two processes: the second never saw the schema
    set by the first, and cannot store what the schema refuses (storage checks the
    fingerprint in the transaction that stores)."""
    other = QueueService(service.clock, durable, MemoryStorage(), limits=TEST_LIMITS)
    await other.publish(T, "q", [NewMessage(b"before", content_type="text/plain")])
    fingerprint = await service.set_schema(T, "q", V1)
    with pytest.raises(InvalidArgument) as e:
        await other.publish(T, "q", [NewMessage(b"after", content_type="text/plain")])
    assert e.value.field == "messages[0].content_type"
    await other.publish(T, "q", as_json({"id": 7, "name": "checked"}))
    stored = await everything(service)
    assert [m.content_type for m in stored] == ["text/plain", avro_content_type(fingerprint)]
    # ... and the other way round: a schema cleared elsewhere stops the checks.
    await other.clear_schema(T, "q")
    await service.publish(T, "q", [NewMessage(b"free again", content_type="text/plain")])
    assert (await everything(service))[-1].body == b"free again"


@pytest_twisted.ensureDeferred
async def test_a_change_of_defaults_only_reaches_other_services_within_the_ttl(
    service, durable, clock
):
    """Same fingerprint, other default: storage cannot tell them apart, so a service
    that remembers the old text uses it for at most SCHEMA_TTL seconds."""
    other = QueueService(clock, durable, MemoryStorage(), limits=TEST_LIMITS)
    await service.create_queue(T, "q")
    with_default = with_fields(V1, {"name": "n", "type": "int", "default": 1})
    await service.set_schema(T, "q", with_default)
    await other.publish(T, "q", as_json({"id": 1, "name": "a"}))
    await service.set_schema(T, "q", with_fields(V1, {"name": "n", "type": "int", "default": 2}))
    await other.publish(T, "q", as_json({"id": 2, "name": "b"}))
    clock.advance(SCHEMA_TTL)
    await other.publish(T, "q", as_json({"id": 3, "name": "c"}))
    assert [v["n"] for v in await json_of(service)] == [1, 1, 2]


@pytest_twisted.ensureDeferred
async def test_the_writers_of_queued_avro_messages_bound_the_first_schema(service):
    """A queue without a schema may hold Avro bodies; the first schema must read them."""
    writer = parse_schema(V2)
    await service.register_schema(V2)
    await service.publish(
        T,
        "q",
        [
            NewMessage(
                writer.encode_json({"id": 5, "name": "x", "email": None}),
                content_type=avro_content_type(writer.fingerprint),
            ),
            NewMessage(b"plain text stays as it is", content_type="text/plain"),
        ],
    )
    with pytest.raises(IncompatibleSchema) as e:
        await service.set_schema(T, "q", with_fields(V1, {"name": "age", "type": "int"}))
    assert e.value.path == "body.age"
    await service.set_schema(T, "q", V1)
    found = await everything(service)
    assert await service.decode_bodies(T, "q", found) == {found[0].marker: {"id": 5, "name": "x"}}


@pytest_twisted.ensureDeferred
async def test_schemas_are_set_at_creation_kept_by_updates_and_checked(service):
    options = QueueOptions(schema_text=json.dumps(V1), default_ttl=120.0)
    queue, created = await service.create_queue(T, "q", options=options)
    fingerprint = parse_schema(V1).fingerprint
    assert created and queue.options.schema == fingerprint
    updated = await service.update_queue(T, "q", options=QueueOptions(default_ttl=60.0))
    assert updated.options.default_ttl == 60.0
    assert updated.options.schema == fingerprint
    assert (await service.get_queue(T, "q")).options.schema == fingerprint
    with pytest.raises(InvalidArgument):
        await service.publish(T, "q", [NewMessage(b"x", content_type="text/plain")])
    with pytest.raises(InvalidSchema):
        await service.set_schema(T, "q", '{"type": "record", "name": "R", "fields": 3}')
    with pytest.raises(InvalidSchema):
        await service.create_queue(T, "bad", options=QueueOptions(schema_text="{nope"))
    with pytest.raises(QueueNotFound):
        await service.set_schema(T, "missing", V1)
    with pytest.raises(QueueNotFound):
        await service.get_schema(T, "missing")
    assert await service.get_schema(T, "q") == (fingerprint, parse_schema(V1).text)


@pytest_twisted.ensureDeferred
async def test_after_clearing_the_schema_avro_messages_still_read_as_json(service):
    await service.create_queue(T, "q")
    await service.set_schema(T, "q", V1)
    await service.publish(T, "q", as_json({"id": 1, "name": "a"}))
    await service.clear_schema(T, "q")
    await service.publish(T, "q", [NewMessage(b"anything", content_type="text/plain")])
    found = await everything(service)
    decoded = await service.decode_bodies(T, "q", found)
    assert decoded == {found[0].marker: {"id": 1, "name": "a"}}
    assert avro_writer(found[1].content_type, found[1].body) is None
    assert (await service.resolve_bodies(T, "q", found))[1] == found[1]


@pytest_twisted.ensureDeferred
async def test_the_registry_is_content_addressed_and_the_first_text_stays(durable):
    first = parse_schema(with_fields(V1, {"name": "n", "type": "int", "default": 1}))
    second = parse_schema(with_fields(V1, {"name": "n", "type": "int", "default": 2}))
    assert first.fingerprint == second.fingerprint and first.text != second.text
    assert await durable.get_schema(first.fingerprint) is None
    await durable.put_schema(first.fingerprint, first.text)
    await durable.put_schema(second.fingerprint, second.text)
    assert await durable.get_schema(first.fingerprint) == first.text


@pytest_twisted.ensureDeferred
async def test_a_tenant_may_name_only_writer_schemas_it_registered(service):
    """The registry is shared, but whether another tenant registered a schema cannot be
    learnt: naming it is refused exactly as naming one nobody registered."""
    v1 = parse_schema(V1)
    await service.register_schema(json.dumps(V1), tenant="tenant-b")
    for tenant in (T, "tenant-b"):
        await service.create_queue(tenant, "q")
        await service.set_schema(tenant, "q", V2)
    body = NewMessage(
        v1.encode_json({"id": 2, "name": "b"}), content_type=avro_content_type(v1.fingerprint)
    )
    unknown = NewMessage(b"\x02", content_type=avro_content_type(12345))
    with pytest.raises(InvalidArgument) as named:
        await service.publish(T, "q", [body])
    with pytest.raises(InvalidArgument) as nobody:
        await service.publish(T, "q", [unknown])
    assert named.value.field == nobody.value.field == "messages[0].content_type"
    assert str(named.value).replace(format_fingerprint(v1.fingerprint), "X") == str(
        nobody.value
    ).replace(format_fingerprint(12345), "X")
    assert await service.publish("tenant-b", "q", [body]) == ["1"]
    assert (await service.queue_stats(T, "q")).total == 0
