"""Queue-core benchmark: the service over memory, SQLite and PostgreSQL, against raw SQL.

    python -m bench.core [--seconds 2] [--backends memory,sqlite,postgres] [--big 1000000]

Prints one table per backend. Every SQL number sits beside a raw-SQL baseline measured in
the same run on the same database (these machines are noisy; compare ratios, not times).
The publish and claim scenarios on SQL also show what each message cost the writer thread:
statements sent (``GroupCommitWriter.stats()``) and busy microseconds.

PostgreSQL runs in a database of its own, ``qgate_bench_<random>``, dropped at the end.
"""

from __future__ import annotations

import argparse
import os
import statistics
import tempfile
import time
import uuid
from collections.abc import Awaitable, Callable
from typing import Any

import sqlalchemy as sa
from twisted.internet import defer, task, threads

from qgate.core.limits import Limits
from qgate.core.model import NewMessage
from qgate.core.service import QueueService
from qgate.storage.memory import MemoryStorage
from qgate.storage.sql.migrate import upgrade
from qgate.storage.sql.store import SQLStorage, normalize_url
from qgate.storage.sql.writer import WriterStats

PG_URL = os.environ.get("QGATE_BENCH_PG_URL", "postgresql://postgres@127.0.0.1:5432/test")
BODY = b"x" * 200
T = "bench"


class Table:
    def __init__(self, title: str) -> None:
        self.title = title
        self.rows: list[tuple[str, str, str]] = []

    def add(
        self, name: str, value: str, note: str = "", writer: tuple[str, str] = ("", "")
    ) -> None:
        self.rows.append((name, value, note))
        print(f"  {name:<50} {value:>14} {writer[0]:>9} {writer[1]:>13}  {note}", flush=True)

    def start(self) -> None:
        print(f"\n## {self.title}\n", flush=True)
        head = f"{'scenario':<50} {'result':>14} {'stmts/msg':>9} {'writer µs/msg':>13}"
        print(f"  {head}  note", flush=True)


def per_message(store: Any, before: WriterStats | None, messages: int) -> tuple[str, str]:
    """The ``stmts/msg`` and ``writer µs``/msg columns since ``before`` (blank on memory)."""
    if before is None or not messages:
        return ("", "")
    done = store.writer.stats() - before
    return (f"{done.statements / messages:.3f}", f"{done.busy_seconds / messages * 1e6:.1f}")


def writer_stats(store: Any) -> WriterStats | None:
    return store.writer.stats() if isinstance(store, SQLStorage) else None


async def run_for(
    seconds: float, clients: int, op: Callable[[], Awaitable[int]]
) -> tuple[float, int]:
    """Run ``op`` in ``clients`` concurrent loops for ``seconds`` (a loop stops early when
    ``op`` returns 0: its queue ran dry); items per second, and items."""
    deadline = time.perf_counter() + seconds
    counts = [0] * clients

    async def loop(i: int) -> None:
        while time.perf_counter() < deadline:
            n = await op()
            if not n:
                return
            counts[i] += n

    start = time.perf_counter()
    await defer.gatherResults([defer.ensureDeferred(loop(i)) for i in range(clients)])
    return sum(counts) / (time.perf_counter() - start), sum(counts)


def make_service(reactor: Any, backend: str, url: str | None) -> tuple[QueueService, Any]:
    limits = Limits(max_batch=1000, max_claim=1000, max_page=1000)
    if backend == "memory":
        store: Any = MemoryStorage()
    else:
        assert url is not None
        store = SQLStorage(reactor, url)
    return QueueService(reactor, store, MemoryStorage(), limits=limits), store


async def fill(
    service: QueueService, queue: str, count: int, store: Any = None, batch: int = 1000
) -> None:
    for start in range(0, count, batch):
        n = min(batch, count - start)
        await service.publish(T, queue, [NewMessage(BODY)] * n)
    if isinstance(store, SQLStorage):
        # Steady state, not "the planner has never seen this table": autovacuum would
        # analyze it within a minute; the bench does not wait for it.
        await threads.deferToThread(analyze, store)


def analyze(store: SQLStorage) -> None:
    with store.write_engine.connect() as conn:
        if store.dialect == "postgresql":
            conn.execution_options(isolation_level="AUTOCOMMIT").exec_driver_sql("ANALYZE messages")
        else:
            conn.exec_driver_sql("ANALYZE")


async def bench_service(
    reactor: Any, backend: str, url: str | None, seconds: float, table: Table
) -> dict[str, float]:
    service, store = make_service(reactor, backend, url)
    results: dict[str, float] = {}
    run = uuid.uuid4().hex[:6]
    try:
        if backend == "memory":  # first, on a fresh heap: the number the target is about
            await service.create_queue(T, "cycle")
            rate = memory_cycles(service, seconds)
            results["cycle"] = rate
            table.add(
                "publish 1 + claim 1 + ack 1 cycles, callbacks",
                f"{rate:,.0f} /s",
                "target >= 50,000",
            )
        for clients in (1, 16):
            for size in (1, 10, 100):
                queue = f"pub-{run}-{clients}-{size}"
                await service.create_queue(T, queue)
                batch = [NewMessage(BODY)] * size

                async def publish(queue: str = queue, batch: list[NewMessage] = batch) -> int:
                    await service.publish(T, queue, batch)
                    return len(batch)

                before = writer_stats(store)
                rate, sent = await run_for(seconds, clients, publish)
                results[f"publish-{size}-{clients}"] = rate
                table.add(
                    f"publish batch {size:>3}, {clients:>2} clients",
                    f"{rate:,.0f} msg/s",
                    writer=per_message(store, before, sent),
                )
                await service.delete_queue(T, queue)

        for clients in (1, 16):
            queue = f"work-{run}-{clients}"
            await fill(
                service,
                queue,
                int(150_000 * seconds) if backend == "memory" else int(20_000 * seconds),
            )

            async def claim_ack(queue: str = queue) -> int:
                claim = await service.claim(T, queue, limit=10, ttl=60)
                if claim is None:
                    return 0
                await service.ack(T, queue, claim.id, [m.id for m in claim.messages])
                return len(claim.messages)

            before = writer_stats(store)
            rate, acked = await run_for(seconds, clients, claim_ack)
            results[f"claim-ack-{clients}"] = rate
            table.add(
                f"claim 10 + ack, {clients:>2} clients",
                f"{rate:,.0f} msg/s",
                writer=per_message(store, before, acked),
            )

        await bench_cycles(service, store, run, seconds, table, results)

        queue = f"observe-{run}"
        await fill(service, queue, 10_000, store)

        async def observe() -> int:
            after = None
            total = 0
            while True:
                page = await service.observe(T, queue, after=after, limit=100)
                if not page:
                    return total
                total += len(page)
                after = page[-1].id

        rate, _ = await run_for(seconds, 4, observe)
        results["observe"] = rate
        table.add("observe 100 per page, 4 clients", f"{rate:,.0f} msg/s")

    finally:
        await service.stop()
    return results


async def run_pairs(
    seconds: float,
    publishers: int,
    consumers: int,
    publish: Callable[[], Awaitable[int]],
    consume: Callable[[], Awaitable[int]],
) -> tuple[float, int]:
    """``publishers`` loops and ``consumers`` loops for ``seconds``; messages consumed per
    second, and how many. At most ``publishers`` messages are published and not yet
    consumed: the queue stays (nearly) empty and the consumers wait, as subscribers
    keeping up with their publishers do."""
    pairs = publishers
    deadline = time.perf_counter() + seconds
    consumed = [0]
    outstanding = [0]
    blocked: list[defer.Deferred[None]] = []

    def unblock() -> None:
        while blocked and (outstanding[0] < pairs or time.perf_counter() >= deadline):
            blocked.pop(0).callback(None)

    async def publisher() -> None:
        while time.perf_counter() < deadline:
            if outstanding[0] >= pairs:
                d: defer.Deferred[None] = defer.Deferred()
                blocked.append(d)
                await d
                continue
            outstanding[0] += 1
            await publish()

    async def consumer() -> None:
        while time.perf_counter() < deadline:
            n = await consume()
            consumed[0] += n
            outstanding[0] -= n
            unblock()
        unblock()

    start = time.perf_counter()
    loops = [publisher() for _ in range(publishers)] + [consumer() for _ in range(consumers)]
    await defer.gatherResults([defer.ensureDeferred(loop) for loop in loops])
    return consumed[0] / (time.perf_counter() - start), consumed[0]


async def bench_cycles(
    service: QueueService,
    store: Any,
    run: str,
    seconds: float,
    table: Table,
    results: dict[str, float],
) -> None:
    """Whole message lives, one message per publish, 16 clients: publish then claim 10 +
    ack (or pop) in one loop (nobody waits), and 4 publishers beside 16 consumers that
    wait (STOMP subscriptions, long polls: what a hand-off serves)."""
    body = [NewMessage(BODY)]
    acks: list[defer.Deferred[Any]] = []
    for kind in ("claim", "pop"):
        queue = f"cycle-{kind}-{run}"
        await service.create_queue(T, queue)

        async def consume(queue: str = queue, kind: str = kind, wait: float = 0.0) -> int:
            if kind == "pop":
                return len(await service.pop_messages(T, queue, 10, wait=wait))
            claim = await service.claim(T, queue, limit=10, ttl=60, wait=wait)
            if claim is None:
                return 0
            await service.ack(T, queue, claim.id, [m.id for m in claim.messages])
            return len(claim.messages)

        async def cycle(queue: str = queue, consume: Any = consume) -> int:
            await service.publish(T, queue, body)
            await consume()
            return 1

        before = writer_stats(store)
        rate, done = await run_for(seconds, 16, cycle)
        what = "claim 10 + ack" if kind == "claim" else "pop 10"
        results[f"cycle-{kind}"] = rate
        table.add(
            f"publish 1 + {what}, 16 clients",
            f"{rate:,.0f} msg/s",
            writer=per_message(store, before, done),
        )

        await service.delete_queue(T, queue)
        # A fresh queue: no rows the loop above deleted for the database to walk past.
        queue = f"waiting-{kind}-{run}"
        await service.create_queue(T, queue)

        async def publish(queue: str = queue) -> int:
            await service.publish(T, queue, body)
            return 1

        async def wait_consume(queue: str = queue, kind: str = kind) -> int:
            # As a STOMP subscription with room in its window: the ack goes to the core,
            # and the next claim waits meanwhile.
            if kind == "pop":
                return len(await service.pop_messages(T, queue, 10, wait=0.2))
            claim = await service.claim(T, queue, limit=10, ttl=60, wait=0.2)
            if claim is None:
                return 0
            acks.append(service.ack(T, queue, claim.id, [m.id for m in claim.messages]))
            return len(claim.messages)

        before = writer_stats(store)
        rate, done = await run_pairs(seconds, 4, 16, publish, wait_consume)
        await defer.gatherResults(acks)
        acks.clear()
        results[f"waiting-{kind}"] = rate
        table.add(
            f"publish 1 x4 to {what} waiting x16",
            f"{rate:,.0f} msg/s",
            writer=per_message(store, before, done),
        )
        await service.delete_queue(T, queue)


def memory_cycles(service: QueueService, seconds: float) -> float:
    """Publish, claim and ack one message at a time, consuming results with callbacks as a
    protocol does (the memory store answers synchronously, so each Deferred has fired)."""
    out: list[Any] = []
    take = out.append
    body = [NewMessage(BODY)]
    n = 0
    start = time.perf_counter()
    deadline = start + seconds
    while True:
        for _ in range(1000):
            service.publish(T, "cycle", body).addCallback(take)
            service.claim(T, "cycle", limit=1, ttl=60).addCallback(take)
            claim = out[-1]
            service.ack(T, "cycle", claim.id, [claim.messages[0].id]).addCallback(take)
            out.clear()
        n += 1000
        if time.perf_counter() >= deadline:
            return n / (time.perf_counter() - start)


async def claim_latency(
    reactor: Any, backend: str, url: str | None, waiting: int, samples: int = 300
) -> float:
    """Median seconds for claim(1) + ack with ``waiting`` messages in the queue."""
    service, store = make_service(reactor, backend, url)
    queue = f"latency-{waiting}-{uuid.uuid4().hex[:6]}"
    try:
        await service.create_queue(T, queue)
        if isinstance(store, SQLStorage):
            await threads.deferToThread(bulk_load, store, queue, waiting)
        else:
            await fill(service, queue, waiting)
        times = []
        for _ in range(samples):
            start = time.perf_counter()
            claim = await service.claim(T, queue, limit=1, ttl=60)
            assert claim is not None
            times.append(time.perf_counter() - start)
            await service.ack(T, queue, claim.id, [claim.messages[0].id])
        return statistics.median(times)
    finally:
        await service.stop()


def bulk_load(store: SQLStorage, queue: str, count: int) -> None:
    """Load ``count`` messages with multi-row INSERTs (setup only, not measured)."""
    from qgate.storage.sql.schema import messages, queues

    now = time.time()
    with store.write_engine.begin() as conn:
        qid = conn.execute(
            sa.select(queues.c.id).where(queues.c.tenant == T, queues.c.name == queue)
        ).scalar_one()
        for start in range(0, count, 10_000):
            rows = [
                {
                    "queue_id": qid,
                    "marker": marker,
                    "priority": 4,
                    "body": BODY,
                    "size": len(BODY),
                    "content_type": "application/octet-stream",
                    "headers": None,
                    "producer": None,
                    "created_at": now,
                    "expires_at": now + 3600,
                    "available_at": now,
                    "visible_at": now,
                    "claim_id": None,
                    "claim_expires": None,
                    "claim_count": 0,
                }
                for marker in range(start + 1, min(count, start + 10_000) + 1)
            ]
            conn.execute(messages.insert(), rows)
        conn.execute(sa.update(queues).where(queues.c.id == qid).values(last_marker=count))
    with store.write_engine.connect() as conn:
        if store.dialect == "postgresql":
            conn.execution_options(isolation_level="AUTOCOMMIT").exec_driver_sql("ANALYZE messages")
        else:
            conn.exec_driver_sql("ANALYZE")


# -- raw SQL baselines (DB-API directly, one connection per client thread) ------------------


def raw_connect(url: str) -> Any:
    parsed = normalize_url(url)
    if parsed.get_backend_name() == "sqlite":
        import sqlite3

        conn = sqlite3.connect(parsed.database, timeout=30, isolation_level=None)
        conn.execute("PRAGMA journal_mode=WAL")
        conn.execute("PRAGMA synchronous=FULL")
        return conn
    import psycopg2

    return psycopg2.connect(
        host=parsed.host, port=parsed.port or 5432, user=parsed.username, dbname=parsed.database
    )


def raw_setup(url: str) -> None:
    conn = raw_connect(url)
    cur = conn.cursor()
    cur.execute("DROP TABLE IF EXISTS bench_raw")
    blob = "BYTEA" if "postgresql" in str(normalize_url(url)) else "BLOB"
    cur.execute(
        f"CREATE TABLE bench_raw (id BIGINT PRIMARY KEY, body {blob}, "
        "claim_id VARCHAR(32), visible_at DOUBLE PRECISION)"
    )
    # No index on visible_at: the claim below walks the primary key in order, as qgate's
    # claim walks its claim-order index (an index on visible_at makes planners sort).
    if hasattr(conn, "commit"):
        conn.commit()
    conn.close()


def raw_insert(url: str, seconds: float, per_commit: int, start_id: int) -> int:
    """INSERT single rows, committing every ``per_commit``; returns rows inserted."""
    conn = raw_connect(url)
    pg = not hasattr(conn, "execute")
    cur = conn.cursor()
    ph = "%s" if pg else "?"
    sql = f"INSERT INTO bench_raw (id, body, visible_at) VALUES ({ph}, {ph}, 0)"
    deadline = time.perf_counter() + seconds
    n = 0
    while time.perf_counter() < deadline:
        if not pg:
            cur.execute("BEGIN IMMEDIATE")
        for _ in range(per_commit):
            cur.execute(sql, (start_id + n, BODY))
            n += 1
        conn.commit() if pg else cur.execute("COMMIT")
    conn.close()
    return n


def raw_claim_ack(url: str, seconds: float) -> int:
    """Claim 10 in ONE statement, then ONE batch DELETE, one commit each: the notes' best."""
    conn = raw_connect(url)
    pg = not hasattr(conn, "execute")
    cur = conn.cursor()
    deadline = time.perf_counter() + seconds
    n = 0
    while time.perf_counter() < deadline:
        cid = uuid.uuid4().hex
        if pg:
            cur.execute(
                "WITH c AS (SELECT id FROM bench_raw WHERE visible_at <= 1 ORDER BY id "
                "LIMIT 10 FOR UPDATE SKIP LOCKED) UPDATE bench_raw b SET claim_id = %s, "
                "visible_at = 2 FROM c WHERE b.id = c.id RETURNING b.id",
                (cid,),
            )
            ids = [r[0] for r in cur.fetchall()]
            conn.commit()
            if not ids:
                break
            cur.execute("DELETE FROM bench_raw WHERE id = ANY(%s) AND claim_id = %s", (ids, cid))
            conn.commit()
        else:
            cur.execute("BEGIN IMMEDIATE")
            cur.execute(
                "UPDATE bench_raw SET claim_id = ?, visible_at = 2 WHERE id IN (SELECT id FROM "
                "bench_raw WHERE visible_at <= 1 ORDER BY id LIMIT 10) RETURNING id",
                (cid,),
            )
            ids = [r[0] for r in cur.fetchall()]
            cur.execute("COMMIT")
            if not ids:
                break
            marks = ",".join("?" * len(ids))
            cur.execute("BEGIN IMMEDIATE")
            cur.execute(
                f"DELETE FROM bench_raw WHERE id IN ({marks}) AND claim_id = ?", (*ids, cid)
            )
            cur.execute("COMMIT")
        n += len(ids)
    conn.close()
    return n


async def bench_raw(url: str, seconds: float, table: Table) -> dict[str, float]:
    results: dict[str, float] = {}
    await threads.deferToThread(raw_setup, url)
    for per_commit in (1, 100):
        start = time.perf_counter()
        n = await threads.deferToThread(
            raw_insert, url, seconds, per_commit, 10_000_000 * per_commit
        )
        rate = n / (time.perf_counter() - start)
        results[f"raw-insert-{per_commit}"] = rate
        table.add(f"RAW: INSERT, {per_commit:>3} per commit, 1 client", f"{rate:,.0f} msg/s")
    start = time.perf_counter()
    n = await threads.deferToThread(raw_claim_ack, url, seconds)
    rate = n / (time.perf_counter() - start)
    results["raw-claim-ack"] = rate
    table.add("RAW: claim 10 (1 stmt) + batch DELETE, 1 client", f"{rate:,.0f} msg/s")
    return results


async def main(reactor: Any, argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=2.0)
    parser.add_argument("--backends", default="memory,sqlite,postgres")
    parser.add_argument("--big", type=int, default=1_000_000, help="messages for the latency run")
    args = parser.parse_args(argv)
    tmp = tempfile.mkdtemp(prefix="qgate-bench-")
    summary = Table("targets")
    for backend in args.backends.split(","):
        if backend == "postgres":
            name = f"qgate_bench_{uuid.uuid4().hex[:8]}"  # others may bench on this server
            url = await threads.deferToThread(fresh_pg_database, name)
            try:
                await bench_backend(reactor, backend, url, args, summary)
            finally:
                await threads.deferToThread(drop_pg_database, name)
        else:
            url = f"sqlite:///{tmp}/bench.db" if backend == "sqlite" else None
            await bench_backend(reactor, backend, url, args, summary)
    print("\n## targets\n")
    for backend, what, value in summary.rows:
        print(f"  {backend:<9} {what:<46} {value}")


async def bench_backend(
    reactor: Any, backend: str, url: str | None, args: argparse.Namespace, summary: Table
) -> None:
    if url:
        await threads.deferToThread(upgrade, url)
    table = Table(f"{backend}" + (f" ({normalize_url(url).drivername})" if url else ""))
    table.start()
    results = await bench_service(reactor, backend, url, args.seconds, table)
    if url:
        results.update(await bench_raw(url, args.seconds, table))
    small = await claim_latency(reactor, backend, url, 1_000)
    big = await claim_latency(reactor, backend, url, args.big)
    table.add("claim latency, 1,000 waiting (median)", f"{small * 1e3:.3f} ms")
    table.add(f"claim latency, {args.big:,} waiting (median)", f"{big * 1e3:.3f} ms")
    summary.rows.append((backend, "claim latency big/small", f"{big / small:.2f}x (<= 1.5x)"))
    if url:
        group = results["publish-1-16"] / results["raw-insert-1"]
        summary.rows.append(
            (backend, "publish 1 x16 clients / raw 1-per-commit", f"{group:.1f}x (>= 5x)")
        )
        ratio = results["raw-claim-ack"] / results["claim-ack-16"]
        summary.rows.append(
            (backend, "raw claim+ack / qgate claim+ack x16", f"{ratio:.2f}x (<= 3x)")
        )
    else:
        summary.rows.append(
            (backend, "publish+claim+ack cycles/s", f"{results['cycle']:,.0f} (>= 50,000)")
        )


def fresh_pg_database(name: str) -> str:
    admin = sa.create_engine(normalize_url(PG_URL), isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.exec_driver_sql(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        conn.exec_driver_sql(f'CREATE DATABASE "{name}"')
    admin.dispose()
    return normalize_url(PG_URL).set(database=name).render_as_string(hide_password=False)


def drop_pg_database(name: str) -> None:
    admin = sa.create_engine(normalize_url(PG_URL), isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.exec_driver_sql(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
    admin.dispose()


if __name__ == "__main__":
    task.react(lambda reactor: defer.ensureDeferred(main(reactor)))
