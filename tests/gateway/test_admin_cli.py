"""``qgate serve`` with an admin listener, as an operator drives it: an admin key from the
CLI, ``qgate queues ... --json`` and ``qgate status --json`` against the running
process, SIGHUP, /metrics, and JSON logs that hold no key and no body."""

from __future__ import annotations

import http.client
import json
import os
import signal
import time
from collections.abc import Callable
from typing import Any

import pytest

from tests.support.serve import Server, free_port

pytestmark = pytest.mark.integration

SECRET_BODY = "the-body-must-not-be-logged-7f3a"


def eventually(fetch: Callable[[], Any], timeout: float = 10.0) -> Any:
    """What ``fetch`` returns once it is truthy (a subprocess's state, polled)."""
    deadline = time.monotonic() + timeout
    while True:
        found = fetch()
        if found or time.monotonic() > deadline:
            return found
        time.sleep(0.05)


class AdminServer(Server):
    def __init__(self, workdir, **kw) -> None:
        self.admin = free_port()
        super().__init__(
            workdir,
            extra=f"""
[[listeners]]
protocol = "admin"
endpoint = "tcp:{self.admin}:interface=127.0.0.1"
[admin]
sample_interval = 0.2
[log]
format = "json"
""",
            **kw,
        )

    def admin_cli(self, *args: str, key: str = "") -> dict:
        result = self.cli(*args, "--json", *(["--key", key] if key else []))
        assert result.returncode == 0, result.stderr
        return json.loads(result.stdout)

    def metrics(self, key: str) -> str:
        conn = http.client.HTTPConnection("127.0.0.1", self.admin, timeout=10)
        conn.request("GET", "/metrics", headers={"Authorization": f"Bearer {key}"})
        response = conn.getresponse()
        assert response.status == 200
        return response.read().decode()


def test_an_operator_drives_a_running_qgate_through_the_admin_cli(tmp_path):
    server = AdminServer(tmp_path, auth="keys", tenant="acme")
    assert server.cli("tenant", "create", "acme").returncode == 0
    token = server.cli("key", "create", "acme").stdout.strip()
    made = server.cli("admin-key", "create")
    assert made.returncode == 0, made.stderr
    admin_key = made.stdout.strip()
    server.start()
    try:
        auth = {"X-Auth-Token": token}
        options = {"_max_claim_count": 1, "_dead_letter_queue": "jobs-dlq"}
        assert server.request("PUT", "/v2/queues/jobs", options, headers=auth)[0] == 201
        messages = [{"body": {"secret": SECRET_BODY, "n": i}, "ttl": 300} for i in range(3)]
        status, _ = server.request(
            "POST", "/v2/queues/jobs/messages", {"messages": messages}, headers=auth
        )
        assert status == 201

        # The CLI without a key is refused; with the admin key it sees the queue.
        refused = server.cli("queues", "list", "--json")
        assert refused.returncode == 1 and "401" in refused.stderr
        listing = eventually(lambda: server.admin_cli("queues", "list", key=admin_key)["queues"])
        assert [(q["tenant"], q["name"], q["available"]) for q in listing] == [("acme", "jobs", 3)]
        peek = server.admin_cli("queues", "peek", "acme", "jobs", key=admin_key)["messages"]
        assert [m["state"] for m in peek] == ["available"] * 3

        assert server.request("PUT", "/v2/queues/jobs-dlq", headers=auth)[0] == 201
        status = server.admin_cli("status", key=admin_key)
        assert status["storage"]["answers"] is True
        assert [item["protocol"] for item in status["listeners"]] == ["http", "stomp", "admin"]
        assert all(item["up"] for item in status["listeners"])
        moved = server.admin_cli(
            "queues", "move", "acme", "jobs", "--to", "jobs-dlq", key=admin_key
        )
        assert moved == {"moved": 3, "to": "jobs-dlq"}
        # A dead-letter queue goes back to the one queue dead-lettering into it.
        back = server.admin_cli("queues", "move", "acme", "jobs-dlq", key=admin_key)
        assert back == {"moved": 3, "to": "jobs"}

        # With workers, each sends its counts to the hub's /metrics once a second.
        published = 'qgate_messages_published_total{protocol="http"} 3.0'

        def scraped() -> str:
            text = server.metrics(admin_key)
            return text if published in text else ""

        text = eventually(scraped) or server.metrics(admin_key)
        assert published in text
        assert 'qgate_listeners_up{protocol="admin"} 1.0' in text

        assert server.proc is not None
        os.kill(server.proc.pid, signal.SIGHUP)  # no TLS listener: a reload of nothing
        assert server.admin_cli("reload", key=admin_key) == {"listeners": []}
    finally:
        assert server.stop() == 0
    lines = [line for line in server.output().splitlines() if line.strip()]
    records = [json.loads(line) for line in lines]  # every line is one JSON object
    assert any(r["namespace"] == "qgate.access.http" for r in records)
    assert any("reloading TLS certificates" in r["message"] for r in records)
    log = server.output()
    assert SECRET_BODY not in log
    assert token not in log and admin_key not in log
    assert token.split("_", 2)[2] not in log  # the secret (it may hold "_" itself)


def test_the_admin_cli_works_on_the_database_without_a_running_qgate(tmp_path):
    server = AdminServer(tmp_path, tenant="acme")
    server.start()
    try:
        messages = [{"body": i, "ttl": 300} for i in range(2)]
        assert server.request("POST", "/v2/queues/jobs/messages", {"messages": messages})[0] == 201
    finally:
        assert server.stop() == 0
    result = server.cli("queues", "peek", "acme", "jobs", "--db", "--json")
    assert result.returncode == 0, result.stderr
    peek = json.loads(result.stdout)["messages"]
    assert [(m["id"], m["state"], m["body"]["text"]) for m in peek] == [
        ("1", "available", "0"),
        ("2", "available", "1"),
    ]
    missing = server.cli("queues", "stats", "acme", "nowhere", "--db")
    assert missing.returncode == 1 and "404" in missing.stderr
