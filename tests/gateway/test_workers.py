"""``qgate serve --workers 2`` as a user runs it: one queue namespace whichever worker a
client reaches, leases that outlive a killed worker, restarts, and clean stops.

Which worker accepts a connection is the kernel's choice; a test pins a connection to a
worker by stopping (SIGSTOP) the other one while it connects and makes a first round
trip, then lets it run again.
"""

from __future__ import annotations

import http.client
import json
import os
import signal
import socket
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest

from qgate.gateway.cli import main
from tests.support.serve import CLIENT_ID, Server

pytestmark = pytest.mark.integration

LEASE = 2.0


def start(workdir: Path) -> Server:
    s = Server(workdir, workers=2, extra=f"[stomp]\nlease = {LEASE}\nheartbeat_ms = 0\n")
    s.start()
    wait_for(lambda: len(s.worker_pids()) == 2)
    return s


@pytest.fixture(scope="module")
def shared(tmp_path_factory) -> Iterator[Server]:
    """One server for the tests that leave it serving (they use their own queues)."""
    s = start(tmp_path_factory.mktemp("workers"))
    yield s
    if s.proc is not None and s.proc.poll() is None:
        s.proc.kill()
        s.proc.wait()


@pytest.fixture
def server(tmp_path) -> Iterator[Server]:
    s = start(tmp_path)
    yield s
    if s.proc is not None and s.proc.poll() is None:
        s.proc.kill()
        s.proc.wait()


def wait_for(predicate: Any, timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.05)


@contextmanager
def only(server: Server, pid: int) -> Iterator[None]:
    """Connections made (and answered once) inside are accepted by worker ``pid``."""
    others = [p for p in server.worker_pids() if p != pid]
    for other in others:
        os.kill(other, signal.SIGSTOP)
    try:
        yield
    finally:
        for other in others:
            os.kill(other, signal.SIGCONT)


class HTTP:
    """One kept-alive HTTP connection (so one worker) with qgate's headers."""

    def __init__(self, server: Server) -> None:
        self.conn = http.client.HTTPConnection("127.0.0.1", server.http, timeout=15)
        self.tenant = server.tenant
        self.request("GET", "/v2/ping")

    def request(self, method: str, path: str, body: object = None) -> tuple[int, Any]:
        headers = {"Client-ID": CLIENT_ID, "X-Project-Id": self.tenant}
        data = None if body is None else json.dumps(body).encode()
        if data is not None:
            headers["Content-Type"] = "application/json"
        self.conn.request(method, path, data, headers)
        response = self.conn.getresponse()
        raw = response.read()
        return response.status, json.loads(raw) if raw else {}


class Stomp:
    """A minimal STOMP 1.2 client over a blocking socket."""

    def __init__(self, server: Server) -> None:
        self.sock = socket.create_connection(("127.0.0.1", server.stomp), timeout=15)
        self.buffer = b""
        self.send("CONNECT", {"accept-version": "1.2", "host": server.tenant})
        assert self.frame()[0] == "CONNECTED"

    def send(self, command: str, headers: dict[str, str], body: bytes = b"") -> None:
        head = "".join(f"{k}:{v}\n" for k, v in headers.items())
        self.sock.sendall(f"{command}\n{head}\n".encode() + body + b"\x00")

    def frame(self) -> tuple[str, dict[str, str], bytes]:
        while b"\x00" not in self.buffer:
            chunk = self.sock.recv(65536)
            assert chunk, "connection closed"
            self.buffer += chunk
        raw, _, self.buffer = self.buffer.partition(b"\x00")
        head, _, body = raw.lstrip(b"\r\n").partition(b"\n\n")
        command, *lines = head.decode().split("\n")
        return command, dict(line.split(":", 1) for line in lines), body

    def receipt(self, command: str, headers: dict[str, str], body: bytes = b"") -> None:
        self.send(command, {**headers, "receipt": "r"}, body)
        assert self.frame()[0] == "RECEIPT"

    def close(self) -> None:
        self.sock.close()


def test_a_consumer_on_one_worker_gets_what_a_producer_on_another_sends(shared):
    server = shared
    a, b = server.worker_pids()
    with only(server, a):
        consumer = Stomp(server)
        consumer.receipt("SUBSCRIBE", {"id": "1", "destination": "/queue/jobs", "ack": "auto"})
        poller = HTTP(server)
    with only(server, b):
        producer = HTTP(server)
        stomp_producer = Stomp(server)
    status, _ = producer.request("POST", "/v2/queues/jobs/messages", {"messages": [{"body": 1}]})
    assert status == 201
    command, _, body = consumer.frame()
    assert command == "MESSAGE" and json.loads(body) == 1

    answer: dict[str, Any] = {}
    waiter = threading.Thread(
        target=lambda: answer.update(
            reply=poller.request("GET", "/v2/queues/news/messages?wait=10&echo=true")
        )
    )
    poller.request("PUT", "/v2/queues/news")
    waiter.start()
    time.sleep(0.3)  # let the poll park (a publish first would be answered all the same)
    stomp_producer.receipt("SEND", {"destination": "/queue/news"}, b"wake up")
    waiter.join(10)
    status, document = answer["reply"]
    assert status == 200 and [m["body"] for m in document["messages"]] == ["wake up"]
    assert server.output().count("qgate listening on") == 1
    assert "with 2 workers" in server.output()


def test_a_transient_queue_is_the_same_queue_from_every_worker(shared):
    server = shared
    a, b = server.worker_pids()
    with only(server, a):
        one = HTTP(server)
    with only(server, b):
        two = HTTP(server)
    assert one.request("PUT", "/v2/queues/fleeting", {"_durable": False})[0] == 201
    status, _ = two.request("POST", "/v2/queues/fleeting/messages", {"messages": [{"body": "m"}]})
    assert status == 201
    status, document = one.request("GET", "/v2/queues/fleeting/messages?echo=true")
    assert [m["body"] for m in document["messages"]] == ["m"]
    status, document = two.request("GET", "/v2/queues/fleeting")
    assert document.get("_durable") is False


def test_a_killed_workers_unacked_messages_come_back_after_their_lease(shared):
    """The STOMP subscription's message returns once its lease ends (not before); an HTTP
    claim belongs to its client, not to the worker it went through, so it can be
    acknowledged through another worker."""
    server = shared
    a, b = server.worker_pids()
    with only(server, a):
        consumer = Stomp(server)
        consumer.receipt(
            "SUBSCRIBE", {"id": "1", "destination": "/queue/work", "ack": "client-individual"}
        )
        claimer = HTTP(server)
    with only(server, b):
        other = HTTP(server)
    assert (
        other.request("POST", "/v2/queues/work/messages", {"messages": [{"body": "s"}]})[0] == 201
    )
    assert (
        other.request("POST", "/v2/queues/held/messages", {"messages": [{"body": "h"}]})[0] == 201
    )
    command, _, body = consumer.frame()
    assert command == "MESSAGE" and json.loads(body) == "s"
    status, claimed = claimer.request("POST", "/v2/queues/held/claims", {"ttl": 60})
    assert status == 201 and [m["body"] for m in claimed["messages"]] == ["h"]
    href = claimed["messages"][0]["href"]

    os.kill(a, signal.SIGKILL)
    killed = time.monotonic()
    status, reclaimed = other.request("POST", "/v2/queues/work/claims?wait=10", {"ttl": 60})
    assert status == 201 and [m["body"] for m in reclaimed["messages"]] == ["s"]
    assert time.monotonic() - killed > LEASE / 2  # not handed out twice while leased
    assert other.request("DELETE", href)[0] == 204  # the claim outlived its worker
    status, stats = other.request("GET", "/v2/queues/held/stats")
    assert stats["messages"]["total"] == 0
    wait_for(lambda: len(server.worker_pids()) == 2 and a not in server.worker_pids())
    assert "starting it again" in server.output()
    consumer.close()


def test_sigterm_stops_every_worker_then_the_hub(server):
    """A long poll parked through a worker is answered (empty), not cut off."""
    pids = server.worker_pids()
    poller = HTTP(server)
    assert poller.request("PUT", "/v2/queues/kept")[0] == 201
    answer: dict[str, Any] = {}
    waiter = threading.Thread(
        target=lambda: answer.update(
            reply=poller.request("GET", "/v2/queues/kept/messages?wait=20&echo=true")
        )
    )
    waiter.start()
    time.sleep(0.3)  # parked
    assert server.stop() == 0
    waiter.join(10)
    assert answer["reply"][0] in (200, 204)
    for pid in pids:
        assert not os.path.exists(f"/proc/{pid}")
    assert server.output().count("qgate stopped") == 1


def test_workers_exit_when_the_hub_dies(server):
    pids = server.worker_pids()
    assert server.proc is not None
    server.proc.kill()
    server.proc.wait()
    wait_for(lambda: not any(os.path.exists(f"/proc/{pid}") for pid in pids))
    with socket.socket() as s:  # the port is free again
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        s.bind(("127.0.0.1", server.http))


def test_one_worker_serves_in_its_own_process(tmp_path):
    server = Server(tmp_path, workers=2)
    server.start("--workers", "1")
    try:
        assert server.worker_pids() == []
        assert "with 1 worker" in server.output()
        assert server.request("PUT", "/v2/queues/solo")[0] == 201
    finally:
        assert server.stop() == 0


@pytest.mark.parametrize("value", ["0", "-2", "lots"])
def test_a_bad_workers_option_is_refused_before_anything_starts(value, capsys):
    with pytest.raises(SystemExit) as stopped:
        main(["serve", "--workers", value])
    assert stopped.value.code == 2
    assert "--workers" in capsys.readouterr().err
