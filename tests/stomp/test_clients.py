"""Real clients over real sockets, in-process: stomp.py (1.1, 1.2) and stomper (1.0, 1.1).

stomp.py is blocking and threaded: its calls run in threads (``deferToThread``) and what
its receiver thread sees is collected in thread-safe queues the test waits on.
"""

from __future__ import annotations

import json
import queue
import socket
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from types import SimpleNamespace
from typing import Any

import pytest
import pytest_twisted
import stomp
import stomper
from twisted.internet.defer import maybeDeferred
from twisted.internet.threads import deferToThread

from qgate.core.model import NewMessage
from qgate.core.service import QueueService
from qgate.protocols.stomp import listener_factory
from qgate.protocols.stomp.codec import V10, V11, Parser
from qgate.storage.memory import MemoryStorage
from tests.support.core import TEST_LIMITS
from tests.support.deferreds import until
from tests.support.stomp import make_ctx
from tests.support.stores import open_store

from .test_avro import V1, datum, fingerprint, read_single_object

pytestmark = pytest.mark.integration

TIMEOUT = 5.0


@pytest.fixture
def server(reactor: Any) -> Any:
    service = QueueService(reactor, MemoryStorage(), MemoryStorage(), limits=TEST_LIMITS)
    ctx = make_ctx(service, reactor=reactor, heartbeat_ms=100)
    port = reactor.listenTCP(0, listener_factory(ctx, None), interface="127.0.0.1")
    yield SimpleNamespace(service=service, ctx=ctx, port=port.getHost().port)
    pytest_twisted.blockon(maybeDeferred(port.stopListening))


class Collector(stomp.ConnectionListener):  # type: ignore[misc]
    """What stomp.py's receiver thread sees, for the test to wait on."""

    def __init__(self) -> None:
        self.messages: queue.Queue[Any] = queue.Queue()
        self.receipts: queue.Queue[str] = queue.Queue()
        self.errors: queue.Queue[Any] = queue.Queue()
        self.heartbeats = 0
        self.disconnected = False

    def on_message(self, frame: Any) -> None:
        self.messages.put(frame)

    def on_receipt(self, frame: Any) -> None:
        self.receipts.put(frame.headers["receipt-id"])

    def on_error(self, frame: Any) -> None:
        self.errors.put(frame)

    def on_heartbeat(self) -> None:
        self.heartbeats += 1

    def on_disconnected(self) -> None:
        self.disconnected = True


async def get(q: queue.Queue[Any]) -> Any:
    return await deferToThread(q.get, True, TIMEOUT)


async def nothing(q: queue.Queue[Any], wait: float = 0.2) -> bool:
    try:
        await deferToThread(q.get, True, wait)
    except queue.Empty:
        return True
    return False


async def open_conn(server: Any, cls: Any = stomp.Connection12, **kw: Any) -> tuple[Any, Collector]:
    conn = cls([("127.0.0.1", server.port)], auto_decode=False, vhost="/", **kw)
    listener = Collector()
    conn.set_listener("collector", listener)
    await deferToThread(conn.connect, wait=True)
    return conn, listener


async def close_conn(conn: Any) -> None:
    if conn.is_connected():
        await deferToThread(conn.disconnect, receipt="bye")


@asynccontextmanager
async def connected(
    server: Any, cls: Any = stomp.Connection12, **kw: Any
) -> AsyncIterator[tuple[Any, Collector]]:
    """``open_conn`` for the block, then ``close_conn``."""
    conn, events = await open_conn(server, cls, **kw)
    try:
        yield conn, events
    finally:
        await close_conn(conn)


async def stats(server: Any, name: str) -> Any:
    return await server.service.queue_stats("default", name)


@pytest_twisted.ensureDeferred
async def test_stomp_py_1_2_client_individual_ack_and_nack(server):
    async with connected(server) as (conn, events):
        for body in (b"first", b"second"):
            await deferToThread(conn.send, "/queue/jobs", body, receipt=body.decode())
        assert {await get(events.receipts), await get(events.receipts)} == {"first", "second"}
        await deferToThread(conn.subscribe, "/queue/jobs", id="s1", ack="client-individual")
        m1, m2 = await get(events.messages), await get(events.messages)
        assert [m1.body, m2.body] == [b"first", b"second"]
        await deferToThread(conn.nack, m1.headers["ack"])
        again = await get(events.messages)
        assert again.body == b"first" and again.headers["redelivered"] == "true"
        for m in (m2, again):
            await deferToThread(conn.ack, m.headers["ack"], receipt="a" + m.headers["ack"])
            await get(events.receipts)
        assert (await stats(server, "jobs")).total == 0


@pytest_twisted.ensureDeferred
async def test_stomp_py_1_1_client_ack_and_redelivery_after_disconnect(server):
    conn, events = await open_conn(server, stomp.Connection11)
    await deferToThread(conn.send, "/queue/work", b"job", receipt="s")
    await get(events.receipts)
    await deferToThread(conn.subscribe, "/queue/work", id="s1", ack="client")
    m = await get(events.messages)
    assert m.body == b"job"
    await close_conn(conn)  # not acknowledged: it goes back to the queue
    async with connected(server, stomp.Connection11) as (conn, events):
        await deferToThread(conn.subscribe, "/queue/work", id="s1", ack="client")
        m = await get(events.messages)
        assert m.body == b"job" and m.headers["redelivered"] == "true"
        await deferToThread(conn.ack, m.headers["message-id"], "s1", receipt="ack")
        assert await get(events.receipts) == "ack"
        assert (await stats(server, "work")).total == 0


@pytest_twisted.ensureDeferred
async def test_stomp_py_auto_ack_and_topics(server):
    async with connected(server) as (a, ea), connected(server) as (b, eb):
        for conn, events in ((a, ea), (b, eb)):
            await deferToThread(conn.subscribe, "/topic/news", id="t", receipt="sub")
            await get(events.receipts)
        await deferToThread(a.send, "/topic/news", b"headline")
        assert (await get(ea.messages)).body == b"headline"
        assert (await get(eb.messages)).body == b"headline"


@pytest_twisted.ensureDeferred
async def test_stomp_py_transactions(server):
    async with connected(server) as (conn, events):
        tx = await deferToThread(conn.begin)
        await deferToThread(conn.send, "/queue/tx", b"1", transaction=tx)
        await deferToThread(conn.send, "/queue/tx", b"2", transaction=tx, receipt="in-tx")
        await get(events.receipts)
        with pytest.raises(Exception, match="does not exist"):
            await stats(server, "tx")
        await deferToThread(conn.commit, tx, receipt="commit")
        assert await get(events.receipts) == "commit"
        assert (await stats(server, "tx")).total == 2

        tx = await deferToThread(conn.begin)
        await deferToThread(conn.send, "/queue/tx", b"3", transaction=tx)
        await deferToThread(conn.abort, tx, receipt="abort")
        assert await get(events.receipts) == "abort"
        assert (await stats(server, "tx")).total == 2


@pytest_twisted.ensureDeferred
async def test_stomp_py_binary_body_and_non_ascii_headers(server):
    async with connected(server) as (conn, events):
        body = bytes(range(256)) * 4 + b"\x00\x00end"
        headers = {"x-ünïcode": "wért:✓\nsecond line\\", "x-plain": "a b"}
        await deferToThread(
            conn.send, "/queue/bin", body, content_type="application/x-raw", headers=headers
        )
        await deferToThread(conn.subscribe, "/queue/bin", id="s")
        m = await get(events.messages)
        assert m.body == body
        assert m.headers["content-type"] == "application/x-raw"
        for k, v in headers.items():
            assert m.headers[k] == v
        # An HTTP consumer sees the same bytes, content type and headers in the core.
        await deferToThread(conn.send, "/queue/seen", body, content_type="application/x-raw")
        [stored] = await server.service.observe("default", "seen")
        assert stored.body == body and stored.content_type == "application/x-raw"


@pytest_twisted.ensureDeferred
async def test_stomp_py_heart_beats_keep_the_connection(server):
    # 500 ms beats: the server drops a client silent for 750 ms, which a loaded 2-core CI
    # machine cannot fake; 2 beats received prove both sides kept the connection alive.
    async with connected(server, heartbeats=(500, 500)) as (conn, events):
        await deferToThread(conn.subscribe, "/queue/hb", id="s")
        await until(lambda: events.heartbeats >= 2, timeout=10)
        assert conn.is_connected()
        await server.service.publish("default", "hb", [NewMessage(b"alive")])
        assert (await get(events.messages)).body == b"alive"


@pytest_twisted.ensureDeferred
async def test_stomp_py_error_for_a_bad_destination(server):
    conn, events = await open_conn(server)
    await deferToThread(conn.send, "/elsewhere/x", b"x", receipt="r")
    error = await get(events.errors)
    assert "unknown destination" in error.headers["message"]
    assert error.headers["receipt-id"] == "r"


# -- raw sockets: stomper-built frames, and a silent client -----------------------------------


class RawClient:
    """A blocking socket that writes stomper-built frames and reads with our parser (stomper's
    own reader is str-only and loses frames after heart-beat EOLs)."""

    def __init__(self, port: int, version: str) -> None:
        self.sock = socket.create_connection(("127.0.0.1", port), timeout=TIMEOUT)
        self.parser = Parser(version=version)
        self.pending: list[Any] = []

    def write(self, frame: str) -> None:
        self.sock.sendall(frame.encode("utf-8"))

    def frame(self) -> Any:
        while not self.pending:
            data = self.sock.recv(65536)
            if not data:
                raise EOFError("connection closed")
            self.parser.feed(data)
            self.pending.extend(self.parser.frames())
        return self.pending.pop(0)

    def closed(self) -> bool:
        try:
            return self.sock.recv(65536) == b""
        except OSError:
            return True


def _stomper_1_0_session(port: int) -> list[Any]:
    from stomper import stomp_10

    c = RawClient(port, V10)
    c.write(stomp_10.connect("guest", "guest"))
    out = [c.frame()]
    # stomper 1.0 writes "destination: /queue/x" (a space after the colon), as 1.0 did.
    c.write(stomp_10.send("/queue/legacy", "hello 1.0"))
    c.write(stomp_10.subscribe("/queue/legacy", ack="client"))
    message = c.frame()
    out.append(message)
    c.write(stomp_10.ack(message.headers["message-id"]))
    f = stomper.Frame()
    f.cmd = "DISCONNECT"
    f.headers = {"receipt": "bye"}
    c.write(f.pack())
    out.append(c.frame())
    out.append(c.closed())
    return out


def _stomper_1_1_session(port: int) -> list[Any]:
    c = RawClient(port, V11)
    c.write(stomper.connect("guest", "guest", "/", heartbeats=(0, 0)))
    out = [c.frame()]
    c.write(stomper.subscribe("/queue/legacy11", "sub-0", ack="client"))
    c.write(stomper.send("/queue/legacy11", "hello 1.1"))
    message = c.frame()
    out.append(message)
    # Our MESSAGE frames are readable by stomper's own 1.1 unpacker.
    legacy = stomper.unpack_frame(
        "MESSAGE\n"
        + "".join(f"{k}:{v}\n" for k, v in message.headers.items())
        + "\n"
        + message.body.decode()
        + "\x00\n"
    )
    out.append(legacy)
    c.write(stomper.nack(message.headers["message-id"], "sub-0"))
    again = c.frame()
    out.append(again)
    c.write(stomper.ack(again.headers["message-id"], "sub-0"))
    f = stomper.Frame()
    f.cmd = "DISCONNECT"
    f.headers = {"receipt": "bye"}
    c.write(f.pack())
    out.append(c.frame())
    return out


@pytest_twisted.ensureDeferred
async def test_stomper_1_0_client(server):
    connected, message, receipt, closed = await deferToThread(_stomper_1_0_session, server.port)
    assert connected.command == "CONNECTED" and connected.headers["version"] == "1.0"
    assert message.body == b"hello 1.0"
    assert receipt.headers["receipt-id"] == "bye"
    assert closed
    assert (await stats(server, "legacy")).total == 0


@pytest_twisted.ensureDeferred
async def test_stomper_1_1_client(server):
    connected, message, legacy, again, receipt = await deferToThread(
        _stomper_1_1_session, server.port
    )
    assert connected.headers["version"] == "1.1"
    assert message.body == b"hello 1.1"
    assert message.headers["content-type"] == "text/plain"
    assert legacy["cmd"] == "MESSAGE" and legacy["body"].startswith("hello 1.1")
    assert again.headers["redelivered"] == "true"
    assert receipt.headers["receipt-id"] == "bye"
    assert (await stats(server, "legacy11")).total == 0


def _silent_client(port: int) -> tuple[Any, Any, bool]:
    c = RawClient(port, V11)
    c.write("CONNECT\naccept-version:1.1\nhost:/\nheart-beat:100,0\n\n\x00")
    connected = c.frame()
    error = c.frame()  # nothing sent for 1.5 x 100 ms: the server gives up
    return connected, error, c.closed()


@pytest_twisted.ensureDeferred
async def test_a_silent_client_is_disconnected(server):
    connected, error, closed = await deferToThread(_silent_client, server.port)
    assert connected.headers["heart-beat"] == "100,100"
    assert error.command == "ERROR" and "heart-beat" in error.headers["message"]
    assert closed


@pytest.fixture
def sql_server(reactor: Any, tmp_path: Any) -> Any:
    """The STOMP listener over a SQLite store (durable queues, cursors in SQL)."""
    store = open_store("sqlite", reactor, tmp_path, None)
    service = QueueService(reactor, store, MemoryStorage(), limits=TEST_LIMITS)
    ctx = make_ctx(service, reactor=reactor, heartbeat_ms=0)
    port = reactor.listenTCP(0, listener_factory(ctx, None), interface="127.0.0.1")
    yield SimpleNamespace(service=service, ctx=ctx, port=port.getHost().port)
    pytest_twisted.blockon(maybeDeferred(port.stopListening))
    pytest_twisted.blockon(store.close())


@pytest_twisted.ensureDeferred
async def test_durable_subscription_on_an_empty_sql_queue_gets_what_was_sent_while_away(
    sql_server,
):
    headers = {"durable": "true", "receipt": "sub"}
    conn, events = await open_conn(sql_server)
    await deferToThread(conn.subscribe, "/topic/alerts", id="keeper", ack="client", **headers)
    assert await get(events.receipts) == "sub"
    assert await sql_server.service.get_cursor("default", "alerts", "keeper") == "0"
    await close_conn(conn)
    await sql_server.service.publish("default", "alerts", [NewMessage(b"while away")])
    async with connected(sql_server) as (conn, events):
        await deferToThread(conn.subscribe, "/topic/alerts", id="keeper", ack="client", **headers)
        assert await get(events.receipts) == "sub"
        m = await get(events.messages)
        assert m.body == b"while away"
        await deferToThread(conn.ack, m.headers["ack"], receipt="acked")
        assert await get(events.receipts) == "acked"
        assert await sql_server.service.get_cursor("default", "alerts", "keeper") == "1"


@pytest_twisted.ensureDeferred
async def test_stomp_py_on_a_schema_checked_sql_queue_gets_json_or_single_object(sql_server):
    service = sql_server.service
    await service.create_queue("default", "users")
    await service.set_schema("default", "users", V1)
    async with connected(sql_server) as (conn, events):
        await deferToThread(conn.subscribe, "/topic/users", id="json", receipt="j")
        await deferToThread(
            conn.subscribe,
            "/topic/users",
            id="avro",
            receipt="a",
            headers={"accept": "avro/binary"},
        )
        assert {await get(events.receipts), await get(events.receipts)} == {"j", "a"}
        # One message published as JSON over the core (what HTTP does), one sent by stomp.py
        # in single-object encoding (id 0 is a NUL byte: stomp.py sends a content-length).
        await service.publish(
            "default",
            "users",
            [NewMessage(b'{"id": 1, "name": "ann"}', content_type="application/json")],
        )
        single = b"\xc3\x01" + fingerprint(V1) + datum(V1, {"id": 0, "name": "bo"})
        await deferToThread(
            conn.send, "/topic/users", single, content_type="avro/binary", receipt="sent"
        )
        assert await get(events.receipts) == "sent"
        got: dict[str, list[Any]] = {"json": [], "avro": []}
        for _ in range(4):
            m = await get(events.messages)
            got[m.headers["subscription"]].append(m)
        assert [json.loads(m.body) for m in got["json"]] == [
            {"id": 1, "name": "ann"},
            {"id": 0, "name": "bo"},
        ]
        assert {m.headers["content-type"] for m in got["json"]} == {"application/json"}
        assert [read_single_object(m.body, V1) for m in got["avro"]] == [
            {"id": 1, "name": "ann"},
            {"id": 0, "name": "bo"},
        ]
        assert got["avro"][1].body == single
        assert {m.headers["content-type"] for m in got["avro"]} == {"avro/binary"}
