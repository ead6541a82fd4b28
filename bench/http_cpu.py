"""CPU per HTTP POST in one process, without sockets: qgate's request path beside a bare
twisted.web resource, in the same run.

    python -m bench.http_cpu [--requests 3000] [--rounds 9]

Each scenario feeds the same one-message ``POST /v2/queues/q1/messages`` (the body
``bench.http`` sends) to a protocol built by the real factory over a StringTransport, and
reports CPU µs per request (``time.process_time``, the best of ``--rounds``: the machine's
other load only adds):

- bare: the twisted.web resource ``bench.http`` measures (201 and the same JSON);
- one process: the factory ``qgate serve --workers 1`` listens with (the gateway's
  guard, metrics, access log and core), memory storage;
- worker + hub: a worker's protocols (``gateway/worker.py``'s assembly: guard, forwarded
  metrics) calling a hub's core through the real channel (``gateway/rpc.py``) over
  in-memory transports, both ends counted, answers pumped every 4 requests.

What wrk measures on top is the kernel's: ``send``/``recv``/``epoll`` and the wake-ups of
the other processes. For a count that does not move with the load, run it under
``valgrind --tool=cachegrind --cache-sim=no`` with two ``--requests`` values and divide
the difference in instructions.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
import uuid
from collections.abc import Callable
from typing import Any

from twisted.internet.address import IPv4Address
from twisted.internet.task import Clock
from twisted.internet.testing import StringTransport
from twisted.web import resource, server

from qgate.core.interfaces import ITenantStore
from qgate.gateway import registry
from qgate.gateway.app import (
    Gateway,
    default_options,
    listener_factories,
    make_authenticator,
    make_guard,
)
from qgate.gateway.config import Config, parse
from qgate.gateway.connections import ConnectionBudget
from qgate.gateway.metrics import ForwardingMetrics, MetricsSink
from qgate.gateway.proxy import (
    SERVICE_METHODS,
    TENANT_METHODS,
    RemoteQueueService,
    RemoteTenantStore,
)
from qgate.gateway.rpc import METRICS, SERVICE, TENANTS, HubChannel, WorkerChannel

BODY = json.dumps({"messages": [{"body": {"event": "click", "n": 1, "pad": "x" * 150}}]}).encode()
REQUEST = (
    b"POST /v2/queues/q1/messages HTTP/1.1\r\nHost: 127.0.0.1\r\n"
    b"Content-Type: application/json\r\nClient-ID: 3381af92-2b9e-11e3-b191-71861300734c\r\n"
    b"X-Project-ID: bench\r\nContent-Length: %d\r\n\r\n" % len(BODY)
) + BODY
SERVER = IPv4Address("TCP", "127.0.0.1", 8888)
CLIENT = IPv4Address("TCP", "127.0.0.1", 40000)


class _Created(resource.Resource):
    isLeaf = True

    def render_POST(self, request: Any) -> bytes:
        request.content.read()
        path = request.path.decode()
        mid = uuid.uuid4().hex[:24]
        request.setResponseCode(201)
        request.setHeader(b"Content-Type", b"application/json; charset=utf-8")
        request.setHeader(b"Location", f"{path}?ids={mid}".encode())
        return json.dumps({"resources": [f"{path}/{mid}"]}).encode()


def _config() -> Config:
    return parse(
        {
            "storage": {"url": "memory://"},
            "listeners": [{"protocol": "http", "endpoint": "tcp:0"}],
            "server": {"workers": 1},
        }
    )


def _connect(factory: Any) -> tuple[Any, StringTransport]:
    protocol = factory.buildProtocol(CLIENT)
    transport = StringTransport(hostAddress=SERVER, peerAddress=CLIENT)
    protocol.makeConnection(transport)
    return protocol, transport


def _stepper(protocol: Any, transport: StringTransport) -> Callable[[], bytes]:
    """One request through ``protocol``: what it answered."""

    def step() -> bytes:
        protocol.dataReceived(REQUEST)
        out = transport.value()
        transport.clear()
        return out

    return step


def bare() -> Callable[[], bytes]:
    site = server.Site(_Created())
    return _stepper(*_connect(site))


def one_process(clock: Clock) -> Callable[[], bytes]:
    config = _config()
    gateway = Gateway(clock, config)
    gateway.core.start()
    ((_, factory),) = listener_factories(
        clock, config, gateway.protocols, gateway.metrics, gateway.budget
    )
    return _stepper(*_connect(factory))


def worker_and_hub(clock: Clock) -> Callable[[], bytes]:
    config = _config()
    hub = Gateway(clock, config)
    hub.core.start()
    targets = {
        SERVICE: (hub.core, SERVICE_METHODS),
        TENANTS: (ITenantStore(hub.store, None), TENANT_METHODS),
        METRICS: (MetricsSink(hub.metrics, hub.status.rates), frozenset({"record"})),
    }
    worker_end, hub_end = WorkerChannel(), HubChannel(targets)
    up, down = StringTransport(), StringTransport()
    worker_end.makeConnection(up)
    hub_end.makeConnection(down)

    def pump() -> None:
        while up.value() or down.value():
            calls, answers = up.value(), down.value()
            up.clear()
            down.clear()
            if calls:
                hub_end.dataReceived(calls)
            if answers:
                worker_end.dataReceived(answers)

    service = RemoteQueueService(worker_end, clock, config.limits, default_options(config))
    tenants = RemoteTenantStore(worker_end)
    auth = make_authenticator(clock, config, tenants)
    _, guard, _ = make_guard(clock, config, service, tenants, auth)
    metrics = ForwardingMetrics(clock, lambda *batch: worker_end.call(METRICS, "record", batch, {}))
    protocols = registry.Protocols(clock, guard, auth, config.protocols, metrics)
    metrics.rates = protocols.rates
    budget = ConnectionBudget(clock, config.connections, 1000)
    ((_, factory),) = listener_factories(clock, config, protocols, metrics, budget)
    protocol, transport = _connect(factory)
    sent = 0

    def step() -> bytes:
        nonlocal sent
        protocol.dataReceived(REQUEST)
        sent += 1
        if sent % 4 == 0:
            pump()
        if sent % 1000 == 0:
            metrics.flush()  # a worker sends its metrics once a second
            pump()
        out = transport.value()
        transport.clear()
        return out

    return step


def cpu_per_request(step: Callable[[], bytes], requests: int, rounds: int) -> float:
    """CPU µs per request of ``step``, the best of ``rounds``."""
    best = float("inf")
    for _ in range(rounds):
        start = time.process_time()
        for _ in range(requests):
            step()
        best = min(best, (time.process_time() - start) / requests * 1e6)
    return best


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--requests", type=int, default=3000, help="requests per round")
    parser.add_argument("--rounds", type=int, default=9, help="keep the best of these")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    clock = Clock()
    clock.advance(time.time())
    rows = []
    base = 0.0
    for label, make in (
        ("bare twisted.web resource, 201 + the same JSON", bare),
        ("qgate, one process (memory storage)", lambda: one_process(clock)),
        ("qgate, worker + hub over the channel (both ends)", lambda: worker_and_hub(clock)),
    ):
        step = make()
        first = step()
        if label.startswith("qgate, one") and not first.startswith(b"HTTP/1.1 201"):
            raise SystemExit(f"unexpected answer: {first[:200]!r}")
        us = cpu_per_request(step, args.requests, args.rounds)
        base = base or us
        rows.append((label, us))
        print(f"  {label}: {us:.1f} µs", flush=True)
    print("\n| POST 1 message, CPU per request | µs | x bare |\n|---|---|---|")
    for label, us in rows:
        print(f"| {label} | {us:.1f} | {us / base:.2f}x |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
