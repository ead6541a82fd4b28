"""Listener-wide caps on connections, for every protocol: a wrapping factory.

One ``ConnectionBudget`` per process counts open connections in total and per client IP
across every listener; each listener's factory is wrapped in a ``LimitedFactory``. A
connection over a cap is refused at once: the wrapped factory's ``overload_answer`` (an
HTTP 503 JSON, a STOMP ERROR frame) is written when it has one and the listener has no
TLS, then the connection is closed. Refusals are logged once per ``log_interval``, with how
many there were, never once per attempt.

At the total cap a new connection is not refused while a silent one is open: one that has
sent nothing since it was accepted (every client of qgate's protocols speaks first: a
request, a CONNECT frame, a TLS or WebSocket handshake). The oldest silent connection is
aborted and the new one admitted instead, so connections opened and left mute, from however
many addresses, cannot lock other clients out until their deadlines
(``[stomp] connect_timeout``, ``[http] head_timeout``) end them. Only when every open
connection has spoken is a new one refused.

The total cap stays below the process's descriptor limit (``RLIMIT_NOFILE``, raised from
its soft to its hard value at start-up by ``raise_fd_limit``) minus ``reserved_fds`` kept
for the database, files and the listening sockets: a process at its fd limit can no
longer accept anything, not even from a well-behaved tenant.

A connection whose input is held (its transport paused: STOMP flow control, a SUBSCRIBE
being set up, an HTTP request being answered) reads nothing, so the reactor would not see
its peer leave. While paused, the socket is polled every ``held_check`` seconds for a
hang-up (``POLLRDHUP``: the peer's FIN, even behind unread bytes; ``POLLHUP``/``POLLERR``:
a reset); a peer gone is aborted, so what it left buffered is never processed.
"""

from __future__ import annotations

import resource
import select
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from twisted.internet.interfaces import IAddress, IDelayedCall, IProtocolFactory, IReactorTime
from twisted.internet.protocol import Protocol
from twisted.logger import Logger
from twisted.protocols.policies import ProtocolWrapper, WrappingFactory
from twisted.python.failure import Failure

log = Logger()

_HANG_UP = getattr(select, "POLLRDHUP", 0) | select.POLLHUP | select.POLLERR


@dataclass(frozen=True)
class ConnectionsConfig:
    """The ``[connections]`` table: caps every listener shares (see docs/security.md)."""

    #: Open connections in total, every listener together; lowered to the descriptor
    #: limit minus ``reserved_fds`` when that is smaller.
    max_connections: int = 10_000
    #: Descriptors kept free of client connections (database, files, listening sockets).
    reserved_fds: int = 256
    #: Open connections per client IP address (0: no per-address cap; UNIX sockets have
    #: no address and are not counted per address).
    max_per_ip: int = 256
    #: Seconds between two log lines about refused connections.
    log_interval: float = 60.0
    #: Seconds between two checks whether the peer of a held (paused) connection is gone.
    held_check: float = 2.0

    def check(self) -> None:
        if self.max_connections < 1:
            raise ValueError("max_connections: must be at least 1")
        if self.reserved_fds < 16:
            raise ValueError("reserved_fds: must be at least 16")
        if self.max_per_ip < 0:
            raise ValueError("max_per_ip: must be 0 (no cap) or more")
        if not self.log_interval > 0:
            raise ValueError("log_interval: must be more than 0 seconds")
        if not self.held_check > 0:
            raise ValueError("held_check: must be more than 0 seconds")


def raise_fd_limit() -> int:
    """Raise the soft descriptor limit to the hard one; the soft limit now in force."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard == resource.RLIM_INFINITY or hard > soft:
        target = hard if hard != resource.RLIM_INFINITY else max(soft, 1 << 20)
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
            soft = target
        except (ValueError, OSError):
            pass  # some platforms cap it lower (macOS: OPEN_MAX); keep what we have
    return soft


def fd_budget(config: ConnectionsConfig, fd_limit: int) -> int:
    """The total connection cap: ``max_connections``, within ``fd_limit`` less the
    reserved descriptors (at least 1)."""
    return max(1, min(config.max_connections, fd_limit - config.reserved_fds))


def peer_gone(transport: Any) -> bool:
    """Whether the peer of a stream transport has hung up or reset, without reading."""
    try:
        fileno = transport.getHandle().fileno()
    except (AttributeError, OSError, ValueError):
        return False
    if fileno < 0:
        return False
    poller = select.poll()
    poller.register(fileno, _HANG_UP)
    return any(events & _HANG_UP for _, events in poller.poll(0))


class _RateLog:
    """A log line at most once per ``interval``, counting what it did not say."""

    def __init__(self, clock: IReactorTime, interval: float, what: str = "Refused") -> None:
        self.clock = clock
        self.interval = interval
        self.what = what
        self._next = 0.0
        self._quiet: dict[str, int] = {}

    def refused(self, why: str) -> None:
        self._quiet[why] = self._quiet.get(why, 0) + 1
        now = self.clock.seconds()
        if now < self._next:
            return
        self._next = now + self.interval
        quiet, self._quiet = self._quiet, {}
        for reason, count in sorted(quiet.items()):
            log.warn(
                "{what} {count} connection(s) in the last {interval:g} s: {reason}",
                what=self.what,
                count=count,
                interval=self.interval,
                reason=reason,
            )


class ConnectionBudget:
    """Open connections of the whole process, in total and per client address."""

    def __init__(
        self,
        clock: IReactorTime,
        config: ConnectionsConfig,
        total: int,
        probe: Callable[[Any], bool] = peer_gone,
    ) -> None:
        self.clock = clock
        self.config = config
        self.total = total
        self.max_per_ip = config.max_per_ip
        self.probe = probe
        self.open = 0
        self.by_ip: dict[str, int] = {}
        self.log = _RateLog(clock, config.log_interval)
        self.eviction_log = _RateLog(clock, config.log_interval, "Closed")
        #: Connections that have sent nothing yet, oldest first (a dict keeps its order).
        self.silent: dict[_Counted, None] = {}
        #: Silent connections aborted to make room, not yet gone (still counted in open).
        self.evicting = 0
        #: Silent connections aborted to make room, ever (for the log and tests).
        self.evicted = 0

    def admit(self, host: str | None) -> str | None:
        """Count a new connection from ``host``; why it is refused, None when admitted."""
        if self.open - self.evicting >= self.total and not self._evict_silent():
            why = f"the server holds its most connections ({self.total}, [connections])"
            self.log.refused(why)
            return why
        if host is not None and self.max_per_ip:
            count = self.by_ip.get(host, 0)
            if count >= self.max_per_ip:
                why = f"too many connections from one address (max_per_ip {self.max_per_ip})"
                self.log.refused(why)
                return why
            self.by_ip[host] = count + 1
        self.open += 1
        return None

    def _evict_silent(self) -> bool:
        """Abort the oldest connection that has sent nothing; whether there was one."""
        while self.silent:
            oldest = next(iter(self.silent))
            del self.silent[oldest]
            transport = oldest.transport
            if transport is None or oldest.evicted:
                continue
            oldest.evicted = True
            self.evicting += 1
            self.evicted += 1
            self.eviction_log.refused(
                f"silent since accepted, at the total cap ({self.total}): room for new ones"
            )
            transport.abortConnection()  # type: ignore[attr-defined]
            return True
        return False

    def release(self, host: str | None) -> None:
        self.open -= 1
        if host is not None and self.max_per_ip:
            count = self.by_ip.get(host, 0) - 1
            if count > 0:
                self.by_ip[host] = count
            else:
                self.by_ip.pop(host, None)


def _host(addr: IAddress | None) -> str | None:
    host = getattr(addr, "host", None)
    return host if isinstance(host, str) else None


class _Counted(ProtocolWrapper):
    """A connection counted in its budget until it ends, watched while it is paused.

    The watch outlives short resumes: a session that holds its input for every frame
    (one SUBSCRIBE at a time) pauses and resumes many times a second, and is still
    checked every ``held_check`` seconds while it was paused at all since the last check."""

    factory: LimitedFactory
    host: str | None = None
    #: Aborted by the budget to make room (``ConnectionBudget._evict_silent``).
    evicted = False
    _spoke = False
    _watch: IDelayedCall | None = None
    _paused = False
    _was_paused = False

    def makeConnection(self, transport: Any) -> None:
        self.factory.budget.silent[self] = None
        super().makeConnection(transport)

    def dataReceived(self, data: bytes) -> None:
        if not self._spoke:
            self._spoke = True
            self.factory.budget.silent.pop(self, None)
        super().dataReceived(data)

    def pauseProducing(self) -> None:
        self._paused = self._was_paused = True
        self.transport.pauseProducing()  # type: ignore[union-attr]
        if self._watch is None:
            self._schedule()

    def resumeProducing(self) -> None:
        self._paused = False
        self.transport.resumeProducing()  # type: ignore[union-attr]

    def _schedule(self) -> None:
        budget = self.factory.budget
        self._watch = budget.clock.callLater(budget.config.held_check, self._check)

    def _check(self) -> None:
        self._watch = None
        if not self._was_paused or self.transport is None:
            return
        self._was_paused = self._paused
        if self.factory.budget.probe(self.transport):
            # Its input is not read: the peer has left, or reset the connection.
            self.transport.abortConnection()  # type: ignore[attr-defined]
            return
        if self._paused:
            self._schedule()
        else:
            self._watch = None

    def _stop_watch(self) -> None:
        watch, self._watch = self._watch, None
        if watch is not None and watch.active():
            watch.cancel()

    def connectionLost(self, reason: Failure) -> None:  # type: ignore[override]
        self._stop_watch()
        budget = self.factory.budget
        budget.silent.pop(self, None)
        if self.evicted:
            budget.evicting -= 1
        budget.release(self.host)
        super().connectionLost(reason)


class _Refused(Protocol):
    """An over-cap connection: its refusal written (when the protocol has one), closed."""

    def __init__(self, answer: bytes) -> None:
        self.answer = answer

    def connectionMade(self) -> None:
        transport: Any = self.transport
        if self.answer:
            transport.write(self.answer)
        transport.loseConnection()

    def dataReceived(self, data: bytes) -> None:
        pass


class LimitedFactory(WrappingFactory[_Counted]):
    """``wrapped`` within ``budget``: connections over a cap are refused at once."""

    protocol = _Counted

    def __init__(self, wrapped: IProtocolFactory, budget: ConnectionBudget, *, tls: bool) -> None:
        super().__init__(wrapped)
        self.budget = budget
        self.tls = tls

    def buildProtocol(self, addr: IAddress | None) -> Any:
        host = _host(addr)
        why = self.budget.admit(host)
        if why is not None:
            return _Refused(b"" if self.tls else self._answer(why))
        try:
            wrapped = self.wrappedFactory.buildProtocol(addr)
        except BaseException:
            self.budget.release(host)
            raise
        if wrapped is None:
            self.budget.release(host)
            return None
        proto = _Counted(self, wrapped)
        proto.host = host
        return proto

    def _answer(self, why: str) -> bytes:
        answer = getattr(self.wrappedFactory, "overload_answer", None)
        if not callable(answer):
            return b""
        out = answer(why)
        return out if isinstance(out, bytes) else b""

    def registerProtocol(self, p: Any) -> None:
        pass  # counted in the budget; no per-factory set of every connection kept

    def unregisterProtocol(self, p: Any) -> None:
        pass
