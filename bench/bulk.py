"""Bulk work beside other tenants: a victim's publish latency while another tenant purges
or deletes a big queue (issue 14, item 5).

    python -m bench.bulk [--messages 200000] [--slice 1000] [--victims 4]
                         [--backends sqlite,postgres]

For each backend, bulk operation (purge, delete) and slice size (``unlimited``: the whole
operation one write transaction, as qgate did before slicing; then ``--slice`` messages
per transaction), a fresh database: tenant ``bench`` has one queue of ``--messages``
messages (loaded with multi-row INSERTs, not measured), tenant ``victim`` one empty
queue. The bulk operation starts, and ``--victims`` loops each publish one message to the
victim's queue, one after the other, until the bulk work is done (a delete: its messages
swept too). The table shows the victim's publish latency (p50, p99, max, from submit to
commit) of the publishes that started meanwhile, how many there were, when the bulk call
answered and when its work was done. The first row of each backend is the
victim alone, the baseline of the same run. The last two: tenant ``bench`` submits
``--flood`` one-message publishes at once, the victims publish meanwhile, first in
``bench``'s own lane of the writer (queued behind the flood, as every write was before
the writer's fair share), then as their own tenant. SQLite runs with qgate's default
``synchronous = "FULL"``; PostgreSQL in a database of its own, dropped at the end.
"""

from __future__ import annotations

import argparse
import contextlib
import statistics
import tempfile
import time
from collections.abc import Awaitable, Iterator
from pathlib import Path
from typing import Any

from twisted.internet import defer, task

from bench._common import TemporaryDatabase, print_table
from bench.core import T, bulk_load
from qgate.core.model import NewMessage, QueueOptions
from qgate.storage.sql.migrate import upgrade
from qgate.storage.sql.store import SQLStorage

VICTIM = "victim"
#: How long the victim publishes alone, for the baseline row.
MIN_SECONDS = 2.0


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--messages", type=int, default=200_000)
    parser.add_argument("--slice", type=int, default=1000, help="messages per transaction")
    parser.add_argument("--victims", type=int, default=4, help="concurrent victim publishers")
    parser.add_argument("--flood", type=int, default=5000, help="publishes queued at once")
    parser.add_argument("--backends", default="sqlite", help="sqlite,postgres")
    return parser.parse_args(argv)


@contextlib.contextmanager
def fresh_database(backend: str) -> Iterator[str]:
    """The URL of a new, empty database of ``backend``, removed afterwards."""
    if backend == "sqlite":
        with tempfile.TemporaryDirectory(prefix="qgate-bulk-") as directory:
            yield f"sqlite:///{Path(directory) / 'bulk.db'}"
        return
    database = TemporaryDatabase()
    try:
        yield database.url
    finally:
        database.drop()


async def victims(
    store: SQLStorage, loops: int, work: Awaitable[Any], tenant: str = VICTIM
) -> list[float]:
    """Publish latencies (seconds) of ``loops`` sequential publishers, of the publishes
    that started before ``work`` was done (alone: for ``MIN_SECONDS``)."""
    done = False
    samples: list[float] = []

    async def loop() -> None:
        while not done:
            start = time.perf_counter()
            await store.publish(tenant, "v", [NewMessage(b"v")], time.time(), None)
            samples.append(time.perf_counter() - start)

    loops_done = defer.gatherResults([defer.ensureDeferred(loop()) for _ in range(loops)])
    await work
    done = True
    await loops_done
    return samples


async def scenario(
    reactor: Any, url: str, op: str, bulk_slice: int | None, args: argparse.Namespace
) -> list[str]:
    upgrade(url)
    store = SQLStorage(reactor, url, bulk_slice=bulk_slice)
    try:
        await store.create_queue(VICTIM, "v", QueueOptions(), {}, time.time())
        if op != "none":
            await store.create_queue(T, "big", QueueOptions(), {}, time.time())
            bulk_load(store, "big", args.messages)
        times: dict[str, float] = {}
        start = time.perf_counter()

        async def work() -> None:
            if op == "none":
                await task.deferLater(reactor, MIN_SECONDS)
            elif op == "purge":
                assert await store.purge_queue(T, "big") == args.messages
            elif op == "delete":
                assert await store.delete_queue(T, "big")
            times["answer"] = time.perf_counter() - start
            await store.swept()
            times["done"] = time.perf_counter() - start

        samples = await victims(store, args.victims, defer.ensureDeferred(work()))
    finally:
        await store.close()
    ms = sorted(s * 1000 for s in samples)
    p99 = ms[min(len(ms) - 1, int(len(ms) * 0.99))]
    label = "victim alone" if op == "none" else f"{op} {args.messages:,}"
    size = "" if op == "none" else ("unlimited" if bulk_slice is None else f"{bulk_slice:,}")
    when = "" if op == "none" else f"{times['answer']:.2f}"
    done = "" if op == "none" else f"{times['done']:.2f}"
    row = [label, size, f"{statistics.median(ms):.1f}", f"{p99:.1f}", f"{ms[-1]:.1f}"]
    row += [f"{len(ms)}", when, done]
    print(" ", " | ".join(row), flush=True)
    return row


async def flood(reactor: Any, url: str, lane: str, args: argparse.Namespace) -> list[str]:
    """``--flood`` one-message publishes of tenant ``bench`` submitted at once, and the
    victims publishing from tenant ``lane`` (``bench`` itself: its writes queue behind the
    flood, as every write did before the writer's fair share)."""
    upgrade(url)
    store = SQLStorage(reactor, url)
    try:
        await store.create_queue(lane, "v", QueueOptions(), {}, time.time())
        await store.create_queue(T, "big", QueueOptions(), {}, time.time())
        start = time.perf_counter()
        now = time.time()
        ds = [store.publish(T, "big", [NewMessage(b"f")], now, None) for _ in range(args.flood)]
        work = defer.gatherResults(ds)
        samples = await victims(store, args.victims, work, lane)
        took = time.perf_counter() - start
    finally:
        await store.close()
    ms = sorted(s * 1000 for s in samples)
    p99 = ms[min(len(ms) - 1, int(len(ms) * 0.99))]
    label = f"{args.flood:,} publishes queued, victim " + (
        "in the same lane (FIFO)" if lane == T else "its own tenant"
    )
    row = [label, "", f"{statistics.median(ms):.1f}", f"{p99:.1f}", f"{ms[-1]:.1f}"]
    row += [f"{len(ms)}", "", f"{took:.2f}"]
    print(" ", " | ".join(row), flush=True)
    return row


async def run(reactor: Any, args: argparse.Namespace) -> None:
    header = ["scenario", "slice", "p50 ms", "p99 ms", "max ms", "publishes"]
    header += ["answer s", "done s"]
    cases = [("none", None)] + [
        (op, size) for op in ("purge", "delete") for size in (None, args.slice)
    ]
    for backend in args.backends.split(","):
        rows = []
        for op, size in cases:
            with fresh_database(backend) as url:
                rows.append(await scenario(reactor, url, op, size, args))
        for lane in (T, VICTIM):
            with fresh_database(backend) as url:
                rows.append(await flood(reactor, url, lane, args))
        title = f"{backend}: a victim's publish while another tenant purges, deletes or floods"
        print_table(f"{title} ({args.victims} victim publishers)", header, rows)


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    task.react(lambda reactor: defer.ensureDeferred(run(reactor, args)))


if __name__ == "__main__":
    main()
