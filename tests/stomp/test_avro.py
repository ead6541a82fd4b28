"""STOMP on Avro schema-checked queues: JSON or single-object bodies, as SUBSCRIBE asks.

Sessions over StringTransport on a memory-only service; the fingerprints and datums the
tests check are worked out independently (the spec's CRC-64-AVRO over fastavro's Parsing
Canonical Form, fastavro's schemaless reader and writer), not with qgate's own code.
"""

from __future__ import annotations

import io
import json
from collections import Counter
from typing import Any

import fastavro
import fastavro.schema
import pytest

from qgate.core.model import NewMessage
from qgate.protocols.stomp.bodies import ERROR_HEADER, SCHEMA_TTL
from qgate.protocols.stomp.codec import V10
from tests.support.deferreds import fired
from tests.support.doubles import Delegating
from tests.support.schemas import USER_V1 as V1
from tests.support.schemas import USER_V2 as V2
from tests.support.stomp import Client, make_ctx

Q = "readings"
_EMPTY = 0xC15D213AA4D7A795


def _crc64_avro(data: bytes) -> int:
    """CRC-64-AVRO as the Avro specification's "Schema Fingerprints" gives it."""
    table = []
    for i in range(256):
        fp = i
        for _ in range(8):
            fp = (fp >> 1) ^ (_EMPTY & -(fp & 1))
        table.append(fp)
    fp = _EMPTY
    for byte in data:
        fp = (fp >> 8) ^ table[(fp ^ byte) & 0xFF]
    return fp


def fingerprint(schema: Any) -> bytes:
    """The 8 bytes single-object encoding carries: little-endian CRC-64-AVRO."""
    canonical = fastavro.schema.to_parsing_canonical_form(schema)
    return _crc64_avro(canonical.encode()).to_bytes(8, "little")


def datum(schema: Any, record: Any) -> bytes:
    out = io.BytesIO()
    fastavro.schemaless_writer(out, fastavro.parse_schema(schema), record)
    return out.getvalue()


def read_single_object(body: bytes, schema: Any) -> Any:
    assert body[:2] == b"\xc3\x01"
    assert body[2:10] == fingerprint(schema)
    return fastavro.schemaless_reader(io.BytesIO(body[10:]), fastavro.parse_schema(schema))


def stored_type(schema: Any) -> str:
    return "avro/binary; fingerprint=" + fingerprint(schema).hex()


def publish(service: Any, *messages: NewMessage, queue: str = Q) -> None:
    fired(service.publish("default", queue, list(messages)))


def as_json(value: Any) -> NewMessage:
    """What an HTTP client posts: a JSON body."""
    return NewMessage(json.dumps(value).encode(), content_type="application/json")


def checked_queue(service: Any, schema: Any = V1, queue: str = Q) -> None:
    fired(service.create_queue("default", queue))
    fired(service.set_schema("default", queue, schema))


def subscribe(client: Client, destination: str = f"/queue/{Q}", **headers: str) -> None:
    client.send("SUBSCRIBE", {"destination": destination, "id": "s", "receipt": "r", **headers})
    assert client.next().command == "RECEIPT"


@pytest.fixture
def client(ctx: Any) -> Client:
    c = Client(ctx)
    c.connect()
    return c


# -- receiving -------------------------------------------------------------------------------


def test_json_published_as_http_does_arrives_as_equal_json_by_default(client, mem_service):
    checked_queue(mem_service)
    records = [{"id": 1, "name": "ann"}, {"id": 2, "name": "bö"}]
    publish(mem_service, *map(as_json, records))
    subscribe(client)
    msgs = client.messages()
    assert [json.loads(m.body) for m in msgs] == records
    for m in msgs:
        assert m.headers["content-type"] == "application/json"
        assert m.headers["content-length"] == str(len(m.body))
        assert ERROR_HEADER not in m.headers


def test_accept_avro_binary_gives_single_object_encoding_in_the_queue_schema(client, mem_service):
    checked_queue(mem_service)
    publish(mem_service, as_json({"id": 7, "name": "x"}))
    subscribe(client, accept="avro/binary")
    [m] = client.messages()
    assert m.headers["content-type"] == "avro/binary"
    assert m.body == b"\xc3\x01" + fingerprint(V1) + datum(V1, {"id": 7, "name": "x"})
    assert read_single_object(m.body, V1) == {"id": 7, "name": "x"}


@pytest.mark.parametrize(
    "accept, content_type",
    [
        ("application/json", "application/json"),
        ("*/*", "application/json"),
        ("application/vnd.apache.avro+binary", "avro/binary"),
        ("text/plain, avro/binary;q=0.9", "avro/binary"),
        ("AVRO/Binary", "avro/binary"),
    ],
)
def test_accept_takes_the_first_media_type_it_knows(client, mem_service, accept, content_type):
    checked_queue(mem_service)
    publish(mem_service, as_json({"id": 1, "name": "a"}))
    subscribe(client, accept=accept)
    [m] = client.messages()
    assert m.headers["content-type"] == content_type


def test_an_accept_naming_nothing_known_is_an_error(client):
    client.send("SUBSCRIBE", {"destination": "/queue/q", "id": "s", "accept": "text/xml"})
    f = client.next()
    assert f.command == "ERROR"
    assert "accept must be application/json or avro/binary" in f.headers["message"]


def test_stomp_1_0_accept_values_are_trimmed(ctx, mem_service):
    checked_queue(mem_service)
    publish(mem_service, as_json({"id": 1, "name": "a"}))
    c = Client(ctx, version=V10)
    c.connect(version=V10)
    c.send("SUBSCRIBE", {"destination": f"/queue/{Q}", "accept": " avro/binary "})
    [m] = c.messages()
    assert read_single_object(m.body, V1) == {"id": 1, "name": "a"}


def test_avro_published_through_the_core_reaches_topic_subscribers_in_both_formats(
    ctx, mem_service
):
    checked_queue(mem_service)
    as_json_client, as_avro_client = Client(ctx), Client(ctx)
    for c in (as_json_client, as_avro_client):
        c.connect()
    subscribe(as_json_client, f"/topic/{Q}")
    subscribe(as_avro_client, f"/topic/{Q}", accept="avro/binary")
    bare, single = {"id": 3, "name": "bare"}, {"id": 4, "name": "single"}
    publish(
        mem_service,
        # The two Avro forms the core takes: the bare datum under a content type naming
        # its writer, and single-object encoding.
        NewMessage(datum(V1, bare), content_type=stored_type(V1)),
        NewMessage(b"\xc3\x01" + fingerprint(V1) + datum(V1, single), content_type="avro/binary"),
    )
    assert [json.loads(m.body) for m in as_json_client.messages()] == [bare, single]
    got = as_avro_client.messages()
    assert [m.body for m in got] == [
        b"\xc3\x01" + fingerprint(V1) + datum(V1, bare),
        b"\xc3\x01" + fingerprint(V1) + datum(V1, single),
    ]
    assert {m.headers["destination"] for m in got} == {f"/topic/{Q}"}


@pytest.mark.parametrize("accept", ["application/json", "avro/binary"])
def test_messages_of_an_earlier_schema_arrive_resolved_into_the_current_one(
    client, mem_service, accept
):
    checked_queue(mem_service)
    publish(mem_service, as_json({"id": 1, "name": "old"}))
    fired(mem_service.set_schema("default", Q, V2))
    publish(mem_service, as_json({"id": 2, "name": "new", "email": "n@x"}))
    subscribe(client, accept=accept)
    old, new = client.messages()
    if accept == "avro/binary":
        assert read_single_object(old.body, V2) == {"id": 1, "name": "old", "email": None}
        assert read_single_object(new.body, V2) == {"id": 2, "name": "new", "email": "n@x"}
    else:
        assert json.loads(old.body) == {"id": 1, "name": "old", "email": None}
        assert json.loads(new.body) == {"id": 2, "name": "new", "email": "n@x"}


def test_a_new_writer_makes_the_subscription_read_the_schema_again(client, mem_service):
    checked_queue(mem_service)
    subscribe(client, f"/topic/{Q}")
    publish(mem_service, as_json({"id": 1, "name": "a"}))
    assert json.loads(client.messages()[0].body) == {"id": 1, "name": "a"}
    fired(mem_service.set_schema("default", Q, V2))
    publish(mem_service, as_json({"id": 2, "name": "b", "email": "b@x"}))
    # No time has passed: the message's writer (V2) is what says the schema changed.
    assert json.loads(client.messages()[0].body) == {"id": 2, "name": "b", "email": "b@x"}


def test_a_schema_change_reaches_older_messages_within_the_schema_ttl(client, mem_service, clock):
    checked_queue(mem_service)
    publish(mem_service, *(as_json({"id": i, "name": "v1"}) for i in range(3)))
    subscribe(client, ack="client-individual", **{"prefetch-count": "1"})
    [m0] = client.messages()
    fired(mem_service.set_schema("default", Q, V2))
    client.send("ACK", {"id": m0.headers["ack"]})
    [m1] = client.messages()
    # The schema is kept per subscription, not read per message: still V1's view.
    assert json.loads(m1.body) == {"id": 1, "name": "v1"}
    clock.advance(SCHEMA_TTL)
    client.send("ACK", {"id": m1.headers["ack"]})
    [m2] = client.messages()
    assert json.loads(m2.body) == {"id": 2, "name": "v1", "email": None}


class Counting(Delegating):
    """The service as a session sees it, counting the schema reads and body conversions
    asked of it (everything else passes through)."""

    COUNTED = ("get_schema", "decode_bodies", "resolve_bodies")

    def __init__(self, service: Any) -> None:
        super().__init__(service)
        self.calls: Counter[str] = Counter()

    def __getattr__(self, name: str) -> Any:
        attr = getattr(self.target, name)
        if name not in self.COUNTED:
            return attr

        def counted(*args: Any, **kwargs: Any) -> Any:
            self.calls[name] += 1
            return attr(*args, **kwargs)

        return counted


def test_the_schema_is_read_once_per_subscription_and_again_for_a_new_writer(mem_service):
    checked_queue(mem_service)
    counting = Counting(mem_service)
    client = Client(make_ctx(counting, heartbeat_ms=0))
    client.connect()
    subscribe(client, f"/topic/{Q}")
    for i in range(3):
        publish(mem_service, as_json({"id": i, "name": "v1"}))
        assert len(client.messages()) == 1
    assert counting.calls == {"get_schema": 1}
    fired(mem_service.set_schema("default", Q, V2))
    publish(mem_service, as_json({"id": 9, "name": "v2"}))
    assert json.loads(client.messages()[0].body)["email"] is None
    # Read again for the new writer; converted here, not by the service.
    assert counting.calls == {"get_schema": 2}


def test_a_backlog_of_an_earlier_writer_does_not_read_the_schema_per_batch(mem_service):
    checked_queue(mem_service)
    publish(mem_service, *(as_json({"id": i, "name": "v1"}) for i in range(3)))
    fired(mem_service.set_schema("default", Q, V2))
    counting = Counting(mem_service)
    client = Client(make_ctx(counting, heartbeat_ms=0))
    client.connect()
    subscribe(client, ack="client-individual", **{"prefetch-count": "1"})
    for _ in range(3):
        [m] = client.messages()
        assert json.loads(m.body)["email"] is None
        client.send("ACK", {"id": m.headers["ack"]})
    assert counting.calls == {"get_schema": 1, "decode_bodies": 3}


def test_bodies_that_are_not_avro_cost_no_schema_read(mem_service):
    counting = Counting(mem_service)
    client = Client(make_ctx(counting, heartbeat_ms=0))
    client.connect()
    publish(mem_service, as_json({"a": 1}), NewMessage(b"\xc3\x01" + bytes(12)), queue="plain")
    subscribe(client, "/queue/plain")
    assert len(client.messages()) == 2
    assert counting.calls == {}


# -- delivered as stored ----------------------------------------------------------------------


def _any_bodies() -> list[NewMessage]:
    return [
        NewMessage(datum(V1, {"id": 1, "name": "a"}), content_type=stored_type(V1)),
        NewMessage(b"\xc3\x01" + fingerprint(V1) + datum(V1, {"id": 2, "name": "b"})),
        as_json({"id": 3, "name": "c"}),
        NewMessage(b"plain text", content_type="text/plain"),
    ]


@pytest.mark.parametrize("accept", ["application/json", "avro/binary"])
def test_a_queue_without_a_schema_delivers_every_body_as_published(client, mem_service, accept):
    fired(mem_service.register_schema(V1))
    published = _any_bodies()
    publish(mem_service, *published, queue="plain")
    subscribe(client, "/queue/plain", accept=accept)
    got = client.messages()
    assert [(m.body, m.headers["content-type"]) for m in got] == [
        (p.body, p.content_type) for p in published
    ]
    assert not any(ERROR_HEADER in m.headers for m in got)


def test_bodies_published_before_the_schema_was_set_are_delivered_as_stored(client, mem_service):
    fired(mem_service.create_queue("default", Q))
    publish(
        mem_service,
        NewMessage(b"plain text", content_type="text/plain"),
        NewMessage(b"\xc3\x01 opaque, by its content type", content_type="application/x-raw"),
    )
    fired(mem_service.set_schema("default", Q, V1))
    subscribe(client, accept="avro/binary")
    got = client.messages()
    assert [(m.body, m.headers["content-type"]) for m in got] == [
        (b"plain text", "text/plain"),
        (b"\xc3\x01 opaque, by its content type", "application/x-raw"),
    ]


@pytest.mark.parametrize("schemas", [[V1], [V1, V2]], ids=["current", "earlier"])
def test_an_undecodable_body_is_delivered_as_stored_with_a_reason(client, mem_service, schemas):
    # Only a body stored before the queue had a schema can be malformed: one that names
    # V1 as its writer is stored as is, and V1 is then set (it reads its own writer).
    publish(mem_service, NewMessage(b"\x02", content_type=stored_type(V1)))
    for schema in schemas:
        fired(mem_service.set_schema("default", Q, schema))
    publish(mem_service, as_json({"id": 5, "name": "fine"}))
    subscribe(client)
    bad, good = client.messages()
    assert bad.body == b"\x02" and bad.headers["content-type"] == stored_type(V1)
    assert bad.headers[ERROR_HEADER].startswith("not decoded: ")
    assert json.loads(good.body)["name"] == "fine"
    assert not client.closing


# -- sending ----------------------------------------------------------------------------------


def _stored(service: Any, queue: str = Q) -> list[Any]:
    return fired(service.observe("default", queue, limit=10, include_claimed=True))


def _send(client: Client, body: bytes, content_type: str | None) -> Any:
    # Avro bodies hold NUL bytes: without a content-length the frame would end at the first.
    headers = {"destination": f"/queue/{Q}", "receipt": "sent", "content-length": str(len(body))}
    if content_type is not None:
        headers["content-type"] = content_type
    client.send("SEND", headers, body)
    return client.next()


def test_a_json_send_is_stored_as_avro_of_the_queue_schema(client, mem_service):
    checked_queue(mem_service)
    assert _send(client, b'{"id": 1, "name": "j"}', "application/json").command == "RECEIPT"
    [m] = _stored(mem_service)
    assert m.content_type == stored_type(V1)
    assert m.body == datum(V1, {"id": 1, "name": "j"})


@pytest.mark.parametrize("content_type", ["avro/binary", "application/octet-stream", None])
def test_a_single_object_send_is_taken_by_the_core(client, mem_service, content_type):
    checked_queue(mem_service)
    body = b"\xc3\x01" + fingerprint(V1) + datum(V1, {"id": 2, "name": "so"})
    assert _send(client, body, content_type).command == "RECEIPT"
    [m] = _stored(mem_service)
    assert (m.content_type, m.body) == (stored_type(V1), datum(V1, {"id": 2, "name": "so"}))
    subscribe(client)
    assert json.loads(client.messages()[0].body) == {"id": 2, "name": "so"}


def test_a_single_object_send_of_an_earlier_schema_is_resolved_into_the_current(
    client, mem_service
):
    checked_queue(mem_service)
    fired(mem_service.set_schema("default", Q, V2))
    body = b"\xc3\x01" + fingerprint(V1) + datum(V1, {"id": 3, "name": "v1"})
    assert _send(client, body, "avro/binary").command == "RECEIPT"
    [m] = _stored(mem_service)
    assert m.content_type == stored_type(V2)
    assert m.body == datum(V2, {"id": 3, "name": "v1", "email": None})


@pytest.mark.parametrize(
    "body, content_type, reason",
    [
        (b"\xc3\x01" + bytes(8) + b"\x02\x00", "avro/binary", "is not registered"),
        (datum(V1, {"id": 1, "name": "x"}), "avro/binary", "takes JSON"),
        (b'{"id": 1, "name": "x"}', None, "takes JSON"),
        (b'{"id": "one", "name": "x"}', "application/json", "messages[0].body.id"),
    ],
    ids=["unknown-writer", "bare-datum-without-fingerprint", "no-content-type", "bad-json"],
)
def test_a_send_the_queue_schema_refuses_is_an_error(
    client, mem_service, body, content_type, reason
):
    checked_queue(mem_service)
    f = _send(client, body, content_type)
    assert f.command == "ERROR" and f.headers["receipt-id"] == "sent"
    assert reason in f.headers["message"]
    assert _stored(mem_service) == []
