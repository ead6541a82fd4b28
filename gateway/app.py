"""Service assembly: config -> storage, core service, authenticator, listeners.

``Gateway`` is a Twisted ``MultiService``: ``qgate serve`` runs it under the reactor,
``twist qgate`` runs it as an application plugin. Stopping it stops accepting connections
first, then lets waiting requests answer, then commits pending writes, then closes storage.
"""

from __future__ import annotations

from typing import Any

from twisted.application import service
from twisted.internet import defer, endpoints, task, threads
from twisted.internet.error import CannotListenError
from twisted.internet.interfaces import IListeningPort, IProtocolFactory
from twisted.logger import Logger
from twisted.python.failure import Failure

from qgate.core.auth import APIKeys, IAuthenticator, TrustedTenant
from qgate.core.auth_throttle import ThrottledAuth
from qgate.core.guard import TenantGuard
from qgate.core.interfaces import IQueueStorage, ITenantStore
from qgate.core.metrics import DEAD_LETTERED, EXPIRED
from qgate.core.model import QueueOptions
from qgate.core.quotas import TenantQuotas
from qgate.core.service import QueueService
from qgate.core.shared_limits import WorkerShare
from qgate.core.tenant_watch import TenantWatch
from qgate.gateway import access, registry, tls
from qgate.gateway.config import Config, ConfigError, ListenerConfig
from qgate.gateway.connections import ConnectionBudget, LimitedFactory, fd_budget, raise_fd_limit
from qgate.gateway.metrics import ConnectionCounter, DepthSampler, PrometheusMetrics
from qgate.gateway.status import GatewayStatus, ListenerState, qgate_version
from qgate.storage._trim import HeapTrimmer
from qgate.storage.memory import MemoryStorage

log = Logger()

#: Seconds a stopping gateway gives open connections to flush their last responses.
FLUSH_GRACE = 0.2
#: Listen backlog of stream listeners whose endpoint names none (Twisted's default is 50,
#: short enough that bursts of connects wait for a SYN retransmit; the kernel caps it at
#: net.core.somaxconn).
LISTEN_BACKLOG = 1024
#: Endpoint types whose server parser takes ``backlog=``.
_BACKLOG_TYPES = ("tcp", "tcp6", "ssl", "unix")


def _fields(description: str) -> list[str]:
    """The ``:``-separated fields of an endpoint description (``\\:`` does not split)."""
    out, field, escaped = [], "", False
    for ch in description:
        if escaped:
            field += ch
            escaped = False
        elif ch == "\\":
            field += ch
            escaped = True
        elif ch == ":":
            out.append(field)
            field = ""
        else:
            field += ch
    out.append(field)
    return out


def endpoint_type(description: str) -> str:
    """The endpoint type of a description (``tcp``, ``unix``, ``ssl``...), lower case."""
    return _fields(description)[0].strip().lower()


def with_backlog(description: str, backlog: int = LISTEN_BACKLOG) -> str:
    """``description`` with ``backlog=`` added for tcp, tcp6, ssl and unix endpoints that
    do not set their own (which is kept); other endpoint types are left alone."""
    fields = _fields(description)
    if fields[0].strip().lower() not in _BACKLOG_TYPES:
        return description
    if any(f.startswith("backlog=") for f in fields[1:]):
        return description
    return f"{description}:backlog={backlog}"


def make_storage(reactor: Any, config: Config) -> IQueueStorage:
    """The durable store named by ``storage.url`` (schema upgraded separately)."""
    url = config.storage.url
    if url.startswith("memory:"):
        return MemoryStorage()
    from qgate.storage.sql.store import SQLStorage

    return SQLStorage(
        reactor,
        url,
        read_threads=config.storage.read_threads,
        synchronous=config.storage.synchronous,
        busy_timeout=config.storage.busy_timeout,
        bulk_slice=config.storage.bulk_slice,
    )


def default_options(config: Config) -> QueueOptions:
    """The options of queues created on first use (``[queues]``)."""
    return QueueOptions(
        durable=config.queues.durable,
        default_ttl=config.queues.default_ttl,
        default_delay=config.queues.default_delay,
    )


def make_core(reactor: Any, config: Config, store: IQueueStorage) -> QueueService:
    """The one queue service of a process (or of the hub of workers)."""
    trimmer = HeapTrimmer(reactor)
    return QueueService(
        reactor,
        store,
        MemoryStorage(
            max_bytes=config.queues.transient_max_bytes, trim=trimmer, discard=trimmer.discard
        ),
        limits=config.limits,
        default_options=default_options(config),
        wait_jitter=config.queues.wait_jitter,
    )


def make_guard(
    reactor: Any,
    config: Config,
    service: Any,
    tenants: ITenantStore,
    auth: Any,
    share: WorkerShare | None = None,
) -> tuple[TenantQuotas, TenantGuard, TenantWatch]:
    """What protocols call: ``service`` with every tenant bounded (core.guard), kept up
    to date with stored quotas and revocations by the tenant watch (start it). A worker
    passes its ``share`` of the tenants' rates and counts (``core.shared_limits``)."""
    quotas = TenantQuotas(config.quotas)
    guard = TenantGuard(service, reactor, quotas, tenants, share)
    return quotas, guard, TenantWatch(reactor, tenants, quotas, auth, guard)


def make_authenticator(reactor: Any, config: Config, store: Any) -> IAuthenticator:
    """The configured authenticator (``store`` provides or adapts to ITenantStore), its
    failures throttled per client address."""
    auth = config.auth
    inner: IAuthenticator
    if auth.mode == "keys":
        tenants = ITenantStore(store)
        inner = APIKeys(tenants, reactor, cache_seconds=auth.cache_seconds)
    else:
        inner = TrustedTenant(auth.default_tenant or None)
    return ThrottledAuth(inner, reactor, auth.failure_rate, auth.failure_burst)


def upgrade_now_blocking(config: Config) -> None:
    """Apply pending migrations right now (CLI commands, and before the reactor runs)."""
    if not config.storage.url.startswith("memory:"):
        from qgate.storage.sql.migrate import upgrade

        upgrade(config.storage.url)


def upgrade_schema(config: Config) -> defer.Deferred[None]:
    """Apply pending migrations, off the reactor thread."""
    return threads.deferToThread(upgrade_now_blocking, config)


def server_endpoint(reactor: Any, listener: ListenerConfig) -> Any:
    """The server endpoint of a listener (ConfigError when the description is bad)."""
    try:
        return endpoints.serverFromString(reactor, with_backlog(listener.endpoint))
    except (ValueError, TypeError, KeyError) as e:
        raise ConfigError(f"listeners: bad endpoint {listener.endpoint!r}: {e}") from None


def listener_factories(
    reactor: Any,
    config: Config,
    protocols: registry.Protocols,
    metrics: Any,
    budget: ConnectionBudget,
    which: Any = lambda listener: True,
) -> list[tuple[ListenerState, IProtocolFactory]]:
    """The state and protocol factory of each ``[[listeners]]`` entry ``which`` accepts,
    in order: access log as configured, TLS-wrapped (reloadable certificates) where the
    listener has a ``tls`` table, open connections counted in ``metrics``, and every
    connection admitted by ``budget`` (the caps of ``[connections]``) before anything
    else, TLS included: a handshake in progress holds a descriptor too."""
    out: list[tuple[ListenerState, IProtocolFactory]] = []
    for listener in config.listeners:
        if not which(listener):
            continue
        state = ListenerState(listener)
        factory = protocols.listener(listener.protocol, listener)
        access.configure(factory, listener.protocol, listener.access_log)
        if listener.tls is not None:
            state.certificates = tls.ReloadableCertificates(listener.tls)
            factory = tls.wrap(factory, state.certificates, reactor)
        factory = ConnectionCounter(factory, metrics.connections.labels(listener.protocol))
        factory = LimitedFactory(factory, budget, tls=listener.tls is not None)
        out.append((state, factory))
    return out


def where(config: Config, ports: list[IListeningPort]) -> str:
    """Where the listeners listen, for the one start-up line: ``http 127.0.0.1:8888
    (TLS), stomp /run/qgate.sock``."""
    out = []
    for listener, port in zip(config.listeners, ports, strict=True):
        host = port.getHost()
        name = getattr(host, "name", None)
        if isinstance(name, bytes):
            name = name.decode(errors="replace")
        place = name or f"{getattr(host, 'host', '')}:{getattr(host, 'port', '')}"
        out.append(f"{listener.protocol} {place}{' (TLS)' if listener.tls else ''}")
    return ", ".join(out)


class Gateway(service.MultiService):
    """Every listener of one qgate process, in front of one core service."""

    def __init__(self, reactor: Any, config: Config) -> None:
        super().__init__()
        self.reactor = reactor
        self.config = config
        self.store = make_storage(reactor, config)
        self.core = make_core(reactor, config, self.store)
        self.auth = make_authenticator(reactor, config, self.store)
        self.quotas, self.guard, self.watch = make_guard(
            reactor, config, self.core, ITenantStore(self.store), self.auth
        )
        self.metrics = PrometheusMetrics(qgate_version())
        writer = getattr(self.store, "writer", None)
        if writer is not None:
            writer.on_batch = self.metrics.on_batch
        self.core.on_expired(lambda n: self.metrics.count(EXPIRED, n))
        self.core.on_dead_lettered(lambda n: self.metrics.count(DEAD_LETTERED, n))
        self.status = GatewayStatus(reactor, self.core, self.store, self.metrics)
        self.fd_limit = raise_fd_limit()
        self.budget = ConnectionBudget(
            reactor, config.connections, fd_budget(config.connections, self.fd_limit)
        )
        self.protocols = registry.Protocols(
            reactor,
            self.guard,
            self.auth,
            config.protocols,
            self.metrics,
            self.status,
            admin=self.core,
        )
        self.status.rates = self.protocols.rates
        admin = config.settings("admin")
        self.sampler = DepthSampler(
            reactor,
            self.core,
            self.metrics.snapshot,
            admin.top_queues,
            admin.sample_interval,
            self.core.waiters,
        )
        self._factories = [
            (state, server_endpoint(reactor, state.config), factory)
            for state, factory in listener_factories(
                reactor, config, self.protocols, self.metrics, self.budget, self.serves_itself
            )
        ]
        self.status.listeners.extend(state for state, _, _ in self._factories)
        # Protocols without a listener (the push dispatcher): started with the core, stopped
        # after the listeners and before the core closes storage. With workers they run in
        # the hub, beside storage (gateway/hub.py), never in a worker.
        self.components = self.protocols.components()
        self.ports: list[IListeningPort] = []

    async def listen(self) -> None:
        """Start the core and every listener; a listener that cannot start fails it all."""
        self.core.start()
        self.watch.start()
        self.sampler.start()
        for component in self.components:
            component.startService()
        log.info(
            "at most {total} connections (descriptor limit {fds}), {per_ip} per address",
            total=self.budget.total,
            fds=self.fd_limit,
            per_ip=self.budget.max_per_ip or "any number",
        )
        for state, endpoint, factory in self._factories:
            listener = state.config
            try:
                port = await endpoint.listen(factory)
            except CannotListenError as e:
                state.error = str(e)
                raise ConfigError(
                    f"listeners: cannot listen on {listener.endpoint!r}: {e}"
                ) from None
            self._listening(state, port)
        log.info("qgate listening on {where} with 1 worker", where=where(self.config, self.ports))

    def serves_itself(self, listener: ListenerConfig) -> bool:
        """Whether this process accepts on ``listener`` (a lone gateway: every one)."""
        return True

    def _listening(self, state: ListenerState, port: IListeningPort) -> None:
        self.ports.append(port)
        host = port.getHost()
        state.up = True
        state.address = str(getattr(host, "port", host))
        self.metrics.listeners_up.labels(state.config.protocol).inc()
        self.status.certificates_served(state)

    def reload(self) -> list[dict[str, Any]]:
        """Load every TLS listener's certificates again; open connections keep theirs."""
        return self.status.reload()

    def startService(self) -> None:
        super().startService()
        d = defer.Deferred.fromCoroutine(self.listen())
        d.addErrback(self._failed_to_start)

    def _failed_to_start(self, failure: Failure) -> None:
        log.failure("qgate could not start", failure)
        self.reactor.stop()

    @defer.inlineCallbacks
    def stopService(self) -> Any:
        # Stop accepting first; waiting long polls answer now; then commit and close.
        self.sampler.stop()
        yield defer.gatherResults([defer.maybeDeferred(p.stopListening) for p in self.ports])
        self.ports = []
        for state, _, _ in self._factories:
            if state.up:
                self.metrics.listeners_up.labels(state.config.protocol).dec()
            state.up = False
        yield super().stopService()
        self.watch.stop()
        running = [c for c in self.components if c.running]
        yield defer.gatherResults([defer.maybeDeferred(c.stopService) for c in running])
        yield self.core.stop()
        yield task.deferLater(self.reactor, FLUSH_GRACE, lambda: None)
        log.info("qgate stopped")
