"""PostgreSQL group commit: 16 single-message publishers against one commit per message.

    python -m bench.pg [--seconds 5] [--connections 16] [--rounds 1]
                       [--serve-args "--workers 2"] [--url http://127.0.0.1:8888]

Everything runs in a fresh temporary database (``qgate_bench_pg_<random>`` next to
``$QGATE_BENCH_PG_URL``, default postgresql://postgres@127.0.0.1:5432/test), dropped at the
end.

- qgate: ``qgate serve`` on that database, wrk with ``--connections`` keep-alive
  connections (16) POSTing one message per request to a durable queue created on first
  use: 16 publishers, each waiting for its own commit, which the writer groups.
- baseline: a plain psycopg2 loop in this process, one connection, ``INSERT`` of a row of
  the same size then ``COMMIT``, for the same time (what one commit per message costs on
  this machine in this run). Also shown: the same loop on 16 threads (16 connections),
  i.e. 16 publishers without a group-committing writer.

The target (issue 10): qgate >= 5x the one-connection baseline. ``--url`` points at an
already-running qgate (its own database; the baseline still uses the temporary one).
"""

from __future__ import annotations

import argparse
import sys
import threading
import time
import uuid
from contextlib import ExitStack

from bench._common import (
    CpuMeter,
    QgateServer,
    TemporaryDatabase,
    external_target,
    print_table,
    wrk_post,
)
from bench.http import BODY

ROW = BODY.encode()


def commit_per_message(dsn: str, seconds: float, clients: int) -> float:
    """INSERT + COMMIT per message on ``clients`` psycopg2 connections: messages/s."""
    import psycopg2

    setup = psycopg2.connect(dsn)
    with setup, setup.cursor() as cur:
        cur.execute(
            "CREATE TABLE IF NOT EXISTS baseline (id bigserial PRIMARY KEY, queue text NOT NULL,"
            " body bytea NOT NULL, created timestamptz NOT NULL DEFAULT now())"
        )
    setup.close()
    counts = [0] * clients
    deadline = time.perf_counter() + seconds

    def loop(i: int) -> None:
        conn = psycopg2.connect(dsn)
        cur = conn.cursor()
        while time.perf_counter() < deadline:
            cur.execute("INSERT INTO baseline (queue, body) VALUES (%s, %s)", ("bench", ROW))
            conn.commit()
            counts[i] += 1
        conn.close()

    start = time.perf_counter()
    threads = [threading.Thread(target=loop, args=(i,)) for i in range(clients)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return sum(counts) / (time.perf_counter() - start)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--seconds", type=float, default=5, help="time per measurement")
    parser.add_argument("--connections", type=int, default=16, help="wrk connections")
    parser.add_argument("--threads", type=int, default=2, help="wrk threads")
    parser.add_argument("--rounds", type=int, default=1, help="repeat; keep the medians")
    parser.add_argument("--serve-args", default="", help="extra arguments of qgate serve")
    parser.add_argument("--url", help="an already-running qgate's HTTP address")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    with ExitStack() as stack:
        db = stack.enter_context(TemporaryDatabase("qgate_bench_pg"))
        if args.url:
            target = external_target(args.url, None)
        else:
            target = stack.enter_context(QgateServer(db.url, serve_args=args.serve_args)).target()
        assert target.http is not None
        print(
            f"# PostgreSQL {db.name}: wrk -t{args.threads} -c{args.connections}"
            f" -d{round(args.seconds)}s one message per POST vs psycopg2 commit per INSERT",
            flush=True,
        )
        base1: list[float] = []
        base16: list[float] = []
        ours: list[float] = []
        cpu = ""
        for n in range(args.rounds):
            base1.append(commit_per_message(db.dsn, args.seconds, 1))
            meter = CpuMeter(target)
            meter.start()
            path = f"/v2/queues/pg-{uuid.uuid4().hex[:6]}/messages"
            result = wrk_post(
                *target.http,
                path,
                BODY,
                seconds=args.seconds,
                connections=args.connections,
                threads=args.threads,
            )
            meter.stop()
            cpu = meter.summary()
            ours.append(result.rate)
            base16.append(commit_per_message(db.dsn, args.seconds, args.connections))
            print(
                f"  round {n + 1}: baseline {base1[-1]:,.0f}/s, qgate {ours[-1]:,.0f}/s"
                f" ({ours[-1] / base1[-1]:.1f}x, server CPU {cpu}), {args.connections}"
                f" psycopg2 threads {base16[-1]:,.0f}/s",
                flush=True,
            )

        def median(values: list[float]) -> float:
            return sorted(values)[len(values) // 2]

        b1, b16, q = median(base1), median(base16), median(ours)
        print_table(
            f"PostgreSQL, {args.connections} single-message publishers",
            ["scenario", "msg/s", "x baseline"],
            [
                [
                    "baseline: psycopg2, INSERT + COMMIT per message, 1 connection",
                    f"{b1:,.0f}",
                    "1.0x",
                ],
                [
                    f"psycopg2, INSERT + COMMIT per message, {args.connections} connections",
                    f"{b16:,.0f}",
                    f"{b16 / b1:.1f}x",
                ],
                [
                    f"qgate HTTP POST 1 message, {args.connections} connections, durable queue",
                    f"{q:,.0f}",
                    f"{q / b1:.1f}x",
                ],
            ],
        )
        print(f"\nqgate / one commit per message: {q / b1:.1f}x (target >= 5x)")
        if args.rounds > 1:
            print(
                "  per round: "
                + ", ".join(f"{o / b:.1f}x" for o, b in zip(ours, base1, strict=True))
            )
    return 0


if __name__ == "__main__":
    sys.exit(main())
