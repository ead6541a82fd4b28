"""What counting costs: publish + claim + ack on the memory store, plain and through
``MeteredService`` (with no exporter, and with prometheus_client), best of several rounds.

    python -m bench.metrics [--rounds 15] [--n 5000]

Noisy machines: compare the three numbers of one run, not runs with each other.
"""

from __future__ import annotations

import argparse
import gc
import time
from typing import Any

from twisted.internet.task import Clock

from qgate.core.metrics import IMetrics, MeteredService, NullMetrics, QueueRates
from qgate.core.model import NewMessage
from qgate.core.service import QueueService
from qgate.gateway.metrics import PrometheusMetrics
from qgate.storage.memory import MemoryStorage


def service(metrics: IMetrics | None) -> Any:
    clock = Clock()
    clock.advance(1_000_000)
    core = QueueService(clock, MemoryStorage(), MemoryStorage())
    return core if metrics is None else MeteredService(core, metrics, "http", QueueRates())


def round_trip(svc: Any, n: int) -> float:
    """Microseconds per publish + claim + ack of one message."""
    start = time.perf_counter()
    for _ in range(n):
        svc.publish("t", "q", [NewMessage(b"x")])
        claim = svc.claim("t", "q", limit=1, ttl=30).result
        svc.ack("t", "q", claim.id, [str(claim.messages[0].marker)])
    return (time.perf_counter() - start) / n * 1e6


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--rounds", type=int, default=15)
    parser.add_argument("--n", type=int, default=5000)
    args = parser.parse_args()
    kinds = {"plain": lambda: None, "null": NullMetrics, "prometheus": PrometheusMetrics}
    best = dict.fromkeys(kinds, float("inf"))
    names = list(kinds)
    for i in range(args.rounds):
        for name in names[i % 3 :] + names[: i % 3]:  # each goes first in turn
            svc = service(kinds[name]())
            gc.collect()
            best[name] = min(best[name], round_trip(svc, args.n))
    for name, us in best.items():
        print(f"{name:>10}: {us:6.1f} µs per publish+claim+ack ({us / best['plain']:.2f}x)")


if __name__ == "__main__":
    main()
