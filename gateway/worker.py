"""``python -m qgate.gateway.worker``: one worker of ``qgate serve``, started by the hub.

It inherits the hub's listening sockets (descriptors 4, 5, ... in the order of
``[[listeners]]``) and its channel to the hub (descriptor 3), accepts connections and runs
the protocols exactly as one process does, against the hub's core through a proxy. It
stops on SIGTERM (stop accepting, let calls in flight answer, flush) and when the hub goes
away. This module is an entry point: it imports the global reactor.
"""

from __future__ import annotations

import argparse
import os
import signal
import socket
import sys
from collections.abc import Sequence
from typing import Any

from twisted.internet import defer, protocol, task
from twisted.internet.interfaces import IListeningPort
from twisted.logger import Logger

from qgate.core.shared_limits import WorkerShare
from qgate.gateway import registry
from qgate.gateway.app import (
    FLUSH_GRACE,
    default_options,
    listener_factories,
    make_authenticator,
    make_guard,
)
from qgate.gateway.config import Config, ConfigError, load
from qgate.gateway.connections import ConnectionBudget, fd_budget, raise_fd_limit
from qgate.gateway.hub import CHANNEL_FD, FIRST_LISTENER_FD, served_by_workers
from qgate.gateway.metrics import ForwardingMetrics
from qgate.gateway.proxy import RemoteQueueService, RemoteTenantStore
from qgate.gateway.rpc import LIMITS, METRICS, WorkerChannel

log = Logger()

#: Seconds a stopping worker waits for the hub to answer its calls in flight.
DRAIN_TIMEOUT = 1.0


def accept_one_at_a_time(port: Any) -> None:
    """Make ``port`` accept at most one connection each time the reactor says it is
    readable. Every worker waits on the same listening socket and all are woken; Twisted's
    port takes up to a hundred queued connections at once (more after a full read), so the
    first worker to run took a whole burst (wrk's 16 connections: one worker busy, the other
    idle, measured). One at a time, the workers take turns, and a busy one (a longer
    reactor turn) takes fewer."""
    read = port.doRead

    def do_read() -> Any:
        port.numberAccepts = 1
        return read()

    port.doRead = do_read


class Worker:
    """The protocols of one worker, in front of the hub's core."""

    def __init__(
        self,
        reactor: Any,
        config: Config,
        families: Sequence[int],
        channel_fd: int = CHANNEL_FD,
        first_listener_fd: int = FIRST_LISTENER_FD,
        index: int = 0,
    ) -> None:
        self.reactor = reactor
        self._stopping = False
        self.channel = WorkerChannel(on_lost=self._hub_gone)
        channel = self.channel
        reactor.adoptStreamConnection(
            channel_fd, socket.AF_UNIX, protocol.Factory.forProtocol(lambda: channel)
        )
        os.close(channel_fd)
        self.service = RemoteQueueService(
            self.channel, reactor, config.limits, default_options(config)
        )
        tenants = RemoteTenantStore(self.channel)
        self.auth = make_authenticator(reactor, config, tenants)
        # Tenants are bounded here, where their connections and sessions are: rates and
        # live counts synced with the hub's every 0.1 s (held for the tenant across every
        # worker), stored counts and quotas from the hub's storage.
        self.share = WorkerShare(
            reactor, lambda report: channel.call(LIMITS, "sync", (index, report), {})
        )
        _, self.guard, self.watch = make_guard(
            reactor, config, self.service, tenants, self.auth, self.share
        )
        self.watch.start()
        self.share.start()
        self.metrics = ForwardingMetrics(
            reactor, lambda *batch: channel.call(METRICS, "record", batch, {})
        )
        self.metrics.start()
        protocols = registry.Protocols(
            reactor, self.guard, self.auth, config.protocols, self.metrics
        )
        # Each worker has its own descriptors: the caps of [connections] hold per worker.
        budget = ConnectionBudget(
            reactor, config.connections, fd_budget(config.connections, raise_fd_limit())
        )
        self.metrics.rates = protocols.rates  # the console's per-queue rates, to the hub
        built = listener_factories(
            reactor, config, protocols, self.metrics, budget, served_by_workers
        )
        self.listeners = [state for state, _ in built]
        if len(families) != len(built):
            raise ConfigError("the hub and the worker read different [[listeners]]")
        self.ports: list[IListeningPort] = []
        factories = [factory for _, factory in built]
        for i, (family, factory) in enumerate(zip(families, factories, strict=True)):
            fd = first_listener_fd + i
            port = reactor.adoptStreamPort(fd, socket.AddressFamily(family), factory)
            accept_one_at_a_time(port)
            self.ports.append(port)
            os.close(fd)  # adopted as a duplicate

    def reload(self) -> None:
        """SIGHUP (passed on by the hub): this worker's TLS listeners load their
        certificates again; open connections keep theirs."""
        for state in self.listeners:
            if state.certificates is None:
                continue
            try:
                state.certificates.load()
            except ConfigError as e:
                log.error("{listener}: certificates not reloaded: {e}", listener=state.name(), e=e)

    def _hub_gone(self) -> None:
        """The hub died (a stopping hub outlives its workers): without it nothing can be
        stored or read, so this worker ends now, as the whole server would have in one
        process. Its clients see their connections drop, not answers made up here."""
        if not self._stopping:
            log.warn("qgate worker: the hub is gone; exiting")
            os._exit(1)

    async def stop(self) -> None:
        """Stop accepting; give calls in flight (long polls the hub is ending) a moment to
        answer; flush the last responses."""
        self._stopping = True
        self.metrics.stop()
        self.watch.stop()
        self.share.stop()
        await defer.gatherResults([defer.maybeDeferred(p.stopListening) for p in self.ports])
        self.ports = []
        waited = 0.0
        while self.channel.pending and waited < DRAIN_TIMEOUT:
            await task.deferLater(self.reactor, 0.02, lambda: None)
            waited += 0.02
        await task.deferLater(self.reactor, FLUSH_GRACE, lambda: None)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="qgate-worker")
    parser.add_argument("--index", type=int, default=0)
    parser.add_argument("--families", default="", help="address family of each listener")
    parser.add_argument("-c", "--config")
    parser.add_argument("--log-level", default=None)
    args = parser.parse_args(argv)
    from qgate.gateway.cli import start_logging

    config = load(args.config)
    start_logging(config, args.log_level)
    families = [int(f) for f in args.families.split(",") if f]

    from twisted.internet import reactor

    worker = Worker(reactor, config, families, index=args.index)
    hup = reactor.callFromThread  # type: ignore[attr-defined]
    signal.signal(signal.SIGHUP, lambda *_: hup(worker.reload))
    reactor.addSystemEventTrigger(
        "before", "shutdown", lambda: defer.Deferred.fromCoroutine(worker.stop())
    )
    reactor.run()  # type: ignore[attr-defined]
    return 0


if __name__ == "__main__":
    signal.signal(signal.SIGPIPE, signal.SIG_DFL)
    sys.exit(main())
