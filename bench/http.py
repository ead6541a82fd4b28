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
``--cycle`` adds publish 10 + claim 10 + DELETE each (python-zaqarclient's pattern, 8
client threads) on the durable queue.
"""

from __future__ import annotations

import argparse
import http.client
import itertools
import json
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Callable
from contextlib import ExitStack
from dataclasses import dataclass

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


def post_load(target: Target, path: str, args: argparse.Namespace) -> Measured:
    assert target.http is not None
    meter = CpuMeter(target)
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
    return Measured(result, meter.summary())


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
    parser.add_argument("--clients", type=int, default=8, help="threads for --cycle")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
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
            server = stack.enter_context(QgateServer(url, serve_args=args.serve_args))
            target = server.target()
            where = f"qgate serve {args.serve_args} on {args.storage} (synchronous FULL)"
        bare = BareSite()
        stack.callback(bare.stop)
        assert target.http is not None
        conn = http.client.HTTPConnection(*target.http, timeout=30)
        print(
            f"# HTTP: wrk -t{args.threads} -c{args.connections} -d{round(args.seconds)}s, one"
            f" message per POST, {args.rounds} round(s); {where}",
            flush=True,
        )
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
                m = post_load(tgt, path, args)
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
        ratio = durable_m.wrk.rate / transient_m.wrk.rate
        print(f"\ndurable/transient: {ratio:.0%} (target >= 75%)")
        if len(runs["durable"]) > 1:
            ratios = [
                d.wrk.rate / t.wrk.rate
                for d, t in zip(runs["durable"], runs["transient"], strict=True)
            ]
            print("  per round: " + ", ".join(f"{r:.0%}" for r in ratios))
        if args.cycle:
            rate = publish_claim_delete(*target.http, args.seconds, args.clients)
            print(
                f"publish 10 + claim 10 + DELETE each, durable, {args.clients} client threads:"
                f" {rate:,.0f} msg/s"
            )

    return 0


if __name__ == "__main__":
    sys.exit(main())
