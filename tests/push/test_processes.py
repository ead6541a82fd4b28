"""Push delivery through restarts and kills of ``qgate serve``: on SQLite, a clean stop
and a ``kill -9`` in the middle of deliveries lose nothing; on PostgreSQL, two processes
share the subscriptions, never push one message to one subscriber at the same time,
and one takes over when the other is killed."""

from __future__ import annotations

import signal
import time
from pathlib import Path

import pytest

from tests.push.hooks_receiver import Hooked
from tests.support.serve import Server
from tests.support.stores import clean_pg

pytestmark = pytest.mark.integration

PUSH = """
[push]
allow_private_targets = true
lease = 2.0
scan_interval = 0.5
timeout = 2.0
"""
QUICK = {"_retry_policy": {"min_backoff_seconds": 0.1, "max_backoff_seconds": 0.5}}


def subscribe(server: Server, url: str) -> str:
    status, doc = server.request(
        "POST", "/v2/queues/q/subscriptions", {"subscriber": url, "ttl": 3600, "options": QUICK}
    )
    assert status == 201, doc
    return str(doc["subscription_id"])


def publish(server: Server, count: int, start: int = 0) -> set[str]:
    ids: set[str] = set()
    for i in range(start, start + count, 10):
        batch = [{"body": {"n": n}, "ttl": 3600} for n in range(i, min(i + 10, start + count))]
        status, doc = server.request("POST", "/v2/queues/q/messages", {"messages": batch})
        assert status == 201, doc
        ids |= {href.rsplit("/", 1)[1] for href in doc["resources"]}
    return ids


def kill(server: Server) -> None:
    assert server.proc is not None
    server.proc.send_signal(signal.SIGKILL)
    server.proc.wait(timeout=10)
    server.log.close()


def test_nothing_is_lost_through_a_clean_restart_a_kill_and_a_receiver_outage(
    tmp_path: Path,
) -> None:
    hook = Hooked(delay=0.05)  # 100 pushes, 10 at a time: about half a second
    server = Server(tmp_path, extra=PUSH)
    server.start()
    try:
        subscribe(server, hook.url)
        sent = publish(server, 100)
        time.sleep(0.3)
        kill(server)  # deliveries in flight: retried after their lease
        server.start()
        sent |= publish(server, 50, 100)
        hook.wait_for(sent)
        hook.up = False  # the receiver answers 503 for a while
        sent |= publish(server, 50, 150)
        time.sleep(0.5)
        assert server.stop() == 0  # a clean stop gives the leases back
        server.start()
        hook.up = True
        sent |= publish(server, 50, 200)
        hook.wait_for(sent)
        status, doc = server.request("GET", "/v2/queues/q/subscriptions")
        assert status == 200
    finally:
        if server.proc is not None and server.proc.poll() is None:
            server.stop()
        hook.close()


@pytest.mark.postgres
def test_two_processes_on_postgresql_share_the_pushes_and_survive_a_kill(
    tmp_path: Path, pg_database: str
) -> None:
    clean_pg(pg_database)
    hook = Hooked(delay=0.01)
    for name in ("a", "b"):
        (tmp_path / name).mkdir()
    a = Server(tmp_path / "a", extra=PUSH, storage=pg_database)
    b = Server(tmp_path / "b", extra=PUSH, storage=pg_database)
    a.start()
    b.start()
    try:
        first = subscribe(a, hook.url)
        second = subscribe(b, hook.url + "/second")  # each subscription gets every message
        sent = publish(a, 100) | publish(b, 100, 100)
        time.sleep(0.3)
        kill(a)  # its leases end within 2 s; b takes its subscriptions and their deliveries
        sent |= publish(b, 100, 200)
        hook.wait_for(sent, timeout=60)
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline and not (
            hook.ids_of(first) >= sent and hook.ids_of(second) >= sent
        ):
            time.sleep(0.05)
        assert hook.ids_of(first) == sent and hook.ids_of(second) == sent
        with hook.lock:
            assert hook.overlaps == []
    finally:
        for s in (a, b):
            if s.proc is not None and s.proc.poll() is None:
                s.stop()
        hook.close()
