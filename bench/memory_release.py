"""How long a purge or delete of a big transient queue holds the reactor.

    python -m bench.memory_release [--messages 200000] [--body 1024] [--rounds 3]

Fills a transient (memory) queue with ``--messages`` distinct bodies, then deletes it, and
again purges it: once freed at once (``MemoryStorage`` without ``discard``, as before) and
once handed to ``HeapTrimmer.discard``, which frees ``RELEASE_SLICE`` entries per reactor
turn. Prints the call's time and the longest reactor turn the freeing takes, medians of
``--rounds``. No reactor runs: the turns are run one by one on a ``Clock``.
"""

from __future__ import annotations

import argparse
import statistics
import time

from twisted.internet.task import Clock

from bench._common import print_table
from qgate.core.model import NewMessage, QueueOptions
from qgate.storage._trim import RELEASE_SLICE, HeapTrimmer
from qgate.storage.memory import MemoryStorage


def _filled(messages: int, body: int, sliced: bool) -> tuple[MemoryStorage, HeapTrimmer, Clock]:
    clock = Clock()
    trimmer = HeapTrimmer(clock, None)
    store = MemoryStorage(discard=trimmer.discard if sliced else None)
    store.create_queue("t", "q", QueueOptions(durable=False), {}, 0.0)
    for start in range(0, messages, 100):
        batch = [NewMessage(b"%d" % i + b"x" * body) for i in range(start, start + 100)]
        store.publish_now("t", "q", batch, 1.0, None)
    return store, trimmer, clock


def measure(messages: int, body: int, sliced: bool, op: str) -> tuple[float, float, int]:
    """(ms of the call, ms of the longest turn after it, turns) for one purge or delete."""
    store, trimmer, clock = _filled(messages, body, sliced)
    start = time.perf_counter()
    if op == "delete":
        store.delete_queue("t", "q")
    else:
        store.purge_queue("t", "q")
    call = (time.perf_counter() - start) * 1000
    longest, turns = 0.0, 0
    while clock.getDelayedCalls():
        due = clock.getDelayedCalls()[0]
        clock.calls.remove(due)
        start = time.perf_counter()
        due.func(*due.args, **due.kw)
        longest = max(longest, (time.perf_counter() - start) * 1000)
        turns += 1
    assert trimmer.discarding == 0
    return call, longest, turns


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--messages", type=int, default=200_000)
    parser.add_argument("--body", type=int, default=1024)
    parser.add_argument("--rounds", type=int, default=3)
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    rows = []
    for op in ("delete", "purge"):
        for sliced in (False, True):
            runs = [measure(args.messages, args.body, sliced, op) for _ in range(args.rounds)]
            call = statistics.median(r[0] for r in runs)
            longest = statistics.median(r[1] for r in runs)
            turns = runs[0][2]
            how = f"a slice of {RELEASE_SLICE:,} per turn" if sliced else "at once (before)"
            reactor = max(call, longest)
            rows.append(
                [f"{op}, {how}", f"{call:.2f}", f"{longest:.2f}", str(turns), f"{reactor:.2f}"]
            )
    print_table(
        f"Transient queue of {args.messages:,} messages of {args.body} B: purge and delete",
        ["scenario", "call ms", "longest turn after, ms", "turns", "reactor held at most, ms"],
        rows,
    )


if __name__ == "__main__":
    main()
