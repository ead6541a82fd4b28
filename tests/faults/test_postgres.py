"""PostgreSQL going away and coming back, on a private cluster stopped and started under
load: calls fail fast with StorageUnavailable (HTTP 503, a STOMP ERROR) while it is down,
everything works again within a second of its return, nothing acknowledged is lost, and
the process still stops."""

from __future__ import annotations

import socket
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import pytest_twisted
from twisted.internet import task
from twisted.internet.defer import Deferred, gatherResults
from twisted.internet.threads import deferToThread

from qgate.core.errors import StorageUnavailable
from qgate.core.model import NewMessage, QueueOptions
from qgate.core.service import QueueService
from qgate.storage.memory import MemoryStorage
from qgate.storage.sql.store import SQLStorage
from tests.faults.conftest import PrivateCluster, within
from tests.support.core import TEST_LIMITS
from tests.support.deferreds import until
from tests.support.serve import Server, free_port

pytestmark = pytest.mark.integration

TENANT = "t1"


def sleep(seconds: float) -> Deferred[None]:
    from twisted.internet import reactor

    return task.deferLater(reactor, seconds, lambda: None)


@pytest.fixture
def restores(cluster: PrivateCluster):
    """Whatever a test did to it, the cluster runs again afterwards."""
    yield cluster
    if not cluster.running():
        cluster.start()


@pytest_twisted.ensureDeferred
async def test_calls_to_an_unreachable_database_fail_fast_and_close_finishes(reactor) -> None:
    store = SQLStorage(reactor, f"postgresql://postgres@127.0.0.1:{free_port()}/nowhere")
    try:
        for _ in range(3):  # the first connect, then the backoff's quick refusals
            with pytest.raises(StorageUnavailable, match="storage unavailable"):
                await within(store.create_queue(TENANT, "q", QueueOptions(), {}, 0.0), 3)
        with pytest.raises(StorageUnavailable, match="storage unavailable"):
            await within(store.get_queue(TENANT, "q"), 3, "a read")
    finally:
        await within(store.close(), 3, "close()")
    with pytest.raises(StorageUnavailable, match="shutting down"):
        await store.create_queue(TENANT, "q", QueueOptions(), {}, 0.0)


@pytest_twisted.ensureDeferred
async def test_the_first_read_and_write_after_a_restart_succeed(
    restores: PrivateCluster, reactor
) -> None:
    """The pooled read connection and the writer's connection both died in the restart:
    reads get a tested connection (pool_pre_ping), and the writer retries a batch that
    failed on a dead connection before COMMIT."""
    cluster = restores
    store = SQLStorage(reactor, cluster.url(), read_threads=1)
    try:
        await within(store.create_queue(TENANT, "idle", QueueOptions(), {}, time.time()), 3)
        assert await within(store.get_queue(TENANT, "idle"), 3) is not None
        await deferToThread(cluster.stop)
        await deferToThread(cluster.start)
        assert await within(store.get_queue(TENANT, "idle"), 3, "a read") is not None
        publish = store.publish(TENANT, "idle", [NewMessage(b"x")], time.time(), None)
        assert await within(publish, 3, "a publish") == [1]
    finally:
        await within(store.close(), 3, "close()")


@pytest_twisted.ensureDeferred
async def test_a_restart_under_load_fails_fast_then_recovers_losing_nothing(
    restores: PrivateCluster, reactor
) -> None:
    cluster = restores
    service = QueueService(reactor, SQLStorage(reactor, cluster.url()), MemoryStorage(),
                           limits=TEST_LIMITS)  # fmt: skip
    await service.create_queue(TENANT, "load")
    stored: dict[str, bytes] = {}  # id -> body of every publish that answered with its id
    answered: list[float] = []  # when each successful publish answered
    refused: list[float] = []
    running = True

    async def publisher(n: int) -> None:
        i = 0
        while running:
            body = f"{n}.{i}".encode()
            i += 1
            try:
                d = service.publish(TENANT, "load", [NewMessage(body)])
                [message_id] = await within(d, 3, "a publish")
            except StorageUnavailable:
                refused.append(time.monotonic())
                await sleep(0.005)
            else:
                stored[message_id] = body
                answered.append(time.time())

    publishers = [Deferred.fromCoroutine(publisher(n)) for n in range(8)]
    try:
        await until(lambda: len(stored) >= 200)
        await deferToThread(cluster.stop)
        down = time.monotonic()
        await until(lambda: any(t > down for t in refused), timeout=2)
        calls: list[Callable[[], Deferred[Any]]] = [
            lambda: service.get_messages(TENANT, "load", ["1"]),
            lambda: service.observe(TENANT, "load"),
            lambda: service.claim(TENANT, "load"),
            lambda: service.queue_stats(TENANT, "load"),
        ]
        for call in calls:
            with pytest.raises(StorageUnavailable):
                await within(call(), 3)
        during = len(stored)
        await deferToThread(cluster.start)
        up = cluster.ready_at()
        await until(lambda: any(t > up for t in answered), timeout=2)
        recovered = min(t for t in answered if t > up) - up
        await until(lambda: len(stored) > during + 100, timeout=2)
    finally:
        running = False
        await within(gatherResults(publishers), 5, "the publishers")
    print(f"\nPostgreSQL back -> first publish committed: {recovered * 1000:.0f} ms")
    assert recovered < 1.0

    ids = sorted(stored, key=int)
    for start in range(0, len(ids), 100):
        chunk = ids[start : start + 100]
        found = await within(service.get_messages(TENANT, "load", chunk), 3, "a read")
        assert {m.id: m.body for m in found} == {i: stored[i] for i in chunk}
    claim = await within(service.claim(TENANT, "load", limit=5), 3, "a claim")
    assert claim is not None and len(claim.messages) == 5
    claimed = [m.id for m in claim.messages]
    assert await within(service.ack(TENANT, "load", claim.id, claimed), 3, "an ack") == claimed
    await within(service.stop(), 5, "stopping the service")


@pytest_twisted.ensureDeferred
async def test_the_listen_thread_reconnects_after_a_restart(restores: PrivateCluster, reactor):
    cluster = restores
    listener = SQLStorage(reactor, cluster.url())
    other = SQLStorage(reactor, cluster.url())  # another process, as far as NOTIFY goes
    woken: list[str] = []
    listener.start_wakeups(lambda tenant, name: woken.append(name))
    try:
        assert await deferToThread(listener.listen_ready.wait, 5)
        await other.create_queue(TENANT, "wake", QueueOptions(), {}, time.time())
        connects = listener.listen_connects
        await deferToThread(cluster.stop)
        await deferToThread(cluster.start)
        deadline = time.monotonic() + 3
        while "wake" not in woken:
            assert time.monotonic() < deadline, "no wakeup after the restart"
            try:
                await within(
                    other.publish(TENANT, "wake", [NewMessage(b"x")], time.time(), None), 3
                )
            except StorageUnavailable:
                pass
            await sleep(0.05)
        assert listener.listen_connects > connects
    finally:
        await within(listener.close(), 3)
        await within(other.close(), 3)


def _stomp_frame(sock: socket.socket) -> bytes:
    data = b""
    while not data.lstrip(b"\r\n").endswith(b"\x00"):
        chunk = sock.recv(4096)
        if not chunk:
            break
        data += chunk
    return data.lstrip(b"\r\n")


def _stomp_send_with_receipt(port: int, tenant: str, destination: str) -> bytes:
    """CONNECT, SEND with a receipt; the frame the server answers the SEND with."""
    with socket.create_connection(("127.0.0.1", port), timeout=5) as sock:
        sock.sendall(f"CONNECT\naccept-version:1.2\nhost:{tenant}\n\n\x00".encode())
        assert _stomp_frame(sock).startswith(b"CONNECTED\n")
        sock.sendall(f"SEND\ndestination:{destination}\nreceipt:r-1\n\nhello\x00".encode())
        return _stomp_frame(sock)


def test_qgate_serve_answers_503_while_postgresql_is_down_201_after_and_stops(
    restores: PrivateCluster, tmp_path: Path
) -> None:
    cluster = restores
    server = Server(tmp_path, storage=cluster.url())
    server.start()
    post = {"messages": [{"body": {"n": 1}, "ttl": 300}]}
    try:
        assert server.request("POST", "/v2/queues/pg/messages", post)[0] == 201
        cluster.stop()

        status, headers, body = server.exchange("POST", "/v2/queues/pg/messages", post)
        assert status == 503
        assert headers["Retry-After"] == "1"
        assert body["title"] == "Service temporarily unavailable"
        assert body["description"].startswith("storage unavailable")
        status, headers, body = server.exchange("GET", "/v2/queues/pg/messages?echo=true")
        assert status == 503 and headers["Retry-After"] == "1"
        assert body["description"].startswith("storage unavailable")
        status, _, health = server.exchange("GET", "/v2/health")
        assert status == 503
        assert health["storage"]["storage_reachable"] is False
        error = _stomp_send_with_receipt(server.stomp, server.tenant, "/queue/pg")
        assert error.startswith(b"ERROR\n")
        assert b"\nreceipt-id:r-1\n" in error
        assert b"\nmessage:storage unavailable" in error

        cluster.start()
        up = cluster.ready_at()
        while (status := server.request("POST", "/v2/queues/pg/messages", post)[0]) != 201:
            assert status == 503
            assert time.time() - up < 2, "no 201 within 2 s of PostgreSQL's return"
            time.sleep(0.01)
        print(f"\nPostgreSQL back -> first HTTP 201: {(time.time() - up) * 1000:.0f} ms")
        assert server.request("GET", "/v2/health")[0] == 200
        status, listing = server.request("GET", "/v2/queues/pg/messages?echo=true")
        assert status == 200 and len(listing["messages"]) == 2

        # SIGTERM while the database is down, with a write refused: the process ends.
        cluster.stop()
        assert server.request("POST", "/v2/queues/pg/messages", post)[0] == 503
        assert server.proc is not None
        started = time.monotonic()
        server.proc.terminate()
        assert server.proc.wait(timeout=10) == 0
        assert time.monotonic() - started < 5
    finally:
        if server.proc is not None and server.proc.poll() is None:
            server.proc.kill()
            server.proc.wait()
        server.log.close()
