"""What the tenant guard (``core/guard.py``) costs: the service over memory, called
directly and through the guard, interleaved in one run (compare the ratio).

    python -m bench.guard [--rounds 15] [--calls 20000]

Three measurements: one ``publish`` call (the guard's cost at its most visible), the same
through a worker's guard (whose buckets note what they spend for the round with the
hub, ``core/shared_limits.py``) against one process's, and a
STOMP connection in memory (StringTransport, no sockets) sending 1 KiB SENDs in chunks of
50 to an ``ack:auto`` subscriber on a transient queue, CPU time per message. On SQL a
publish costs tens of microseconds more and the guard's share is smaller.
"""

from __future__ import annotations

import argparse
import time
from typing import Any

from twisted.internet.defer import succeed
from twisted.internet.task import Clock
from twisted.internet.testing import StringTransport

from qgate.core.auth import TrustedTenant
from qgate.core.guard import TenantGuard
from qgate.core.model import NewMessage
from qgate.core.principal import Principal
from qgate.core.service import QueueService
from qgate.core.shared_limits import WorkerShare
from qgate.protocols.context import ProtocolContext
from qgate.protocols.stomp.protocol import StompFactory
from qgate.protocols.stomp.settings import StompSettings
from qgate.storage.memory import MemoryStorage


def _round(guarded: bool, calls: int, shared: bool = False) -> float:
    """Microseconds per one-message publish, on a fresh service (``shared``: the guard of
    a worker, noting its spending for the round with the hub)."""
    clock = Clock()
    clock.advance(1e9)
    service = QueueService(clock, MemoryStorage(), MemoryStorage())
    share = WorkerShare(clock, lambda report: succeed({})) if shared else None
    target: Any = TenantGuard(service, clock, share=share) if guarded else service
    tenant = Principal("bench") if guarded else "bench"
    batch = [NewMessage(b"x" * 100)]
    target.publish(tenant, "q", batch)
    start = time.perf_counter()
    for _ in range(calls):
        target.publish(tenant, "q", batch)
    return (time.perf_counter() - start) / calls * 1e6


def _stomp_round(guarded: bool, messages: int = 5000, chunk: int = 50) -> float:
    """CPU microseconds per message, SEND to an ack:auto subscriber, in memory."""
    clock = Clock()
    clock.advance(1e9)
    service = QueueService(clock, MemoryStorage(), MemoryStorage())
    target: Any = TenantGuard(service, clock) if guarded else service
    ctx = ProtocolContext(clock, target, TrustedTenant(), StompSettings(heartbeat_ms=0))
    factory = StompFactory(ctx)
    ends = []
    for _ in range(2):
        proto, transport = factory.buildProtocol(None), StringTransport()
        proto.makeConnection(transport)
        proto.dataReceived(b"CONNECT\naccept-version:1.2\nhost:/\n\n\x00")
        ends.append((proto, transport))
    (producer, _), (consumer, received) = ends
    consumer.dataReceived(
        b"SUBSCRIBE\ndestination:/queue/t\nid:1\nack:auto\npersistent:false\n\n\x00"
    )
    frame = b"SEND\ndestination:/queue/t\npersistent:false\n\n" + b"x" * 1024 + b"\x00"
    start = time.process_time()
    for _ in range(messages // chunk):
        producer.dataReceived(frame * chunk)
        received.clear()
    return (time.process_time() - start) / messages * 1e6


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--rounds", type=int, default=15)
    parser.add_argument("--calls", type=int, default=20_000)
    args = parser.parse_args()
    plain, guarded = [], []
    for _ in range(args.rounds):
        plain.append(_round(False, args.calls))
        guarded.append(_round(True, args.calls))
    _show(f"memory publish (1 x 100 B), best of {args.rounds} x {args.calls}", plain, guarded)
    plain, guarded = [], []
    for _ in range(args.rounds):
        plain.append(_round(True, args.calls))
        guarded.append(_round(True, args.calls, shared=True))
    _show("the same, shared limits", plain, guarded, ("one process's guard", "a worker's"))
    plain, guarded = [], []
    for _ in range(max(3, args.rounds // 2)):
        plain.append(_stomp_round(False))
        guarded.append(_stomp_round(True))
    _show("STOMP SEND -> ack:auto subscriber (1 KiB, memory), CPU per message", plain, guarded)


def _show(
    what: str,
    plain: list[float],
    guarded: list[float],
    labels: tuple[str, str] = ("service", "through the guard"),
) -> None:
    best_plain, best_guarded = min(plain), min(guarded)
    print(
        f"{what}: {labels[0]} {best_plain:.2f} us, {labels[1]} {best_guarded:.2f} us "
        f"(+{best_guarded - best_plain:.2f} us, x{best_guarded / best_plain:.2f})"
    )


if __name__ == "__main__":
    main()
