"""What the tenant guard (``core/guard.py``) costs a publish: the service over memory,
called directly and through the guard, interleaved in one run (compare the ratio).

    python -m bench.guard [--rounds 15] [--calls 20000]

Memory is the cheapest store, so this is the guard's cost at its most visible; on SQL a
publish costs tens of microseconds more and the guard's share is smaller.
"""

from __future__ import annotations

import argparse
import time
from typing import Any

from twisted.internet.task import Clock

from qgate.core.guard import TenantGuard
from qgate.core.model import NewMessage
from qgate.core.principal import Principal
from qgate.core.service import QueueService
from qgate.storage.memory import MemoryStorage


def _round(guarded: bool, calls: int) -> float:
    """Microseconds per one-message publish, on a fresh service."""
    clock = Clock()
    clock.advance(1e9)
    service = QueueService(clock, MemoryStorage(), MemoryStorage())
    target: Any = TenantGuard(service, clock) if guarded else service
    tenant = Principal("bench") if guarded else "bench"
    batch = [NewMessage(b"x" * 100)]
    target.publish(tenant, "q", batch)
    start = time.perf_counter()
    for _ in range(calls):
        target.publish(tenant, "q", batch)
    return (time.perf_counter() - start) / calls * 1e6


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--rounds", type=int, default=15)
    parser.add_argument("--calls", type=int, default=20_000)
    args = parser.parse_args()
    plain, guarded = [], []
    for _ in range(args.rounds):
        plain.append(_round(False, args.calls))
        guarded.append(_round(True, args.calls))
    best_plain, best_guarded = min(plain), min(guarded)
    print(
        f"memory publish (1 x 100 B), best of {args.rounds} x {args.calls}: "
        f"service {best_plain:.2f} us, through the guard {best_guarded:.2f} us "
        f"(+{best_guarded - best_plain:.2f} us, x{best_guarded / best_plain:.2f})"
    )


if __name__ == "__main__":
    main()
