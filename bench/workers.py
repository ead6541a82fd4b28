"""Throughput by worker processes: ``qgate serve`` with 1, 2, ... workers under the same wrk.

    python -m bench.workers [--workers 1,2] [--seconds 5] [--connections 16]
                            [--storage sqlite|postgres] [--serve-args "..."]
                            [--workers-flag "--workers {n}"]

For each count N it starts ``qgate serve`` with ``--serve-args`` plus ``--workers-flag``
with N filled in (nothing for N = 1: the single-process server as it is today, the
baseline), then wrk POSTs one message per request (``--connections`` keep-alive
connections) to a durable queue (qgate's default, created on first use) and to a transient
one, and samples every process of the server (the parent and its children, psutil) for
CPU. Printed: req/s per N and as a multiple of N = 1, and CPU per process (100% = one
core). On a 2-core machine shared with wrk, 2 workers can at best approach 2x.

PostgreSQL (``--storage postgres``) gets a fresh temporary database per N.
"""

from __future__ import annotations

import argparse
import http.client
import json
import sys
import uuid
from contextlib import ExitStack

from bench._common import (
    HEADERS,
    CpuMeter,
    QgateServer,
    TemporaryDatabase,
    print_table,
    wrk_post,
)
from bench.http import BODY


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--workers", default="1,2", help="worker counts, comma-separated")
    parser.add_argument("--seconds", type=float, default=5, help="wrk time per scenario")
    parser.add_argument("--connections", type=int, default=16, help="wrk connections")
    parser.add_argument("--threads", type=int, default=2, help="wrk threads")
    parser.add_argument("--storage", choices=("sqlite", "postgres"), default="sqlite")
    parser.add_argument("--serve-args", default="", help="extra arguments of qgate serve")
    parser.add_argument(
        "--workers-flag", default="--workers {n}", help="how qgate serve is told N (N > 1)"
    )
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    counts = [int(n) for n in args.workers.split(",")]
    print(
        f"# throughput by workers: wrk -t{args.threads} -c{args.connections}"
        f" -d{round(args.seconds)}s, one message per POST, {args.storage}",
        flush=True,
    )
    results: dict[int, dict[str, tuple[float, str]]] = {}
    failed = False
    for n in counts:
        serve_args = args.serve_args
        if n > 1:
            serve_args += " " + args.workers_flag.format(n=n)
        with ExitStack() as stack:
            url = "sqlite:///qgate.db"
            if args.storage == "postgres":
                url = stack.enter_context(TemporaryDatabase("qgate_bench_workers")).url
            try:
                server = stack.enter_context(QgateServer(url, serve_args=serve_args))
            except RuntimeError as e:
                print(f"  {n} worker(s): qgate serve {serve_args} failed: {e}", file=sys.stderr)
                failed = True
                continue
            target = server.target()
            assert target.http is not None
            suffix = uuid.uuid4().hex[:6]
            conn = http.client.HTTPConnection(*target.http, timeout=30)
            conn.request(
                "PUT",
                f"/v2/queues/w-transient-{suffix}",
                json.dumps({"_flavor": "transient"}),
                HEADERS,
            )
            conn.getresponse().read()
            conn.close()
            results[n] = {}
            for flavour in ("durable", "transient"):
                meter = CpuMeter(target)
                meter.start()
                try:
                    r = wrk_post(
                        *target.http,
                        f"/v2/queues/w-{flavour}-{suffix}/messages",
                        BODY,
                        seconds=args.seconds,
                        connections=args.connections,
                        threads=args.threads,
                    )
                except RuntimeError as e:
                    print(f"  {n} worker(s), {flavour}: {e}", file=sys.stderr)
                    failed = True
                    continue
                meter.stop()
                results[n][flavour] = (r.rate, meter.summary())
                print(
                    f"  {n} worker(s) {flavour:<9} {r.rate:>9,.0f} req/s  CPU per process"
                    f" {meter.summary()}",
                    flush=True,
                )
    base = results.get(counts[0], {})
    rows = []
    for n, by in results.items():
        row = [str(n)]
        for flavour in ("durable", "transient"):
            rate, cpu = by.get(flavour, (0.0, "-"))
            first = base.get(flavour, (0.0, ""))[0]
            row += [f"{rate:,.0f}", f"{rate / first:.2f}x" if first else "-", cpu]
        rows.append(row)
    print_table(
        f"POST 1 message by workers, {args.connections} connections ({args.storage})",
        [
            "workers",
            "durable req/s",
            f"x {counts[0]}",
            "CPU per process",
            "transient req/s",
            f"x {counts[0]}",
            "CPU per process",
        ],
        rows,
    )
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
