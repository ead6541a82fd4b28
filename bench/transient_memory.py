"""Transient-queue memory: what a flood holds, what the bound stops, what a delete gives back.

    python -m bench.transient_memory [--mb 300] [--body 1000] [--max-mb 200]

Publishes ``--mb`` of bodies to a transient queue (in batches of 100), printing the
process's resident size (RSS) before, at the end of the flood, after the queue is deleted,
and after ``malloc_trim`` asks glibc to hand freed heap pages back; then again with
``MemoryStorage(max_bytes=--max-mb)`` to show where ``[queues] transient_max_bytes`` stops
the flood. No reactor: the memory store answers synchronously.
"""

from __future__ import annotations

import argparse
import ctypes
import gc
import os
import time

from twisted.internet.task import Clock

from qgate.core.errors import QueueFull
from qgate.core.model import NewMessage, QueueOptions
from qgate.core.service import QueueService
from qgate.storage.memory import MemoryStorage

MB = 1024 * 1024


def rss_mb() -> float:
    with open("/proc/self/statm") as f:
        pages = int(f.read().split()[1])
    return pages * os.sysconf("SC_PAGE_SIZE") / MB


def trim() -> None:
    try:
        ctypes.CDLL("libc.so.6").malloc_trim(0)
    except (OSError, AttributeError):
        pass


def flood(max_bytes: int | None, total: int, body: int) -> None:
    clock = Clock()
    clock.advance(1_000_000)
    store = MemoryStorage(max_bytes=max_bytes)
    service = QueueService(clock, MemoryStorage(), store)
    service.create_queue("t", "q", QueueOptions(durable=False))
    start = rss_mb()
    sent = 0
    refused = None
    filler = os.urandom(body - 8)
    n = 0
    while sent < total:
        batch = [NewMessage(b"%08d" % (n + i) + filler) for i in range(100)]
        n += 100
        failures: list = []
        service.publish("t", "q", batch).addErrback(failures.append)
        if failures:
            if not failures[0].check(QueueFull):
                failures[0].raiseException()
            refused = failures[0].value.description
            failures.clear()  # its traceback holds the store's frames
            break
        sent += 100 * body
    flooded = rss_mb()
    service.delete_queue("t", "q")
    gc.collect()
    deleted = rss_mb()
    t0 = time.perf_counter()
    trim()
    trim_ms = (time.perf_counter() - t0) * 1000
    trimmed = rss_mb()
    cap = "none" if max_bytes is None else f"{max_bytes // MB} MB"
    print(f"cap {cap}: published {sent // MB} MB of bodies")
    if refused:
        print(f"  refused: {refused}")
    print(
        f"  RSS MB: before {start:.0f}, flooded {flooded:.0f}, deleted {deleted:.0f}, "
        f"after malloc_trim {trimmed:.0f} ({trim_ms:.0f} ms); "
        f"held by the store now {store.held_bytes}"
    )


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--mb", type=int, default=300)
    parser.add_argument("--body", type=int, default=1000)
    parser.add_argument("--max-mb", type=int, default=200)
    args = parser.parse_args()
    flood(None, args.mb * MB, args.body)
    flood(args.max_mb * MB, args.mb * MB, args.body)


if __name__ == "__main__":
    main()
