"""``kill -9`` in the middle of commits: every publish answered 201 before the kill is
there when qgate starts again on the same SQLite file."""

from __future__ import annotations

import http.client
import threading
import time
from pathlib import Path

import pytest

from tests.support.serve import Server

pytestmark = pytest.mark.integration


def test_every_publish_acknowledged_before_a_kill_9_survives_it(tmp_path: Path) -> None:
    server = Server(tmp_path)
    server.start()
    assert server.request("PUT", "/v2/queues/crash")[0] == 201
    acknowledged: dict[str, dict[str, int]] = {}  # message id -> body
    lock = threading.Lock()

    def publish(n: int) -> None:
        for i in range(100_000):
            body = {"n": n, "i": i}
            try:
                status, reply = server.request(
                    "POST", "/v2/queues/crash/messages", {"messages": [{"body": body}]}, timeout=5
                )
            except (OSError, http.client.HTTPException):
                return  # killed
            assert status == 201, reply
            with lock:
                acknowledged[reply["resources"][0].rsplit("/", 1)[1]] = body

    publishers = [threading.Thread(target=publish, args=(n,)) for n in range(8)]
    for thread in publishers:
        thread.start()
    try:
        deadline = time.monotonic() + 10
        while len(acknowledged) < 300:
            assert time.monotonic() < deadline, "publishing did not get going"
            time.sleep(0.01)
        assert server.proc is not None
        server.proc.kill()  # SIGKILL, with publishes in flight
        server.proc.wait()
    finally:
        for thread in publishers:
            thread.join(timeout=10)
        server.log.close()

    server.start()  # the same file
    ids = sorted(acknowledged, key=int)
    for start in range(0, len(ids), 20):
        chunk = ids[start : start + 20]
        status, reply = server.request("GET", f"/v2/queues/crash/messages?ids={','.join(chunk)}")
        assert status == 200
        assert {m["id"]: m["body"] for m in reply["messages"]} == {
            i: acknowledged[i] for i in chunk
        }
    assert (
        server.request("POST", "/v2/queues/crash/messages", {"messages": [{"body": 1}]})[0] == 201
    )
    assert server.stop() == 0
