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
from twisted.internet.interfaces import IListeningPort
from twisted.logger import Logger
from twisted.python.failure import Failure

from qgate.core.auth import APIKeys, IAuthenticator, TrustedTenant
from qgate.core.interfaces import IQueueStorage, ITenantStore
from qgate.core.model import QueueOptions
from qgate.core.service import QueueService
from qgate.gateway import registry, tls
from qgate.gateway.config import Config, ConfigError
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
    )


def make_authenticator(reactor: Any, config: Config, store: IQueueStorage) -> IAuthenticator:
    if config.auth.mode == "keys":
        tenants = ITenantStore(store)
        return APIKeys(tenants, reactor, cache_seconds=config.auth.cache_seconds)
    return TrustedTenant(config.auth.default_tenant or None)


def upgrade_now_blocking(config: Config) -> None:
    """Apply pending migrations right now (CLI commands, and before the reactor runs)."""
    if not config.storage.url.startswith("memory:"):
        from qgate.storage.sql.migrate import upgrade

        upgrade(config.storage.url)


def upgrade_schema(config: Config) -> defer.Deferred[None]:
    """Apply pending migrations, off the reactor thread."""
    return threads.deferToThread(upgrade_now_blocking, config)


class Gateway(service.MultiService):
    """Every listener of one qgate process, in front of one core service."""

    def __init__(self, reactor: Any, config: Config) -> None:
        super().__init__()
        self.reactor = reactor
        self.config = config
        self.store = make_storage(reactor, config)
        self.core = QueueService(
            reactor,
            self.store,
            MemoryStorage(),
            limits=config.limits,
            default_options=QueueOptions(
                durable=config.queues.durable,
                default_ttl=config.queues.default_ttl,
                default_delay=config.queues.default_delay,
            ),
        )
        self.auth = make_authenticator(reactor, config, self.store)
        self.protocols = registry.Protocols(reactor, self.core, self.auth, config.protocols)
        # Protocols without a listener (the push dispatcher): started with the core, stopped
        # after the listeners and before the core closes storage.
        self.components = self.protocols.components()
        self._factories = []
        for listener in config.listeners:
            factory = self.protocols.listener(listener.protocol, listener)
            if listener.tls is not None:
                factory = tls.wrap(factory, listener.tls, reactor)
            try:
                endpoint = endpoints.serverFromString(reactor, with_backlog(listener.endpoint))
            except (ValueError, TypeError, KeyError) as e:
                raise ConfigError(f"listeners: bad endpoint {listener.endpoint!r}: {e}") from None
            self._factories.append((listener, endpoint, factory))
        self.ports: list[IListeningPort] = []

    async def listen(self) -> None:
        """Start the core and every listener; a listener that cannot start fails it all."""
        self.core.start()
        for component in self.components:
            component.startService()
        for listener, endpoint, factory in self._factories:
            try:
                port = await endpoint.listen(factory)
            except CannotListenError as e:
                raise ConfigError(
                    f"listeners: cannot listen on {listener.endpoint!r}: {e}"
                ) from None
            self.ports.append(port)
            host = port.getHost()
            log.info(
                "{protocol} listening on {host}{tls}",
                protocol=listener.protocol,
                host=getattr(host, "port", host),
                tls=" (TLS)" if listener.tls else "",
            )

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
        yield defer.gatherResults([defer.maybeDeferred(p.stopListening) for p in self.ports])
        self.ports = []
        yield super().stopService()
        running = [c for c in self.components if c.running]
        yield defer.gatherResults([defer.maybeDeferred(c.stopService) for c in running])
        yield self.core.stop()
        yield task.deferLater(self.reactor, FLUSH_GRACE, lambda: None)
        log.info("qgate stopped")
