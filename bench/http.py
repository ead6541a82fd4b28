"""HTTP benchmark: qgate's Zaqar API against a bare twisted.web resource, same load generator.

    python -m bench.http [--seconds 5] [--connections 32] [--workers 2]

(a) wrk posting one message to a transient queue vs wrk against a bare resource answering
    204 (same wrk, same machine, same run): qgate should reach at least 50% of it;
(b) publish + claim + delete throughput on SQLite and PostgreSQL (a threaded client);
(c) long-poll wake latency, publish -> the waiting GET's answer, p50 and p99, transient queue.

Needs Debian's ``wrk`` (apt-get install wrk) and the local PostgreSQL for (b).
"""

from __future__ import annotations

import argparse
import http.client
import itertools
import json
import os
import re
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import textwrap
import threading
import time
from collections.abc import Callable
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PG_URL = os.environ.get("QGATE_BENCH_PG_URL", "postgresql://postgres@127.0.0.1:5432/test")
CLIENT_ID = "3381af92-2b9e-11e3-b191-71861300734c"
HEADERS = {"Client-ID": CLIENT_ID, "X-Project-Id": "bench", "Content-Type": "application/json"}

BARE_SITE = """
import sys
from twisted.internet import reactor
from twisted.web import resource, server

class NoContent(resource.Resource):
    isLeaf = True
    def render(self, request):
        request.setResponseCode(204)
        return b""

site = server.Site(NoContent())
site.displayTracebacks = False
reactor.listenTCP(int(sys.argv[1]), site, interface="127.0.0.1")
reactor.run()
"""


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def wait_http(port: int, path: str = "/v2/ping", timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            conn = http.client.HTTPConnection("127.0.0.1", port, timeout=2)
            conn.request("GET", path)
            conn.getresponse().read()
            conn.close()
            return
        except OSError:
            time.sleep(0.1)
    raise RuntimeError(f"nothing answers on port {port}")


class Qgate:
    """``qgate serve`` in a subprocess with its own config (access log off)."""

    def __init__(self, url: str, workdir: Path, workers: int = 1) -> None:
        self.port = free_port()
        config = workdir / f"qgate-{self.port}.toml"
        config.write_text(
            textwrap.dedent(
                f"""
                [server]
                workers = {workers}
                [storage]
                url = "{url}"
                [[listeners]]
                protocol = "http"
                endpoint = "tcp:{self.port}:interface=127.0.0.1"
                """
            )
        )
        self.proc = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "qgate.gateway.cli",
                "--log-level",
                "warn",
                "serve",
                "-c",
                str(config),
            ],
            cwd=workdir,
            env={**os.environ, "PYTHONPATH": str(ROOT)},
        )
        wait_http(self.port)

    def stop(self) -> None:
        self.proc.send_signal(signal.SIGTERM)
        self.proc.wait(30)

    def cpu(self) -> dict[str, float]:
        """CPU seconds so far of the hub (or the one process) and of each worker."""
        out = {"hub" if self.worker_pids() else "qgate": cpu_seconds(self.proc.pid)}
        for i, pid in enumerate(self.worker_pids()):
            out[f"worker {i}"] = cpu_seconds(pid)
        return out

    def worker_pids(self) -> list[int]:
        """The worker processes of a hub (Linux's child list); [] with one worker."""
        pid = self.proc.pid
        children = Path(f"/proc/{pid}/task/{pid}/children").read_text().split()
        return sorted(int(c) for c in children)

    def pinned(self, pid: int) -> http.client.HTTPConnection:
        """A kept-alive connection accepted by worker ``pid``: the other workers are
        stopped (SIGSTOP) while it connects and makes its first round trip."""
        others = [p for p in self.worker_pids() if p != pid]
        for other in others:
            os.kill(other, signal.SIGSTOP)
        try:
            conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=30)
            request(conn, "GET", "/v2/ping")
        finally:
            for other in others:
                os.kill(other, signal.SIGCONT)
        return conn


def cpu_seconds(pid: int) -> float:
    """User + system CPU seconds of a process (all its threads)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def cpu_note(before: dict[str, float], after: dict[str, float], seconds: float) -> str:
    """``hub 45%, worker 0 60%, ...``: CPU of each qgate process over a run."""
    return ", ".join(
        f"{name} {100 * (after[name] - before.get(name, 0.0)) / seconds:.0f}%" for name in after
    )


def request(
    conn: http.client.HTTPConnection, method: str, path: str, body: object = None
) -> tuple[int, bytes]:
    data = None if body is None else json.dumps(body).encode()
    conn.request(method, path, data, HEADERS)
    response = conn.getresponse()
    return response.status, response.read()


def wrk(port: int, path: str, seconds: float, connections: int, post: str | None) -> float:
    script = None
    args = ["wrk", "-t2", f"-c{connections}", f"-d{int(seconds)}s", "--latency"]
    if post is not None:
        script = tempfile.NamedTemporaryFile("w", suffix=".lua", delete=False)  # noqa: SIM115
        headers = "".join(f'wrk.headers["{k}"] = "{v}"\n' for k, v in HEADERS.items())
        script.write(f'wrk.method = "POST"\nwrk.body = {json.dumps(post)}\n{headers}')
        script.close()
        args += ["-s", script.name]
    out = subprocess.run(
        [*args, f"http://127.0.0.1:{port}{path}"], capture_output=True, text=True, check=True
    ).stdout
    if script is not None:
        os.unlink(script.name)
    errors = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
    if errors:
        raise RuntimeError(f"wrk saw {errors.group(1)} error responses:\n{out}")
    match = re.search(r"Requests/sec:\s+([\d.]+)", out)
    assert match, out
    return float(match.group(1))


def run_clients(seconds: float, clients: int, make: Callable[[], Callable[[], int]]) -> float:
    """Items/s of ``clients`` threads, each calling its own ``make()`` until time is up."""
    stop = time.monotonic() + seconds
    counts = [0] * clients
    errors: list[BaseException] = []

    def loop(i: int) -> None:
        try:
            step = make()
            while time.monotonic() < stop:
                counts[i] += step()
        except BaseException as e:  # noqa: BLE001 - reported after the run
            errors.append(e)

    threads = [threading.Thread(target=loop, args=(i,)) for i in range(clients)]
    start = time.monotonic()
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    if errors:
        raise errors[0]
    return sum(counts) / (time.monotonic() - start)


def publish_claim_delete(port: int, seconds: float, clients: int) -> float:
    """Messages/s through POST, claim, DELETE ?claim_id by ``clients`` threads."""
    queue = f"work-{port}"
    setup = http.client.HTTPConnection("127.0.0.1", port)
    request(setup, "PUT", f"/v2/queues/{queue}")
    numbers = itertools.count()

    def make() -> Callable[[], int]:
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
        body = {"n": next(numbers), "pad": "x" * 150}
        batch = {"messages": [{"body": body, "ttl": 600}] * 10}

        def step() -> int:
            status, _ = request(conn, "POST", f"/v2/queues/{queue}/messages", batch)
            assert status == 201, status
            status, raw = request(
                conn, "POST", f"/v2/queues/{queue}/claims?limit=10", {"ttl": 60, "grace": 60}
            )
            if status != 201:
                return 0
            claimed = json.loads(raw)["messages"]
            for message in claimed:
                status, _ = request(conn, "DELETE", message["href"])
                assert status == 204, status
            return len(claimed)

        return step

    return run_clients(seconds, clients, make)


def long_poll_latency(
    port: int,
    samples: int,
    connections: tuple[http.client.HTTPConnection, http.client.HTTPConnection] | None = None,
    queue: str = "poll",
) -> tuple[float, float]:
    """Seconds from sending a publish to the waiting GET's answer: (p50, p99). With
    ``connections`` (control, poller), those (pinned to two workers, say)."""
    if connections is None:
        connections = (
            http.client.HTTPConnection("127.0.0.1", port, timeout=30),
            http.client.HTTPConnection("127.0.0.1", port, timeout=30),
        )
    control, poller = connections
    status, _ = request(control, "PUT", f"/v2/queues/{queue}", {"_flavor": "transient"})
    assert status in (201, 204), status
    latencies = []
    marker = None
    for _ in range(samples):
        answered: dict[str, float] = {}
        query = f"/v2/queues/{queue}/messages?wait=10&echo=true&limit=1"
        if marker:
            query += f"&marker={marker}"

        def poll(query: str = query, answered: dict[str, float] = answered) -> None:
            status, raw = request(poller, "GET", query)
            answered["at"] = time.perf_counter()
            answered["raw"] = raw  # type: ignore[assignment]

        waiter = threading.Thread(target=poll)
        waiter.start()
        time.sleep(0.01)  # the GET is parked
        sent = time.perf_counter()
        request(
            control,
            "POST",
            f"/v2/queues/{queue}/messages",
            {"messages": [{"body": "tick", "ttl": 60}]},
        )
        waiter.join()
        latencies.append(answered["at"] - sent)
        marker = json.loads(answered["raw"])["messages"][-1]["id"]  # type: ignore[arg-type]
    latencies.sort()
    return statistics.median(latencies), latencies[int(len(latencies) * 0.99) - 1]


def fresh_pg_database() -> str:
    import sqlalchemy as sa

    from qgate.storage.sql.store import normalize_url

    admin = sa.create_engine(normalize_url(PG_URL), isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.exec_driver_sql('DROP DATABASE IF EXISTS "qgate_bench_http" WITH (FORCE)')
        conn.exec_driver_sql('CREATE DATABASE "qgate_bench_http"')
    admin.dispose()
    return normalize_url(PG_URL).set(database="qgate_bench_http").render_as_string(False)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=5)
    parser.add_argument("--connections", type=int, default=32)
    parser.add_argument("--clients", type=int, default=8, help="threads for (b)")
    parser.add_argument("--samples", type=int, default=300, help="long polls for (c)")
    parser.add_argument(
        "--workers", type=int, default=1, help="[server] workers of the qgate under test"
    )
    parser.add_argument("--skip-sql", action="store_true", help="skip (b)")
    args = parser.parse_args()
    if shutil.which("wrk") is None:
        sys.exit("bench.http needs wrk: apt-get install wrk")
    work = Path(tempfile.mkdtemp(prefix="qgate-bench-http-"))
    rows: list[tuple[str, str, str]] = []

    def row(name: str, value: str, note: str = "") -> None:
        rows.append((name, value, note))
        print(f"  {name:<58} {value:>14}  {note}", flush=True)

    print(f"\n## qgate HTTP (wrk -t2 -c{args.connections} -d{int(args.seconds)}s)\n")
    bare_port = free_port()
    bare = subprocess.Popen([sys.executable, "-c", BARE_SITE, str(bare_port)])
    qgate = Qgate("memory://", work, args.workers)
    try:
        wait_http(bare_port, "/")
        conn = http.client.HTTPConnection("127.0.0.1", qgate.port)
        request(conn, "PUT", "/v2/queues/hot", {"_flavor": "transient"})
        body = json.dumps({"messages": [{"body": {"event": "click", "n": 1}, "ttl": 60}]})
        bare_rps = wrk(bare_port, "/", args.seconds, args.connections, body)
        before, start = qgate.cpu(), time.monotonic()
        ours = wrk(qgate.port, "/v2/queues/hot/messages", args.seconds, args.connections, body)
        cpu = cpu_note(before, qgate.cpu(), time.monotonic() - start)
        row("(a) bare twisted.web resource answering 204", f"{bare_rps:,.0f} req/s")
        row(
            "(a) qgate POST 1 message, transient queue",
            f"{ours:,.0f} req/s",
            f"{ours / bare_rps:.0%} of bare (target >= 50%); CPU {cpu}",
        )
        p50, p99 = long_poll_latency(qgate.port, args.samples)
        row("(c) long-poll wake latency p50, transient", f"{p50 * 1e3:.2f} ms", "target <= 5 ms")
        row("(c) long-poll wake latency p99, transient", f"{p99 * 1e3:.2f} ms", "target <= 50 ms")
        if args.workers > 1:
            first, second = qgate.worker_pids()[:2]
            pinned = (qgate.pinned(first), qgate.pinned(second))
            p50, p99 = long_poll_latency(qgate.port, args.samples, pinned, "poll-across")
            note = "publish on one worker, poll on another"
            row("(c) long-poll wake latency p50, across workers", f"{p50 * 1e3:.2f} ms", note)
            row("(c) long-poll wake latency p99, across workers", f"{p99 * 1e3:.2f} ms", note)
    finally:
        qgate.stop()
        bare.terminate()
        bare.wait()

    for label, url in (
        ("SQLite", f"sqlite:///{work}/bench.db"),
        ("PostgreSQL", fresh_pg_database()),
    ):
        if args.skip_sql:
            break
        server = Qgate(url, work, args.workers)
        try:
            rate = publish_claim_delete(server.port, args.seconds, args.clients)
            row(
                f"(b) publish 10 + claim 10 + delete each, {label}, {args.clients} clients",
                f"{rate:,.0f} msg/s",
            )
        finally:
            server.stop()


if __name__ == "__main__":
    main()
