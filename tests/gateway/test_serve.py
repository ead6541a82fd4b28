"""``qgate serve`` as a user runs it: a subprocess on free ports, driven by real clients."""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Iterator
from typing import Any

import pytest

from qgate.core.tenant_watch import WATCH_INTERVAL
from qgate.gateway.config import QueueDefaults
from tests.support.serve import Server, run_qgate

pytestmark = pytest.mark.integration


@pytest.fixture
def server(tmp_path) -> Iterator[Server]:
    s = Server(tmp_path)
    s.start()
    yield s
    if s.proc is not None and s.proc.poll() is None:
        s.proc.kill()
        s.proc.wait()


def test_python_zaqarclient_works_unmodified(server):
    from zaqarclient.queues import client

    zaqar = client.Client(
        f"http://127.0.0.1:{server.http}",
        version=2,
        conf={"auth_opts": {"backend": "noauth", "options": {"os_project_id": "proj-1"}}},
    )
    queue = zaqar.queue("orders")  # v2 queues are lazy: posting creates it
    queue.post([{"body": {"n": i}, "ttl": 300} for i in range(3)])
    queues, _count = zaqar.queues()  # the v2 client answers (iterator, count)
    assert "orders" in [q.name for q in queues]
    listed = list(queue.messages(echo=True))
    assert [m.body for m in listed] == [{"n": 0}, {"n": 1}, {"n": 2}]
    claim = queue.claim(ttl=60, grace=60, limit=2)
    claimed = list(claim)
    assert [m.body for m in claimed] == [{"n": 0}, {"n": 1}]
    for message in claimed:
        message.delete()
    stats = queue.stats
    assert stats["messages"]["total"] == 1
    assert stats["messages"]["claimed"] == 0
    queue.delete()
    assert "orders" not in [q.name for q in zaqar.queues()[0]]


def test_long_poll_over_a_real_socket_delivers_and_times_out(server):
    """Raw requests against a real server (that a parked poll is woken, rather than
    answered because the publish came first, is proven in-process: tests/http and
    tests/gateway/test_app.py watch the parked waiter)."""
    server.request("PUT", "/v2/queues/poll")
    results: dict[str, object] = {}

    def poll() -> None:
        start = time.monotonic()
        results["reply"] = server.request(
            "GET", "/v2/queues/poll/messages?wait=20&echo=true", timeout=30
        )
        results["took"] = time.monotonic() - start

    waiter = threading.Thread(target=poll)
    waiter.start()
    time.sleep(0.5)
    status, _ = server.request(
        "POST", "/v2/queues/poll/messages", {"messages": [{"body": "wake up", "ttl": 60}]}
    )
    assert status == 201
    waiter.join(15)
    status, body = results["reply"]  # type: ignore[misc]
    assert status == 200 and [m["body"] for m in body["messages"]] == ["wake up"]
    assert results["took"] < 10
    start = time.monotonic()
    status, body = server.request(
        "GET", f"/v2/queues/poll/messages?wait=1&marker={body['messages'][0]['id']}&echo=true"
    )
    # A wait that finds nothing may end up to [queues] wait_jitter of it early.
    assert time.monotonic() - start >= 1.0 - QueueDefaults().wait_jitter - 0.05
    assert status in (200, 204) and not body.get("messages")


def test_sigterm_exits_cleanly_and_durable_messages_survive_a_restart(tmp_path):
    server = Server(tmp_path)
    server.start()
    status, _ = server.request(
        "POST", "/v2/queues/keep/messages", {"messages": [{"body": {"durable": True}, "ttl": 600}]}
    )
    assert status == 201
    assert server.stop() == 0
    assert "qgate stopped" in server.output()
    server.start()
    try:
        status, body = server.request("GET", "/v2/queues/keep/messages?echo=true")
        assert [m["body"] for m in body["messages"]] == [{"durable": True}]
    finally:
        assert server.stop() == 0


def test_api_keys_from_the_cli_guard_the_http_api(tmp_path):
    server = Server(tmp_path, auth="keys")
    created = server.cli("tenant", "create", "acme")
    assert created.returncode == 0, created.stderr
    key = server.cli("key", "create", "acme")
    assert key.returncode == 0, key.stderr
    token = key.stdout.strip()
    missing = server.cli("key", "create", "nobody")
    assert missing.returncode != 0 and "does not exist" in missing.stderr
    scoped = server.cli("key", "create", "acme", "--queues", "jobs.*", "--ops", "publish")
    assert scoped.returncode == 0, scoped.stderr
    bad_op = server.cli("key", "create", "acme", "--ops", "delete")
    assert bad_op.returncode != 0 and "unknown operation" in bad_op.stderr
    server.start()
    try:
        producer = {"X-Auth-Token": scoped.stdout.strip(), "X-Project-Id": "acme"}
        status, body = server.request("PUT", "/v2/queues/logs", headers=producer)
        assert status == 403 and "queue 'logs'" in body["description"]
        status, body = server.request("GET", "/v2/queues", headers={"X-Auth-Token": "nope"})
        assert status == 401 and body["title"]
        status, _ = server.request(
            "PUT", "/v2/queues/secure", headers={"X-Auth-Token": token, "X-Project-Id": "acme"}
        )
        assert status == 201
        status, body = server.request(
            "GET", "/v2/queues", headers={"X-Auth-Token": token, "X-Project-Id": "acme"}
        )
        assert [q["name"] for q in body["queues"]] == ["secure"]
        # Another process (the CLI) sets a quota and revokes the key: the server sees
        # both within about a second.
        auth = {"X-Auth-Token": token, "X-Project-Id": "acme"}
        quota = server.cli("tenant", "set-quota", "acme", "max_queues", "1")
        assert quota.returncode == 0, quota.stderr
        names = iter(range(1000))
        put = lambda: server.request("PUT", f"/v2/queues/q{next(names)}", headers=auth)  # noqa: E731
        # Every worker reads the change counter for itself, every 0.5 s. A refusal says one
        # has seen it; refusals in a row do not say the others have (the kernel may hand
        # every new connection to the same worker), but three more intervals do.
        assert _within(3.0, lambda: put()[0], 403)
        time.sleep(3 * WATCH_INTERVAL)
        answers = [put() for _ in range(8)]
        assert [status for status, _ in answers] == [403] * 8
        assert all("max_queues" in body["description"] for _, body in answers)
        revoked = server.cli("key", "revoke", token)
        assert revoked.returncode == 0, revoked.stderr
        assert _within(2.0, lambda: server.request("GET", "/v2/queues", headers=auth)[0], 401)
    finally:
        assert server.stop() == 0


def _within(seconds: float, status: Any, expected: Any = 403) -> bool:
    """Whether ``status()`` answers ``expected`` within ``seconds`` (asked every 50 ms)."""
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if status() == expected:
            return True
        time.sleep(0.05)
    return False


def test_a_bad_config_stops_start_up_naming_the_key(tmp_path):
    config = tmp_path / "bad.toml"
    config.write_text('[storage]\nurl = "sqlite:///x.db"\nflavour = "vanilla"\n')
    result = run_qgate(tmp_path, "serve", "-c", str(config))
    assert result.returncode == 2
    assert "storage.flavour: unknown key" in result.stderr


def test_a_port_in_use_stops_start_up(tmp_path):
    server = Server(tmp_path)
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", server.http))
        taken.listen()
        result = server.cli("serve")
    assert result.returncode == 1
    assert "cannot listen" in result.stderr


def test_a_start_that_fails_after_storage_opened_still_ends_the_process(tmp_path):
    """A certificate file that exists but is no certificate is found while the gateway is
    assembled, after storage started its threads: qgate says so and exits 1 (it used to
    hang there, deaf to SIGTERM, its reactor already stopped)."""
    (tmp_path / "cert.pem").write_text("not a certificate\n")
    (tmp_path / "key.pem").write_text("not a key\n")
    extra = (
        f'[listeners.tls]\ncertificate = "{tmp_path / "cert.pem"}"\n'
        f'key = "{tmp_path / "key.pem"}"\n'
    )
    config = tmp_path / "q.toml"
    config.write_text(
        f'[server]\nworkers = 1\n[storage]\nurl = "sqlite:///{tmp_path}/q.db"\n'
        f'[[listeners]]\nprotocol = "http"\nendpoint = "tcp:0:interface=127.0.0.1"\n{extra}'
    )
    result = run_qgate(tmp_path, "serve", "-c", str(config))
    assert result.returncode == 1
    assert "certificate and key do not load" in result.stderr
