"""What a call through the worker -> hub channel costs, beside the same call made directly.

    python -m bench.rpc [--calls 20000]

Runs the real codec and channel (``gateway/rpc.py``) over in-memory transports against a
memory-backed core, so the difference is the CPU the channel adds per call (both ends,
encoding, framing, decoding), without sockets or a second process; what a socket write
and read add on top is the kernel's.
"""

from __future__ import annotations

import argparse
import time
from collections.abc import Callable
from typing import Any

from twisted.internet.task import Clock
from twisted.internet.testing import StringTransport

from qgate.core.limits import Limits
from qgate.core.model import NewMessage, QueueOptions
from qgate.core.service import QueueService
from qgate.gateway.proxy import SERVICE_METHODS, RemoteQueueService
from qgate.gateway.rpc import SERVICE, HubChannel, WorkerChannel
from qgate.storage.memory import MemoryStorage

BODY = b'{"event": "click", "n": 1, "pad": "' + b"x" * 150 + b'"}'


def make() -> tuple[QueueService, RemoteQueueService, Callable[[], None]]:
    clock = Clock()
    clock.advance(1_700_000_000)
    core = QueueService(clock, MemoryStorage(), MemoryStorage(), limits=Limits())
    worker, hub = WorkerChannel(), HubChannel({SERVICE: (core, SERVICE_METHODS)})
    up, down = StringTransport(), StringTransport()
    worker.makeConnection(up)
    hub.makeConnection(down)

    def pump() -> None:
        while up.value() or down.value():
            a, b = up.value(), down.value()
            up.clear()
            down.clear()
            if a:
                hub.dataReceived(a)
            if b:
                worker.dataReceived(b)

    return core, RemoteQueueService(worker, clock, Limits(), QueueOptions()), pump


def timed(calls: int, step: Callable[[int], Any], pump: Callable[[], None]) -> float:
    """CPU µs per call of ``step`` (answers pumped every 100 calls, as a busy worker
    would), the best of three rounds: the machine's other load only adds."""
    best = float("inf")
    for _ in range(3):
        start = time.process_time()
        for i in range(calls):
            step(i)
            if i % 100 == 99:
                pump()
        pump()
        best = min(best, (time.process_time() - start) / calls * 1e6)
    return best


def main() -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--calls", type=int, default=20000)
    args = parser.parse_args()
    messages = [NewMessage(BODY, content_type="application/json", ttl=600)]
    batch = messages * 10
    print(f"\n## one call, direct vs through the channel ({args.calls} calls each)\n")
    for label, step in (
        ("publish 1 message", lambda s: lambda i: s.publish("t", "q", messages)),
        ("publish 10 messages", lambda s: lambda i: s.publish("t", "q", batch)),
        ("claim 10 (and ack them)", None),
        ("get_queue", lambda s: lambda i: s.get_queue("t", "q")),
    ):
        results = []
        for remote in (False, True):
            core, proxy, pump = make()
            service: Any = proxy if remote else core
            core.create_queue("t", "q", QueueOptions(durable=False))
            if step is None:
                for _ in range(3 * args.calls // 100 + 1):
                    core.publish("t", "q", batch * 10)

                def claim_ack(i: int, service: Any = service) -> Any:
                    d = service.claim("t", "q", limit=10, ttl=60)
                    return d.addCallback(
                        lambda c: service.ack("t", "q", c.id, [m.id for m in c.messages])
                    )

                results.append(timed(args.calls // 10, claim_ack, pump))
            else:
                results.append(timed(args.calls, step(service), pump))
        direct, through = results
        print(
            f"  {label:<28} direct {direct:7.1f} µs   channel {through:7.1f} µs"
            f"   (+{through - direct:.1f} µs)"
        )


if __name__ == "__main__":
    main()
