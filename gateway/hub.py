"""``qgate serve`` with several workers: the hub process and the workers it runs.

The hub owns what must be one: storage (SQLite's one group-commit writer, the transient
queues in memory, the PostgreSQL connections), the one ``QueueService`` (so one queue
namespace, one wake-up registry, one claim table) and the listening sockets, which it
opens and never accepts on. Each worker (``gateway/worker.py``) inherits those sockets and
a channel to the hub, accepts connections, and runs the protocols against a proxy of the
core (``gateway/proxy.py``). A worker that dies is started again; its connections are
lost, and the messages it held come back when their leases end, as after any crash of a
client. ``docs/scaling.md`` says why it is built this way.
"""

from __future__ import annotations

import os
import socket
import sys
from collections.abc import Sequence
from typing import Any

from twisted.application import service
from twisted.internet import defer, protocol, task
from twisted.internet.error import CannotListenError, ProcessExitedAlready
from twisted.logger import Logger
from twisted.python.failure import Failure

from qgate.core.interfaces import ITenantStore
from qgate.core.shared_limits import HubShare
from qgate.gateway import tls
from qgate.gateway.app import Gateway, endpoint_type, server_endpoint, where
from qgate.gateway.config import Config, ConfigError, ListenerConfig
from qgate.gateway.metrics import MetricsSink
from qgate.gateway.proxy import SERVICE_METHODS, TENANT_METHODS
from qgate.gateway.rpc import LIMITS, METRICS, SERVICE, TENANTS, HubChannel
from qgate.gateway.status import ListenerState

log = Logger()

#: Endpoint types a worker can adopt (a listening socket of an address family); TLS is the
#: listener's ``tls`` table, wrapped in each worker.
SHAREABLE = ("tcp", "tcp6", "unix")
#: The worker's descriptor of its channel to the hub; listening sockets follow, in order.
CHANNEL_FD = 3
FIRST_LISTENER_FD = 4
#: Seconds the hub waits for a stopping worker before it kills it.
STOP_TIMEOUT = 20.0
#: Seconds before a dead worker is started again; doubled (up to MAX_RESTART_DELAY) while
#: workers die young, so a worker that cannot start does not spin.
RESTART_DELAY = 0.25
MAX_RESTART_DELAY = 10.0
#: A worker that lived this long died of something other than its start-up.
YOUNG = 5.0


def served_by_workers(listener: ListenerConfig) -> bool:
    """Workers serve the public protocols; the admin listener is the hub's own (it sees
    the storage, the writer and the core the operators ask about)."""
    return listener.protocol != "admin"


def check_shareable(config: Config) -> None:
    """ConfigError for a listener whose endpoint a worker cannot adopt."""
    for i, listener in enumerate(config.listeners):
        if not served_by_workers(listener):
            continue
        kind = endpoint_type(listener.endpoint)
        if kind not in SHAREABLE:
            raise ConfigError(
                f"listeners[{i}].endpoint: {kind!r} endpoints cannot be shared by workers; "
                "use tcp/tcp6/unix (with a [listeners.tls] table for TLS) or "
                "[server] workers = 1"
            )


class _Refuse(protocol.Factory):
    """The hub never accepts (it does not read its listening sockets); should a
    connection reach it anyway, it is closed."""

    noisy = False

    def buildProtocol(self, addr: Any) -> None:
        return None


class _Worker(protocol.ProcessProtocol):
    """One worker process, seen from the hub."""

    def __init__(self, hub: Hub, index: int) -> None:
        self.hub = hub
        self.index = index
        self.ended: defer.Deferred[None] = defer.Deferred()
        self.started_at = hub.reactor.seconds()
        self.pid: int | None = None

    def processEnded(self, reason: Failure) -> None:
        self.ended.callback(None)
        self.hub._ended(self, reason)


class Hub(Gateway):
    """Storage, the core and the listening sockets of ``count`` workers.

    A ``Gateway`` that does not serve its listeners itself: it is assembled the same way
    (so whatever the gateway builds around its core, the hub has too, and a bad TLS file
    stops start-up here, before any worker runs), then opens the listening sockets and
    hands them to the workers."""

    def __init__(
        self, reactor: Any, config: Config, count: int, worker_args: Sequence[str]
    ) -> None:
        check_shareable(config)
        super().__init__(reactor, config)
        #: The tenants' rates and live counts across the workers (``core.shared_limits``).
        self.share = HubShare(reactor)
        self.count = count
        #: Arguments of ``python -m qgate.gateway.worker`` (config file, log level).
        self.worker_args = list(worker_args)
        self._targets = {
            SERVICE: (self.core, SERVICE_METHODS),
            TENANTS: (ITenantStore(self.store, None), TENANT_METHODS),
            METRICS: (MetricsSink(self.metrics, self.status.rates), frozenset({"record"})),
            LIMITS: (self.share, frozenset({"sync"})),
        }
        self.status.workers = count
        #: The listening sockets the workers accept on, in ``[[listeners]]`` order.
        self.shared: list[Any] = []
        self.workers: dict[int, _Worker] = {}
        self.restarts = 0
        self._delay = RESTART_DELAY
        self._stopping = False

    def serves_itself(self, listener: ListenerConfig) -> bool:
        return not served_by_workers(listener)

    async def listen(self) -> None:
        """Open every listening socket (serving the admin one itself), start the core,
        start the workers."""
        self.core.start()
        self.watch.start()
        self.sampler.start()
        for component in self.components:  # the push dispatcher runs here, beside storage
            component.startService()
        own = iter(self._factories)
        states: list[ListenerState] = []
        for listener in self.config.listeners:
            factory: Any
            if served_by_workers(listener):
                endpoint, factory, state = server_endpoint(self.reactor, listener), _Refuse(), None
            else:
                state, endpoint, factory = next(own)
            try:
                port = await endpoint.listen(factory)
            except CannotListenError as e:
                raise ConfigError(
                    f"listeners: cannot listen on {listener.endpoint!r}: {e}"
                ) from None
            if state is None:
                port.stopReading()  # type: ignore[attr-defined]  # the workers accept, not us
                self.shared.append(port)
                # The workers serve it; its certificates are loaded here too, so status,
                # expiry metrics and reloads report what the workers serve.
                state = ListenerState(listener)
                if listener.tls is not None:
                    state.certificates = tls.ReloadableCertificates(listener.tls)
            states.append(state)
            self.status.listeners = states
            self._listening(state, port)
        for index in range(self.count):
            self._spawn(index)
        log.info(
            "qgate listening on {where} with {n} workers",
            where=where(self.config, self.ports),
            n=self.count,
        )

    def reload(self) -> list[dict[str, Any]]:
        """SIGHUP and ``qgate reload``: the hub's own TLS listeners here, and every
        worker's (they wrap TLS themselves) by passing the signal on."""
        for worker in self.workers.values():
            _signal(worker, "HUP")
        return super().reload()

    def _spawn(self, index: int) -> None:
        hub_end, worker_end = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
        fds: dict[int, int | str] = {1: 1, 2: 2, CHANNEL_FD: worker_end.fileno()}
        families = []
        for i, port in enumerate(self.shared):
            fds[FIRST_LISTENER_FD + i] = port.fileno()  # type: ignore[attr-defined]
            families.append(str(int(port.socket.family)))  # type: ignore[attr-defined]
        worker = _Worker(self, index)
        args = [
            sys.executable,
            "-m",
            "qgate.gateway.worker",
            "--index",
            str(index),
            "--families",
            ",".join(families),
            *self.worker_args,
        ]
        try:
            process = self.reactor.spawnProcess(
                worker, sys.executable, args, os.environ, childFDs=fds
            )
            worker.pid = process.pid
        finally:
            worker_end.close()
        factory = protocol.Factory.forProtocol(lambda: HubChannel(self._targets))
        self.reactor.adoptStreamConnection(hub_end.fileno(), socket.AF_UNIX, factory)
        hub_end.close()
        self.workers[index] = worker

    def _ended(self, worker: _Worker, reason: Failure) -> None:
        if self.workers.get(worker.index) is worker:
            del self.workers[worker.index]
            self.share.forget(worker.index)  # its connections are gone
        if self._stopping:
            return
        lived = self.reactor.seconds() - worker.started_at
        self._delay = RESTART_DELAY if lived > YOUNG else min(self._delay * 2, MAX_RESTART_DELAY)
        self.restarts += 1
        log.warn(
            "qgate worker {index} (pid {pid}) ended ({why}); starting it again in {delay}s",
            index=worker.index,
            pid=worker.pid,
            why=reason.getErrorMessage(),
            delay=self._delay,
        )
        self.reactor.callLater(self._delay, self._restart, worker.index)

    def _restart(self, index: int) -> None:
        if not self._stopping and index not in self.workers:
            self._spawn(index)

    def stopService(self) -> defer.Deferred[None]:
        return defer.Deferred.fromCoroutine(self.stop())

    async def stop(self) -> None:
        """Stop accepting, let every worker finish its connections, then commit and close
        storage."""
        self._stopping = True
        self.sampler.stop()
        self.watch.stop()
        await defer.gatherResults([defer.maybeDeferred(p.stopListening) for p in self.ports])
        self.ports = []
        workers = list(self.workers.values())
        for worker in workers:
            _signal(worker, "TERM")
        # Parked waits answer now (empty), so workers' long polls can finish.
        self.core.stop_waiting()
        ended = defer.gatherResults([w.ended for w in workers])
        timeout = self.reactor.callLater(STOP_TIMEOUT, _kill_all, workers)
        await ended
        if timeout.active():
            timeout.cancel()
        await defer.maybeDeferred(service.MultiService.stopService, self)
        running = [c for c in self.components if c.running]
        await defer.gatherResults([defer.maybeDeferred(c.stopService) for c in running])
        await self.core.stop()
        await task.deferLater(self.reactor, 0, lambda: None)
        log.info("qgate stopped")


def _kill_all(workers: list[_Worker]) -> None:
    for worker in workers:
        log.warn("qgate worker {index} did not stop in time; killed", index=worker.index)
        _signal(worker, "KILL")


def _signal(worker: _Worker, name: str) -> None:
    if worker.transport is None:
        return
    try:
        worker.transport.signalProcess(name)  # type: ignore[attr-defined]
    except (ProcessExitedAlready, OSError):
        pass  # it has ended already: nothing to tell it
