"""Avro RPC over HTTP at /avro, driven by apache avro's Requestor and HTTPTransceiver over a
real socket (the site listens on 127.0.0.1 in this process; blocking client calls run in a
thread)."""

from __future__ import annotations

import http.client
import io
import json
import socket
import threading
import time
from collections.abc import Iterator
from typing import Any

import avro.errors
import avro.ipc
import avro.protocol
import fastavro
import pytest
import pytest_twisted
from twisted.internet import threads
from twisted.internet.defer import Deferred
from twisted.internet.task import Clock

from qgate.core.auth import TrustedTenant
from qgate.core.avro_bodies import avro_content_type, format_fingerprint
from qgate.core.model import NewMessage, Overflow
from qgate.core.options import OPTIONS
from qgate.core.schemas import parse_schema
from qgate.core.service import QueueService
from qgate.gateway.config import parse
from qgate.gateway.registry import Protocols
from qgate.protocols.avro import qgate_protocol, records
from qgate.protocols.avro.ipc import AvroError, HandshakeRequest, frame, write_handshake_request
from qgate.protocols.avro.rpc import QGateCalls
from qgate.protocols.http import build_site
from qgate.storage.memory import MemoryStorage
from tests.support.core import TEST_LIMITS
from tests.support.deferreds import until
from tests.support.http import HTTP_TEST_CONFIG
from tests.support.schemas import USER_V1 as SCHEMA

T = "p1"


class Transceiver(avro.ipc.HTTPTransceiver):  # type: ignore[misc]
    """apache avro's HTTP transceiver, sending the tenant header (and counting posts)."""

    def __init__(self, port: int, project: str | None = T) -> None:
        super().__init__("127.0.0.1", port, req_resource="/avro")
        self.project = project
        self.posts = 0

    def write_framed_message(self, message: bytes) -> None:
        writer = avro.ipc.FramedWriter(io.BytesIO())
        writer.write_framed_message(message)
        headers = {"Content-Type": "avro/binary"}
        if self.project:
            headers["X-Project-Id"] = self.project
        self.posts += 1
        self.conn.request("POST", self.req_resource, writer.writer.getvalue(), headers)


class Client:
    """A blocking apache avro requestor, called from a thread."""

    def __init__(self, port: int, project: str | None = T) -> None:
        self.transceiver = Transceiver(port, project)
        text = qgate_protocol().text
        self.requestor = avro.ipc.Requestor(avro.protocol.parse(text), self.transceiver)

    def call(self, message: str, params: dict[str, Any]) -> Deferred[Any]:
        """The call, made now in a thread."""
        return threads.deferToThread(self.requestor.request, message, params)

    async def fails(self, message: str, params: dict[str, Any]) -> Any:
        with pytest.raises(avro.errors.AvroRemoteException) as info:
            await self.call(message, params)
        return info.value.args[0]

    def close(self) -> None:
        self.transceiver.close()


@pytest.fixture
def rpc_service(reactor) -> Iterator[QueueService]:
    yield QueueService(reactor, MemoryStorage(), MemoryStorage(), limits=TEST_LIMITS)


def listen(reactor: Any, service: QueueService, auth: Any = None) -> Any:
    settings = parse({"http": {"max_request_body": HTTP_TEST_CONFIG.max_request_body}})
    protocols = Protocols(reactor, service, auth or TrustedTenant(), settings.protocols)
    ctx = protocols.contexts["http"]  # with the registered /avro and /stomp mounts
    return reactor.listenTCP(0, build_site(ctx), interface="127.0.0.1")


@pytest.fixture
def port(reactor, rpc_service: QueueService) -> Iterator[int]:
    listening = listen(reactor, rpc_service)
    yield listening.getHost().port
    pytest_twisted.blockon(listening.stopListening())


def new_message(body: bytes, content_type: str = "application/json", **kw: Any) -> dict[str, Any]:
    message = {
        "body": body,
        "contentType": content_type,
        "headers": {},
        "ttl": None,
        "delay": None,
        "priority": None,
    }
    message.update(kw)
    return message


def http_request(port: int, method: str, path: str, body: bytes, content_type: str) -> Any:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    conn.request(method, path, body, {"Content-Type": content_type, "X-Project-Id": T})
    response = conn.getresponse()
    return response.status, response.getheader("Content-Type"), response.read()


def record_type(protocol: dict[str, Any], name: str) -> dict[str, Any]:
    """The named type of a protocol declaration (parsed JSON)."""
    [found] = [t for t in protocol["types"] if t["name"] == name]
    return found


def options_record(**given: Any) -> dict[str, Any]:
    """A ``QueueOptions`` record: every option null (the server's default) but ``given``."""
    fields = record_type(json.loads(qgate_protocol().text), "QueueOptions")["fields"]
    record: dict[str, Any] = {f["name"]: None for f in fields}
    record.update({"durable": True, "overflow": "REJECT", **given})
    return record


@pytest_twisted.ensureDeferred
async def test_a_first_call_handshakes_none_then_every_message_reaches_the_core(
    port: int, rpc_service: QueueService
) -> None:
    client = Client(port)
    try:
        assert await client.call("ping", {}) is True
        # apache avro hashes its own rendering of our protocol: NONE, then a resend.
        assert client.transceiver.posts == 2
        options = options_record(defaultTtl=600.0, schema=json.dumps(SCHEMA))
        assert await client.call(
            "createQueue", {"queue": "jobs", "options": options, "metadata": '{"team": "a"}'}
        )
        assert client.transceiver.posts == 3  # BOTH from now on: one post per call
        queue = await client.call("getQueue", {"queue": "jobs"})
        assert queue["options"]["defaultTtl"] == 600.0
        assert json.loads(queue["options"]["schema"]) == SCHEMA
        assert json.loads(queue["metadata"]) == {"team": "a"}
        ids = await client.call(
            "publish",
            {
                "queue": "jobs",
                "messages": [
                    new_message(b'{"id": 1, "name": "build"}', priority=7),
                    new_message(b'{"id": 2, "name": "test"}', delay=None),
                ],
            },
        )
        assert ids == ["1", "2"]
        stats = await client.call("stats", {"queue": "jobs"})
        assert (stats["total"], stats["available"]) == (2, 2)
        seen = await client.call(
            "observe",
            {
                "queue": "jobs",
                "after": "1",
                "limit": 10,
                "includeClaimed": False,
                "includeDelayed": False,
                "wait": 0.0,
            },
        )
        schema = parse_schema(SCHEMA)
        assert [m["id"] for m in seen] == ["2"]
        assert seen[0]["contentType"] == avro_content_type(schema.fingerprint)
        assert schema.decode(seen[0]["body"]) == {"id": 2, "name": "test"}
        claim = await client.call(
            "claim", {"queue": "jobs", "limit": 5, "ttl": 60.0, "grace": 0.0, "wait": 0.0}
        )
        assert [m["id"] for m in claim["messages"]] == ["1", "2"]  # priority 7 first
        assert claim["messages"][0]["priority"] == 7
        assert claim["messages"][0]["claimId"] == claim["id"]
        assert (
            await client.call(
                "release", {"queue": "jobs", "claimId": claim["id"], "ids": ["2"], "delay": 0.0}
            )
            == 1
        )
        assert await client.call(
            "ack", {"queue": "jobs", "claimId": claim["id"], "ids": ["1", "2"]}
        ) == ["1"]
        assert (await rpc_service.queue_stats(T, "jobs")).total == 1
        assert await client.call("deleteQueue", {"queue": "jobs"}) is True
    finally:
        client.close()


@pytest.fixture
def client(port: int) -> Iterator[Client]:
    client = Client(port)
    yield client
    client.close()


@pytest_twisted.ensureDeferred
async def test_max_post_bytes_is_set_shown_and_enforced_over_rpc(
    client: Client, rpc_service: QueueService
) -> None:
    options = options_record(maxPostBytes=8, maxMessages=5)
    assert await client.call(
        "createQueue", {"queue": "small", "options": options, "metadata": None}
    )
    assert (await rpc_service.get_queue(T, "small")).options.max_post_bytes == 8
    shown = (await client.call("getQueue", {"queue": "small"}))["options"]
    assert (shown["maxPostBytes"], shown["maxMessages"]) == (8, 5)
    fits = [new_message(b"1234", "text/plain"), new_message(b"5678", "text/plain")]
    assert await client.call("publish", {"queue": "small", "messages": fits}) == ["1", "2"]
    too_big = [new_message(b"123456789", "text/plain")]
    error = await client.fails("publish", {"queue": "small", "messages": too_big})
    assert error["title"] == "Request entity too large"
    assert "max_post_bytes 8" in error["description"]
    assert (await rpc_service.queue_stats(T, "small")).total == 2


#: The Avro type of each kind of core option (``core.options``).
AVRO_KINDS = {bool: "boolean", float: "double", str: "string", Overflow: "Overflow"}


def test_the_queue_options_record_has_a_field_of_the_right_type_for_every_core_option() -> None:
    found = record_type(json.loads(qgate_protocol().text), "QueueOptions")
    types = {f["name"]: f["type"] for f in found["fields"]}
    assert set(types) == {*records.OPTION_FIELDS.values(), records.SCHEMA_FIELD}
    for option in OPTIONS:
        kinds = ("long", "int") if option.kind is int else (AVRO_KINDS[option.kind],)
        # null takes the server's default; an option that may be None must take null.
        expected = [["null", kind] for kind in kinds] + ([] if option.optional else list(kinds))
        assert types[records.OPTION_FIELDS[option.name]] in expected, option.name


def without_field(text: str, record: str, name: str) -> str:
    """A protocol text as a client built before ``record`` had the field ``name``."""
    protocol = json.loads(text)
    found = record_type(protocol, record)
    found["fields"] = [f for f in found["fields"] if f["name"] != name]
    return json.dumps(protocol)


@pytest_twisted.ensureDeferred
async def test_a_client_whose_queue_options_lack_max_post_bytes_is_still_served(
    client: Client, rpc_service: QueueService
) -> None:
    old = without_field(qgate_protocol().text, "QueueOptions", "maxPostBytes")
    client.requestor = avro.ipc.Requestor(avro.protocol.parse(old), client.transceiver)
    options = options_record(defaultTtl=120.0)
    del options["maxPostBytes"]
    assert await client.call("createQueue", {"queue": "old", "options": options, "metadata": None})
    created = (await rpc_service.get_queue(T, "old")).options
    assert (created.default_ttl, created.max_post_bytes) == (120.0, None)
    shown = (await client.call("getQueue", {"queue": "old"}))["options"]
    assert shown["defaultTtl"] == 120.0
    assert "maxPostBytes" not in shown


@pytest_twisted.ensureDeferred
async def test_schemas_over_rpc_and_core_errors_as_the_declared_error(port: int) -> None:
    client = Client(port)
    try:
        await client.call("createQueue", {"queue": "q", "options": None, "metadata": None})
        assert await client.call("getSchema", {"queue": "q"}) is None
        fingerprint = await client.call("setSchema", {"queue": "q", "schema": json.dumps(SCHEMA)})
        assert fingerprint == format_fingerprint(parse_schema(SCHEMA).fingerprint)
        assert json.loads(await client.call("getSchema", {"queue": "q"})) == SCHEMA
        error = await client.fails(
            "publish",
            {"queue": "q", "messages": [new_message(b'{"id": "many", "name": "x"}')]},
        )
        assert error["title"] == "Invalid Avro data"
        assert error["field"] == "messages[0].body.id"
        assert await client.call("clearSchema", {"queue": "q"}) is None
        missing = await client.fails("getQueue", {"queue": "nope"})
        assert missing == {
            "title": "Not found",
            "description": "Queue 'nope' does not exist",
            "field": "queue_name",
        }
        bad = await client.fails(
            "createQueue", {"queue": "bad name", "options": None, "metadata": None}
        )
        assert bad["field"] == "queue_name"
        bad = await client.fails("createQueue", {"queue": "q2", "options": None, "metadata": "[]"})
        assert bad["field"] == "metadata"
    finally:
        client.close()


@pytest_twisted.ensureDeferred
async def test_a_waiting_claim_is_woken_by_a_publish(port: int, rpc_service: QueueService) -> None:
    client = Client(port)
    try:
        await client.call("ping", {})  # handshake done before the clock matters
        waiting = client.call(
            "claim", {"queue": "later", "limit": 1, "ttl": 60.0, "grace": 0.0, "wait": 30.0}
        )
        await until(lambda: rpc_service.waiting(T, "later") == 1)
        start = time.monotonic()
        await rpc_service.publish(T, "later", [NewMessage(b"now", content_type="text/plain")])
        claim = await waiting
        assert time.monotonic() - start < 5
        assert [m["body"] for m in claim["messages"]] == [b"now"]
    finally:
        client.close()


def claim_request(wait: float) -> bytes:
    """A framed call of ``claim`` as a client that knows the server's protocol sends it."""
    protocol = qgate_protocol()
    out = io.BytesIO()
    out.write(write_handshake_request(HandshakeRequest(protocol.md5, None, protocol.md5)))
    fastavro.schemaless_writer(out, {"type": "map", "values": "bytes"}, {})
    fastavro.schemaless_writer(out, "string", "claim")
    params = {"queue": "idle", "limit": 1, "ttl": 60.0, "grace": 0.0, "wait": wait}
    protocol.messages["claim"].request.write_to(out, params)
    return frame(out.getvalue())


def post_then_hang_up(port: int, body: bytes, parked: threading.Event) -> None:
    with socket.create_connection(("127.0.0.1", port), timeout=10) as s:
        s.sendall(
            b"POST /avro HTTP/1.1\r\nHost: x\r\nContent-Type: avro/binary\r\n"
            b"X-Project-Id: p1\r\nContent-Length: %d\r\n\r\n%s" % (len(body), body)
        )
        parked.wait(10)  # the test says when the call is parked in the core


@pytest_twisted.ensureDeferred
async def test_a_client_that_hangs_up_cancels_its_waiting_call(
    port: int, rpc_service: QueueService
) -> None:
    await rpc_service.create_queue(T, "idle")
    parked = threading.Event()
    gone = threads.deferToThread(post_then_hang_up, port, claim_request(wait=60), parked)
    await until(lambda: rpc_service.waiting(T, "idle") == 1)
    parked.set()
    await gone
    await until(lambda: rpc_service.waiting(T, "idle") == 0, timeout=5)
    assert (await rpc_service.queue_stats(T, "idle")).total == 0


@pytest_twisted.ensureDeferred
async def test_what_is_not_avro_rpc_gets_an_http_error(port: int) -> None:
    status, content_type, body = await threads.deferToThread(
        http_request, port, "POST", "/avro", b"\x00\x00\x00\x03abc", "avro/binary"
    )
    assert status == 400
    assert content_type.startswith("application/json")
    assert "terminator" in json.loads(body)["description"]
    status, _, body = await threads.deferToThread(
        http_request, port, "POST", "/avro", b"{}", "application/json"
    )
    assert status == 415
    assert set(json.loads(body)) == {"title", "description"}
    # a handshake that is not one
    status, _, body = await threads.deferToThread(
        http_request, port, "POST", "/avro", frame(b"\x01\x02"), "avro/binary"
    )
    assert status == 400
    assert "handshake" in json.loads(body)["description"]
    status, content_type, body = await threads.deferToThread(
        http_request, port, "GET", "/avro", b"", "application/json"
    )
    assert status == 200
    assert body.decode() == qgate_protocol().text


@pytest_twisted.ensureDeferred
async def test_the_tenant_comes_from_the_request_headers(reactor, rpc_service) -> None:
    listening = listen(reactor, rpc_service, auth=TrustedTenant())  # no default tenant
    port = listening.getHost().port
    anonymous, named = Client(port, project=None), Client(port, project="other")
    try:
        assert await anonymous.call("ping", {}) is True  # ping needs no tenant
        error = await anonymous.fails("stats", {"queue": "q"})
        assert error["title"] == "Unauthorized"
        await named.call(
            "publish", {"queue": "mine", "messages": [new_message(b"x", "text/plain")]}
        )
        assert [q.name for q in await rpc_service.list_queues("other")] == ["mine"]
        assert await rpc_service.list_queues(T) == []
    finally:
        anonymous.close()
        named.close()
        await listening.stopListening()


# -- input and storage qgate cannot serve (in memory, no sockets) ----------------------------


def calls_on(storage: MemoryStorage) -> tuple[QGateCalls, QueueService]:
    service = QueueService(Clock(), storage, MemoryStorage(), limits=TEST_LIMITS)
    return QGateCalls(service, TrustedTenant(), T, None), service


@pytest_twisted.ensureDeferred
async def test_metadata_that_is_not_strict_json_is_refused() -> None:
    calls, service = calls_on(MemoryStorage())
    for text in ('{"a": "\\ud800"}', '{"a": NaN}', '{"a": 1e400}'):
        with pytest.raises(AvroError) as e:
            await calls("createQueue", {"queue": "q", "options": None, "metadata": text})
        assert e.value.value["field"] == "metadata"
    assert await service.list_queues(T) == []


@pytest_twisted.ensureDeferred
async def test_a_claim_that_cannot_be_answered_is_released() -> None:
    storage = MemoryStorage()
    calls, service = calls_on(storage)
    # An Avro row whose writer schema in the registry is damaged: resolving it for the
    # answer fails after the claim is committed.
    fingerprint = parse_schema('"string"').fingerprint
    storage.put_schema(fingerprint, "{damaged")
    await service.create_queue(T, "q")
    row = NewMessage(b"\x02a", avro_content_type(fingerprint), ttl=300)
    storage.publish_now(T, "q", [row], service.clock.seconds(), None)
    params = {"queue": "q", "limit": 10, "ttl": 60.0, "grace": 60.0, "wait": 0.0}
    with pytest.raises(AvroError):
        await calls("claim", params)
    assert (await service.queue_stats(T, "q")).claimed == 0
    [again] = await service.observe(T, "q")
    assert again.claim_count == 0  # never answered: not counted as delivered


@pytest_twisted.ensureDeferred
async def test_a_publish_over_a_quota_is_the_declared_error_naming_it(
    reactor: Any, rpc_service: QueueService
) -> None:
    from qgate.core.guard import TenantGuard
    from qgate.core.quotas import Quotas, TenantQuotas

    guard = TenantGuard(rpc_service, reactor, TenantQuotas(Quotas(max_messages=1)))
    listening = listen(reactor, guard)  # type: ignore[arg-type]
    client = Client(listening.getHost().port)
    try:
        one = [new_message(b"1", "text/plain")]
        assert await client.call("publish", {"queue": "q", "messages": one}) == ["1"]
        error = await client.fails("publish", {"queue": "q", "messages": one})
        assert error["title"] == "Quota exceeded" and error["field"] == "max_messages"
        assert (await rpc_service.queue_stats(T, "q")).total == 1
    finally:
        client.close()
        await listening.stopListening()


@pytest_twisted.ensureDeferred
async def test_an_rpc_connection_counts_toward_max_connections_like_any_http_one(
    reactor: Any, rpc_service: QueueService
) -> None:
    from qgate.core.guard import TenantGuard
    from qgate.core.quotas import Quotas, TenantQuotas

    guard = TenantGuard(rpc_service, reactor, TenantQuotas(Quotas(max_connections=1)))
    listening = listen(reactor, guard)  # type: ignore[arg-type]
    first, second = Client(listening.getHost().port), Client(listening.getHost().port)
    try:
        assert await first.call("createQueue", {"queue": "q", "options": None, "metadata": None})
        assert guard.connections(T) == 1
        error = await second.fails("stats", {"queue": "q"})
        assert error["title"] == "Quota exceeded" and error["field"] == "max_connections"
        assert guard.connections(T) == 1
        first.close()
        await until(lambda: guard.connections(T) == 0)
    finally:
        first.close()
        second.close()
        await listening.stopListening()
