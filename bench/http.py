"""HTTP benchmark: one-message POSTs to qgate's default (durable) queue and to a transient
one, beside a bare twisted.web resource, all under the same wrk in one run.

    python -m bench.http [--seconds 5] [--connections 16] [--rounds 1]
                         [--storage sqlite|postgres] [--serve-args "--workers 2"]
                         [--url http://127.0.0.1:8888] [--cycle]

The load is wrk (Debian's ``wrk``, C, epoll): ``--connections`` keep-alive connections
(16 by default) on 2 wrk threads, each POSTing one message per request; a Lua script sets
the method, body and headers. That is the issue's "16 clients" at a fraction of the CPU 16
Python processes would take from the server on a 2-core machine.

- bare: a trivial twisted.web resource in its own process answering 201 with the JSON
  qgate answers (``{"resources": [...]}``, a fresh id each time, a Location header);
- durable: qgate's default configuration, the queue created by the first POST (SQLite with
  ``synchronous = "FULL"``, or a fresh PostgreSQL database with ``--storage postgres``);
- transient: the same POST to a queue created with ``{"_flavor": "transient"}`` (memory).

Printed: req/s, wrk's latency p50/p99, the server's CPU, each as a share of bare, and the
durable/transient ratio (target >= 75%). ``--rounds N`` repeats the three in turn and
keeps each one's median. ``--url`` measures an already-running qgate instead of starting
one (e.g. ``qgate serve --workers 2``); ``--serve-args`` is passed to the one it starts.
``--profile DIR`` has py-spy sample the server through the durable and transient runs
(``DIR/http-<queue>-<round>.txt``, collapsed stacks) and prints the heaviest functions.
``--cycle`` adds publish 10 + claim 10 + DELETE each (python-zaqarclient's pattern, 8
client threads) on the durable queue.
"""

from __future__ import annotations

import argparse
import http.client
import itertools
import json
import shutil
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from collections.abc import Callable
from contextlib import ExitStack
from dataclasses import dataclass
from pathlib import Path

from bench._common import (
    HEADERS,
    CpuMeter,
    QgateServer,
    Target,
    TemporaryDatabase,
    WrkResult,
    external_target,
    free_port,
    port_open,
    print_table,
    wrk_post,
)
from bench._profile import spy_on, summarize_profile

BARE_SITE = """
import json, sys, uuid
from twisted.internet import reactor
from twisted.web import resource, server

class Created(resource.Resource):
    isLeaf = True
    def render_POST(self, request):
        request.content.read()
        path = request.path.decode()
        mid = uuid.uuid4().hex[:24]
        request.setResponseCode(201)
        request.setHeader(b"Content-Type", b"application/json; charset=utf-8")
        request.setHeader(b"Location", f"{path}?ids={mid}".encode())
        return json.dumps({"resources": [f"{path}/{mid}"]}).encode()

site = server.Site(Created())
site.displayTracebacks = False
reactor.listenTCP(int(sys.argv[1]), site, interface="127.0.0.1", backlog=1024)
reactor.run()
"""

BODY = json.dumps({"messages": [{"body": {"event": "click", "n": 1, "pad": "x" * 150}}]})


def request(
    conn: http.client.HTTPConnection, method: str, path: str, body: object = None
) -> tuple[int, bytes]:
    data = None if body is None else json.dumps(body).encode()
    conn.request(method, path, data, HEADERS)
    response = conn.getresponse()
    return response.status, response.read()


class BareSite:
    """The bare twisted.web resource in its own process."""

    def __init__(self) -> None:
        self.port = free_port()
        self.proc = subprocess.Popen([sys.executable, "-c", BARE_SITE, str(self.port)])
        deadline = time.monotonic() + 30
        while not port_open("127.0.0.1", self.port):
            if time.monotonic() > deadline or self.proc.poll() is not None:
                raise RuntimeError("the bare twisted.web site did not start")
            time.sleep(0.05)

    def target(self) -> Target:
        return Target(http=("127.0.0.1", self.port), pids=[self.proc.pid], label="bare")

    def stop(self) -> None:
        self.proc.terminate()
        self.proc.wait()


@dataclass
class Measured:
    wrk: WrkResult
    cpu: str


def post_load(
    target: Target, path: str, args: argparse.Namespace, profile: Path | None = None
) -> Measured:
    """wrk's POSTs to ``path`` and the server's CPU; py-spy samples the server meanwhile
    into ``profile`` (collapsed stacks) when given."""
    assert target.http is not None
    meter = CpuMeter(target)
    spy = spy_on(target.pids[0], args.seconds, profile) if profile and target.pids else None
    meter.start()
    result = wrk_post(
        *target.http,
        path,
        BODY,
        seconds=args.seconds,
        connections=args.connections,
        threads=args.threads,
    )
    meter.stop()
    if spy is not None:
        spy.wait(timeout=60)
    return Measured(result, meter.summary())


def raw_sqlite_commits(path: Path, seconds: float) -> float:
    """Commits/s of a plain sqlite3 loop, one INSERT + COMMIT each, WAL and
    ``synchronous = FULL`` as qgate's default: what one fsync costs in this run."""
    import sqlite3

    db = sqlite3.connect(path, isolation_level=None)
    db.execute("PRAGMA journal_mode = WAL")
    db.execute("PRAGMA synchronous = FULL")
    db.execute("CREATE TABLE IF NOT EXISTS raw (id INTEGER PRIMARY KEY, body BLOB)")
    row = BODY.encode()
    n = 0
    start = time.perf_counter()
    deadline = start + seconds
    while time.perf_counter() < deadline:
        db.execute("BEGIN")
        db.execute("INSERT INTO raw (body) VALUES (?)", (row,))
        db.execute("COMMIT")
        n += 1
    elapsed = time.perf_counter() - start
    db.close()
    return n / elapsed


class WriterStats:
    """The SQL writer counters bench._serve_stats appends to ``path`` (JSON lines:
    time, batches, operations, statements, busy seconds)."""

    def __init__(self, path: Path) -> None:
        self.path = path

    def last(self) -> list[float]:
        try:
            lines = self.path.read_text().splitlines()
        except FileNotFoundError:
            return [time.time(), 0, 0, 0, 0]
        return [float(v) for v in json.loads(lines[-1])] if lines else [time.time(), 0, 0, 0, 0]

    @staticmethod
    def describe(before: list[float], after: list[float]) -> str:
        seconds, batches, ops, _, busy = (a - b for a, b in zip(after, before, strict=True))
        if not batches or seconds <= 0:
            return "writer: no batches"
        return (
            f"writer: {batches / seconds:,.0f} batches/s, {ops / batches:.1f} messages per"
            f" batch, busy {busy / seconds:.0%}, {busy / batches * 1e3:.2f} ms per batch"
        )


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


def publish_claim_delete(host: str, port: int, seconds: float, clients: int) -> float:
    """Messages/s through POST 10, claim 10, DELETE each ?claim_id, by ``clients`` threads."""
    queue = f"work-{uuid.uuid4().hex[:6]}"
    numbers = itertools.count()

    def make() -> Callable[[], int]:
        conn = http.client.HTTPConnection(host, port, timeout=30)
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


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--seconds", type=float, default=5, help="wrk time per scenario")
    parser.add_argument("--connections", type=int, default=16, help="wrk connections")
    parser.add_argument("--threads", type=int, default=2, help="wrk threads")
    parser.add_argument("--rounds", type=int, default=1, help="repeat; keep the medians")
    parser.add_argument("--storage", choices=("sqlite", "postgres"), default="sqlite")
    parser.add_argument("--serve-args", default="", help="extra arguments of qgate serve")
    parser.add_argument("--url", help="an already-running qgate's HTTP address")
    parser.add_argument("--cycle", action="store_true", help="add publish+claim+delete")
    parser.add_argument("--profile", type=Path, help="py-spy profile of the durable run here")
    parser.add_argument(
        "--writer-stats",
        action="store_true",
        help="serve through bench._serve_stats and print the SQL writer's batches",
    )
    parser.add_argument("--clients", type=int, default=8, help="threads for --cycle")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if args.profile:
        args.profile.mkdir(parents=True, exist_ok=True)
    with ExitStack() as stack:
        if args.url:
            target = external_target(args.url, None)
            where = f"{args.url} (given; pids {target.pids or 'unknown'})"
        else:
            if args.storage == "postgres":
                db = stack.enter_context(TemporaryDatabase("qgate_bench_http"))
                url = db.url
            else:
                url = "sqlite:///qgate.db"
            workdir = Path(tempfile.mkdtemp(prefix="qgate-bench-http-"))
            stack.callback(shutil.rmtree, workdir, True)
            stats = WriterStats(workdir / "writer.jsonl") if args.writer_stats else None
            server = stack.enter_context(
                QgateServer(
                    url,
                    serve_args=args.serve_args,
                    workdir=workdir,
                    module="bench._serve_stats" if stats else "qgate.gateway.cli",
                    env={"QGATE_BENCH_WRITER_STATS": str(stats.path)} if stats else None,
                )
            )
            target = server.target()
            where = f"qgate serve {args.serve_args} on {args.storage}" + (
                " (synchronous FULL)" if args.storage == "sqlite" else ""
            )
        bare = BareSite()
        stack.callback(bare.stop)
        assert target.http is not None
        conn = http.client.HTTPConnection(*target.http, timeout=30)
        print(
            f"# HTTP: wrk -t{args.threads} -c{args.connections} -d{round(args.seconds)}s, one"
            f" message per POST, {args.rounds} round(s); {where}",
            flush=True,
        )
        if args.url:
            stats = None
        raw_db = workdir / "raw.db" if not args.url and args.storage == "sqlite" else None
        raws: list[float] = []
        runs: dict[str, list[Measured]] = {"bare": [], "durable": [], "transient": []}
        for n in range(args.rounds):
            suffix = f"{uuid.uuid4().hex[:6]}-{n}"
            transient = f"hot-transient-{suffix}"
            status, raw = request(conn, "PUT", f"/v2/queues/{transient}", {"_flavor": "transient"})
            assert status in (201, 204), (status, raw)
            for key, tgt, path in (
                ("bare", bare.target(), "/v2/queues/bare/messages"),
                ("durable", target, f"/v2/queues/hot-durable-{suffix}/messages"),
                ("transient", target, f"/v2/queues/{transient}/messages"),
            ):
                if key == "durable" and raw_db is not None:
                    raws.append(raw_sqlite_commits(raw_db, min(args.seconds, 3)))
                    print(
                        f"  round {n + 1} raw sqlite3 INSERT + COMMIT (FULL): {raws[-1]:,.0f}"
                        f" commits/s, {1e3 / raws[-1]:.2f} ms each",
                        flush=True,
                    )
                spy = args.profile / f"http-{key}-{n + 1}.txt" if args.profile else None
                before = stats.last() if stats else []
                m = post_load(tgt, path, args, spy if key != "bare" else None)
                if stats and key == "durable":
                    time.sleep(2 * 0.25)  # the next line of counters
                    print("  " + WriterStats.describe(before, stats.last()), flush=True)
                runs[key].append(m)
                print(
                    f"  round {n + 1} {key:<10} {m.wrk.rate:>9,.0f} req/s  p50"
                    f" {m.wrk.p50_ms:6.2f} ms  p99 {m.wrk.p99_ms:6.2f} ms  server CPU {m.cpu}",
                    flush=True,
                )

        def median(key: str) -> Measured:
            ordered = sorted(runs[key], key=lambda m: m.wrk.rate)
            return ordered[len(ordered) // 2]

        bare_m, durable_m, transient_m = median("bare"), median("durable"), median("transient")
        rows = []
        for title, m in (
            ("bare twisted.web resource, 201 + the same JSON", bare_m),
            ("qgate default: durable queue created on first use", durable_m),
            ("qgate transient queue", transient_m),
        ):
            rows.append(
                [
                    title,
                    f"{m.wrk.rate:,.0f}",
                    f"{m.wrk.p50_ms:.2f}",
                    f"{m.wrk.p99_ms:.2f}",
                    f"{m.wrk.rate / bare_m.wrk.rate:.0%}",
                    m.cpu,
                ]
            )
        print_table(
            f"POST 1 message, {args.connections} connections ({args.storage})",
            ["scenario", "req/s", "p50 ms", "p99 ms", "of bare", "server CPU"],
            rows,
        )
        if raws:
            raw = sorted(raws)[len(raws) // 2]
            rows.append(
                [
                    "raw sqlite3 INSERT + COMMIT (WAL, FULL), 1 loop: commits/s",
                    f"{raw:,.0f}",
                    f"{1e3 / raw:.2f}",
                    "",
                    "",
                    "",
                ]
            )
        ratio = durable_m.wrk.rate / transient_m.wrk.rate
        print(f"\ndurable/transient: {ratio:.0%} (target >= 75%)")
        if len(runs["durable"]) > 1:
            ratios = [
                d.wrk.rate / t.wrk.rate
                for d, t in zip(runs["durable"], runs["transient"], strict=True)
            ]
            print("  per round: " + ", ".join(f"{r:.0%}" for r in ratios))
        if args.profile:
            for n in range(args.rounds):
                for key in ("durable", "transient"):
                    summarize_profile(args.profile / f"http-{key}-{n + 1}.txt")
        if args.cycle:
            rate = publish_claim_delete(*target.http, args.seconds, args.clients)
            print(
                f"publish 10 + claim 10 + DELETE each, durable, {args.clients} client threads:"
                f" {rate:,.0f} msg/s"
            )

    return 0


if __name__ == "__main__":
    sys.exit(main())
