"""Push delivery benchmark: Zaqar subscriptions POSTing to a local webhook that answers
204 at once.

    python -m bench.push [--messages 1000] [--paced-seconds 5] [--rate 20]

qgate runs as a ``qgate serve`` subprocess (SQLite, ``synchronous = "FULL"``, the push
dispatcher in the same process, ``[push] allow_private_targets = true``); the receiver is
a threaded ``http.server`` in this process and the publisher a client thread here too, on
the same machine: compare rows, not absolute numbers.

Rows: the baseline (10 client threads here POSTing straight to the receiver: what it and
a Python client can do on this machine); pushes per second with 1 and with 10
subscriptions on one queue (``--messages`` published as fast as batches of 10 go, each
pushed to every subscription; the rate is pushes received over the time from the first
publish to the last push), with the publish-to-receive latency of those pushes (under
load: they queue); then latency at a light load (``--rate`` single publishes a second for
``--paced-seconds``), p50 and p99.
"""

from __future__ import annotations

import argparse
import http.client
import json
import os
import signal
import socket
import subprocess
import sys
import tempfile
import textwrap
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
HEADERS = {"Client-ID": "3381af92-2b9e-11e3-b191-71861300734c", "X-Project-Id": "bench"}


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class Receiver:
    """Counts pushes and their latency (the body's publish time to now)."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.latencies: list[float] = []
        self.last = 0.0
        outer = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def do_POST(self) -> None:  # noqa: N802
                body = self.rfile.read(int(self.headers.get("Content-Length", "0")))
                now = time.time()
                self.send_response(204)
                self.send_header("Content-Length", "0")
                self.end_headers()
                sent = json.loads(body)["body"]["t"]
                with outer.lock:
                    outer.latencies.append(now - sent)
                    outer.last = now

            def log_message(self, *args: Any) -> None:
                pass

        ThreadingHTTPServer.request_queue_size = 1024  # http.server's backlog is 5
        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def url(self, i: int) -> str:
        return f"http://127.0.0.1:{self.server.server_address[1]}/hook/{i}"

    def reset(self) -> None:
        with self.lock:
            self.latencies = []
            self.last = 0.0

    def count(self) -> int:
        with self.lock:
            return len(self.latencies)


class Qgate:
    def __init__(self, workdir: Path) -> None:
        self.port = free_port()
        config = workdir / "qgate.toml"
        config.write_text(
            textwrap.dedent(
                f"""
                [storage]
                url = "sqlite:///{workdir}/bench.db"
                synchronous = "FULL"
                [[listeners]]
                protocol = "http"
                endpoint = "tcp:{self.port}:interface=127.0.0.1"
                [push]
                allow_private_targets = true
                """
            )
        )
        cmd = [sys.executable, "-m", "qgate.gateway.cli", "--log-level", "warn"]
        self.proc = subprocess.Popen(
            [*cmd, "serve", "-c", str(config)],
            cwd=workdir,
            env={**os.environ, "PYTHONPATH": str(ROOT)},
        )
        self.conn = self._wait()

    def _wait(self) -> http.client.HTTPConnection:
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            try:
                conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=30)
                conn.request("GET", "/v2/ping")
                conn.getresponse().read()
                return conn
            except OSError:
                time.sleep(0.1)
        raise RuntimeError("qgate did not start")

    def call(self, method: str, path: str, body: object) -> Any:
        data = None if body is None else json.dumps(body).encode()
        try:
            self.conn.request(method, path, data, HEADERS)
            response = self.conn.getresponse()
        except (http.client.RemoteDisconnected, ConnectionError):  # idle connection closed
            self.conn = self._wait()
            self.conn.request(method, path, data, HEADERS)
            response = self.conn.getresponse()
        raw = response.read()
        if response.status >= 300:
            raise RuntimeError(f"{method} {path}: {response.status} {raw[:200]!r}")
        return json.loads(raw) if raw else None

    def stop(self) -> None:
        self.proc.send_signal(signal.SIGTERM)
        self.proc.wait(30)


def percentile(values: list[float], p: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(p / 100 * len(ordered)))]


def wait_for(receiver: Receiver, expected: int, timeout: float = 300) -> None:
    deadline = time.monotonic() + timeout
    while receiver.count() < expected:
        if time.monotonic() > deadline:
            raise RuntimeError(f"only {receiver.count()} of {expected} pushes arrived")
        time.sleep(0.01)


def burst(qgate: Qgate, receiver: Receiver, subs: int, messages: int) -> tuple[float, list[float]]:
    queue = f"burst-{subs}"
    qgate.call("PUT", f"/v2/queues/{queue}", {})
    for i in range(subs):
        qgate.call(
            "POST",
            f"/v2/queues/{queue}/subscriptions",
            {"subscriber": receiver.url(i), "ttl": 3600},
        )
    time.sleep(3)  # the dispatcher's lease round picks the subscriptions up
    receiver.reset()
    start = time.time()
    for _ in range(0, messages, 10):
        batch = [{"body": {"t": time.time()}, "ttl": 3600} for _ in range(10)]
        qgate.call("POST", f"/v2/queues/{queue}/messages", {"messages": batch})
    try:
        wait_for(receiver, messages * subs, timeout=180)
    except RuntimeError:
        listing = qgate.call("GET", f"/v2/queues/{queue}/subscriptions?limit=20", None)
        for sub in listing["subscriptions"]:
            shown = qgate.call("GET", f"/v2/queues/{queue}/subscriptions/{sub['id']}", None)
            print(sub["subscriber"], shown.get("stats"), file=sys.stderr)
        raise
    with receiver.lock:
        rate, latencies = messages * subs / (receiver.last - start), list(receiver.latencies)
    listing = qgate.call("GET", f"/v2/queues/{queue}/subscriptions?limit=20", None)
    errors = {}
    for sub in listing["subscriptions"]:
        stats = qgate.call("GET", f"/v2/queues/{queue}/subscriptions/{sub['id']}", None)["stats"]
        if stats["failed_attempts"]:
            errors[stats["last_error"]] = (
                errors.get(stats["last_error"], 0) + stats["failed_attempts"]
            )
    if errors:
        print(f"  {subs} subscription(s): failed attempts {errors}", file=sys.stderr)
    return rate, latencies


def direct(receiver: Receiver, requests: int, threads: int = 10) -> float:
    """The baseline: ``threads`` clients POSTing straight to the receiver (keep-alive)."""
    receiver.reset()
    port = receiver.server.server_address[1]

    def client(count: int) -> None:
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
        for _ in range(count):
            body = json.dumps({"body": {"t": time.time()}}).encode()
            conn.request("POST", "/hook/direct", body, {"Content-Type": "application/json"})
            conn.getresponse().read()
        conn.close()

    start = time.time()
    workers = [threading.Thread(target=client, args=(requests // threads,)) for _ in range(threads)]
    for w in workers:
        w.start()
    for w in workers:
        w.join()
    return (requests // threads) * threads / (time.time() - start)


def paced(qgate: Qgate, receiver: Receiver, seconds: float, rate: float) -> list[float]:
    queue = "paced"
    qgate.call("PUT", f"/v2/queues/{queue}", {})
    qgate.call("POST", f"/v2/queues/{queue}/subscriptions", {"subscriber": receiver.url(99)})
    time.sleep(3)
    receiver.reset()
    count = int(seconds * rate)
    for _ in range(count):
        qgate.call(
            "POST", f"/v2/queues/{queue}/messages", {"messages": [{"body": {"t": time.time()}}]}
        )
        time.sleep(1 / rate)
    wait_for(receiver, count)
    with receiver.lock:
        return list(receiver.latencies)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--messages", type=int, default=1000)
    parser.add_argument("--paced-seconds", type=float, default=5.0)
    parser.add_argument("--rate", type=float, default=20.0)
    args = parser.parse_args(argv)
    receiver = Receiver()
    with tempfile.TemporaryDirectory(prefix="qgate-bench-push-") as work:
        qgate = Qgate(Path(work))
        try:
            rows = []
            baseline = direct(receiver, args.messages)
            for subs in (1, 10):
                rate, lat = burst(qgate, receiver, subs, args.messages)
                rows.append((f"{args.messages} messages -> {subs} subscription(s)", rate, lat))
            light = paced(qgate, receiver, args.paced_seconds, args.rate)
        finally:
            qgate.stop()
    print("\n| scenario | pushes/s | latency p50 | latency p99 |\n|---|---|---|---|")
    print(f"| baseline: 10 client threads POSTing to the receiver | {baseline:,.0f} | - | - |")
    for name, rate, lat in rows:
        print(
            f"| {name} (under load) | {rate:,.0f} | {percentile(lat, 50) * 1000:,.0f} ms "
            f"| {percentile(lat, 99) * 1000:,.0f} ms |"
        )
    print(
        f"| {args.rate:g} publishes/s -> 1 subscription (light load) | - "
        f"| {percentile(light, 50) * 1000:,.1f} ms | {percentile(light, 99) * 1000:,.1f} ms |"
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
