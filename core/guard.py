"""``TenantGuard``: the queue service as protocols see it, with every tenant bounded.

It wraps a ``QueueService`` and, before each call, checks the caller's key scope
(``core.principal``), its request and publish rates (``core.ratelimit``) and its quotas
(``core.quotas``: queues, stored messages and bytes, subscriptions and waiters,
connections), so every protocol enforces the same bounds and names the one it hit. A call
refused is refused whole, before anything is stored. What the service does is unchanged;
calls the guard does not know are passed straight through.

Counting: stored messages and bytes per tenant are an estimate kept by
``core.usage.UsageCounters`` (no count in storage per publish); connections, STOMP
subscriptions and long-poll waiters are counted live, in this process. In a worker of a
hub (``share``: ``core.shared_limits.WorkerShare``) the buckets and live counts are held
for the tenant across every worker, within the error that module states.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

from twisted.internet.defer import Deferred, fail
from twisted.internet.interfaces import IReactorTime
from twisted.logger import Logger
from twisted.python.failure import Failure
from zope.interface import implementer

from qgate.core import shared_limits
from qgate.core.errors import QGateError, QueueNotFound, QuotaExceeded, RateLimited
from qgate.core.interfaces import IQueueService, ITenantStore
from qgate.core.model import NewMessage
from qgate.core.principal import CONSUME, MANAGE, PUBLISH, Principal
from qgate.core.quotas import Quotas, TenantQuotas
from qgate.core.ratelimit import RateLimiter
from qgate.core.sessions import ITenantSessions, TenantSession
from qgate.core.shared_limits import CONNECTIONS, SUBSCRIPTIONS, WorkerShare
from qgate.core.usage import NEAR, UsageCounters

log = Logger()

#: Calls any operation of a scope allows (reading a queue's description, or creating it
#: on first use as a publish or a subscription would), on the queues the scope names.
ANY = "any"


#: Where ``wait`` is among the positional arguments after (tenant, name).
_WAIT_AT = {"claim": 3, "observe": 6, "pop_messages": 1}


def _scope_check(tenant: str, op: str, name: str | None) -> None:
    if type(tenant) is Principal and not tenant.scope.unlimited:
        if op == ANY:
            tenant.scope.check_queue(name)
        else:
            tenant.scope.check(op, name)


def _simple(method: str, op: str) -> Callable[..., Deferred[Any]]:
    """A pass-through call on one queue, guarded by scope and request rate."""

    def call(self: TenantGuard, tenant: str, name: str, *args: Any, **kwargs: Any) -> Any:
        try:
            self.enter(tenant, op, name)
        except QGateError as e:
            return fail(e)
        return getattr(self.service, method)(tenant, name, *args, **kwargs)

    call.__name__ = method
    call.__doc__ = f"``IQueueService.{method}``, for a caller allowed to {op} the queue."
    return call


@implementer(IQueueService, ITenantSessions)
class TenantGuard:
    """The bounded queue service (see the module's docstring)."""

    def __init__(
        self,
        service: Any,
        clock: IReactorTime | None = None,
        quotas: TenantQuotas | None = None,
        tenants: ITenantStore | None = None,
        share: WorkerShare | None = None,
    ) -> None:
        self.service = service
        self.clock = clock or service.clock
        self.limits = service.limits
        self.default_options = service.default_options
        self.quotas = quotas or TenantQuotas()
        self.usage = UsageCounters(self.clock, service.tenant_usage)
        self._tenants = tenants
        self._share = share
        self._connections: dict[str, int] = {}
        self._subscriptions: dict[str, int] = {}
        self._publishes: RateLimiter
        self._requests: RateLimiter
        if share is None:
            self._publishes = RateLimiter(self.clock)
            self._requests = RateLimiter(self.clock)
        else:
            self._publishes = share.limiters[shared_limits.PUBLISH]
            self._requests = share.limiters[shared_limits.REQUEST]
            share.count_in(CONNECTIONS, self._connections)
            share.count_in(SUBSCRIPTIONS, self._subscriptions)
        self._by_key: dict[str, set[TenantSession]] = {}

    def __getattr__(self, name: str) -> Any:
        # start, stop, notify, waiting, reap, ping, parse_schema, ...: the service's own.
        return getattr(self.service, name)

    # -- the checks every call makes ------------------------------------------------------

    def enter(self, tenant: str, op: str, name: str | None) -> None:
        """Scope, then the request rate: a principal's first call is its request (one
        authentication, one request); a connection's calls are not requests."""
        _scope_check(tenant, op, name)
        if type(tenant) is Principal:
            if tenant.session is not None or tenant.counted:
                return
            tenant.counted = True
        q = self.quotas.of(tenant)
        wait = self._requests.take(tenant, q.request_rate, q.request_burst)
        if wait:
            raise RateLimited("request_rate", q.request_rate, wait)

    def of(self, tenant: str) -> Quotas:
        return self.quotas.of(tenant)

    # -- queues ---------------------------------------------------------------------------

    get_queue = _simple("get_queue", ANY)
    queue_stats = _simple("queue_stats", ANY)
    get_schema = _simple("get_schema", ANY)
    update_queue = _simple("update_queue", MANAGE)
    set_schema = _simple("set_schema", MANAGE)
    clear_schema = _simple("clear_schema", MANAGE)
    get_subscription = _simple("get_subscription", MANAGE)
    list_subscriptions = _simple("list_subscriptions", MANAGE)
    update_subscription = _simple("update_subscription", MANAGE)

    def create_queue(self, tenant: str, name: str, *args: Any, **kwargs: Any) -> Deferred[Any]:
        try:
            self.enter(tenant, ANY, name)
        except QGateError as e:
            return fail(e)
        return Deferred.fromCoroutine(self._create_queue(tenant, name, *args, **kwargs))

    async def _create_queue(self, tenant: str, name: str, *args: Any, **kwargs: Any) -> Any:
        limit = self.of(tenant).max_queues
        if limit:
            count = await self.usage.current(tenant)
            if count.queues >= limit:
                try:
                    return await self.service.get_queue(tenant, name), False
                except QueueNotFound:
                    pass
                count = await self.usage.exact(tenant)
                if count.queues >= limit:
                    raise QuotaExceeded("max_queues", limit, f"tenant has {count.queues} queues")
        queue, created = await self.service.create_queue(tenant, name, *args, **kwargs)
        if created:
            self.usage.add_queues(tenant, 1)
        return queue, created

    def delete_queue(self, tenant: str, name: str) -> Deferred[bool]:
        try:
            self.enter(tenant, MANAGE, name)
        except QGateError as e:
            return fail(e)
        return self.service.delete_queue(tenant, name).addCallback(self._recount, tenant)

    def purge_queue(self, tenant: str, name: str) -> Deferred[int]:
        try:
            self.enter(tenant, MANAGE, name)
        except QGateError as e:
            return fail(e)
        return self.service.purge_queue(tenant, name).addCallback(self._recount, tenant)

    def _recount(self, result: Any, tenant: str) -> Any:
        self.usage.forget(tenant)
        return result

    def list_queues(self, tenant: str, marker: str | None = None, limit: int = 10) -> Any:
        try:
            self.enter(tenant, ANY, None)
        except QGateError as e:
            return fail(e)
        d = self.service.list_queues(tenant, marker, limit)
        if type(tenant) is Principal and tenant.scope.queues:
            scope = tenant.scope
            d.addCallback(lambda found: [q for q in found if scope.allows_queue(q.name)])
        return d

    # -- messages -------------------------------------------------------------------------

    def publish(
        self, tenant: str, name: str, messages: Sequence[NewMessage], create: bool = True
    ) -> Deferred[list[str]]:
        try:
            self.enter(tenant, PUBLISH, name)
            q = self.of(tenant)
            n = len(messages)
            if type(tenant) is Principal and tenant.session is not None:
                # A connection is slowed down, never refused (it asks publish_delay).
                self._publishes.spend(tenant, q.publish_rate, q.publish_burst, n)
            else:
                wait = self._publishes.take(tenant, q.publish_rate, q.publish_burst, n)
                if wait:
                    raise RateLimited("publish_rate", q.publish_rate, wait)
        except QGateError as e:
            return fail(e)
        nbytes = len(messages[0].body) if n == 1 else sum(len(m.body) for m in messages)
        count = self.usage.known(tenant)
        if count is None or self._over(q, count.messages + n, count.bytes + nbytes) is not None:
            return Deferred.fromCoroutine(self._publish_counted(tenant, name, messages, create))
        if self._near(q, count.messages + n, count.bytes + nbytes) and self.usage.stale(count):
            self._resync(tenant)  # near a quota: count exactly, in the background
        return self._publish(tenant, name, messages, create, n, nbytes)

    @staticmethod
    def _over(q: Quotas, messages: int, nbytes: int) -> QuotaExceeded | None:
        if q.max_messages and messages > q.max_messages:
            return QuotaExceeded(
                "max_messages", q.max_messages, f"storing this would make {messages} messages"
            )
        if q.max_bytes and nbytes > q.max_bytes:
            return QuotaExceeded(
                "max_bytes", q.max_bytes, f"storing this would make {nbytes} bytes"
            )
        return None

    @staticmethod
    def _near(q: Quotas, messages: int, nbytes: int) -> bool:
        return bool(
            (q.max_messages and messages > NEAR * q.max_messages)
            or (q.max_bytes and nbytes > NEAR * q.max_bytes)
        )

    def _resync(self, tenant: str) -> None:
        if self.usage.counting(tenant):
            return
        d = Deferred.fromCoroutine(self.usage.exact(tenant))
        d.addErrback(lambda f: log.failure("counting tenant {tenant} failed", f, tenant=tenant))

    async def _publish_counted(
        self, tenant: str, name: str, messages: Sequence[NewMessage], create: bool
    ) -> list[str]:
        """The careful way: count exactly when the estimate is missing or says no."""
        q = self.of(tenant)
        n, nbytes = len(messages), sum(len(m.body) for m in messages)
        count = await self.usage.current(tenant)
        refused = self._over(q, count.messages + n, count.bytes + nbytes)
        if refused is not None and self.usage.stale(count):
            count = await self.usage.exact(tenant)
            refused = self._over(q, count.messages + n, count.bytes + nbytes)
        if refused is not None:
            raise refused
        result: list[str] = await self._publish(tenant, name, messages, create, n, nbytes)
        return result

    def _publish(
        self,
        tenant: str,
        name: str,
        messages: Sequence[NewMessage],
        create: bool,
        n: int,
        nbytes: int,
    ) -> Deferred[list[str]]:
        # Reserved now, given back if the publish fails: concurrent publishes see it.
        self.usage.add_messages(tenant, n, nbytes)
        d: Deferred[list[str]] = self.service.publish(tenant, name, messages, create=False)
        if d.called and not isinstance(d.result, Failure):
            return d  # stored already (memory): no errback to chain
        return d.addErrback(self._publish_failed, tenant, name, messages, create, n, nbytes)

    def _publish_failed(
        self,
        failure: Failure,
        tenant: str,
        name: str,
        messages: Sequence[NewMessage],
        create: bool,
        n: int,
        nbytes: int,
    ) -> Any:
        """Give the reservation back; a publish to a missing queue creates it (within the
        queue quota) and tries again."""
        self.usage.add_messages(tenant, -n, -nbytes)
        if not (create and failure.check(QueueNotFound)):
            return failure

        async def again() -> list[str]:
            await self._create_queue(tenant, name)
            self.usage.add_messages(tenant, n, nbytes)
            try:
                ids: list[str] = await self.service.publish(tenant, name, messages)
            except BaseException:
                self.usage.add_messages(tenant, -n, -nbytes)
                raise
            return ids

        return Deferred.fromCoroutine(again())

    def publish_delay(self, tenant: str) -> float:
        """Seconds until ``tenant`` may publish again (0: now): the debt of its bucket."""
        q = self.of(tenant)
        return self._publishes.debt(tenant, q.publish_rate, q.publish_burst)

    def _taken(self, result: Any, tenant: str) -> Any:
        self.usage.remove_messages(tenant, len(result))
        return result

    def ack(self, tenant: str, name: str, claim_id: str, ids: Sequence[str]) -> Any:
        try:
            self.enter(tenant, CONSUME, name)
        except QGateError as e:
            return fail(e)
        return self.service.ack(tenant, name, claim_id, ids).addCallback(self._taken, tenant)

    def delete_messages(self, tenant: str, name: str, *args: Any, **kwargs: Any) -> Any:
        try:
            self.enter(tenant, CONSUME, name)
        except QGateError as e:
            return fail(e)
        d = self.service.delete_messages(tenant, name, *args, **kwargs)
        return d.addCallback(self._taken, tenant)

    get_messages = _simple("get_messages", CONSUME)
    get_message = _simple("get_message", CONSUME)
    get_claim = _simple("get_claim", CONSUME)
    renew_claim = _simple("renew_claim", CONSUME)
    release = _simple("release", CONSUME)
    get_cursor = _simple("get_cursor", CONSUME)
    set_cursor = _simple("set_cursor", CONSUME)
    decode_bodies = _simple("decode_bodies", CONSUME)
    resolve_bodies = _simple("resolve_bodies", CONSUME)

    # -- waiting calls: a long poll holds a subscription slot while it waits ---------------

    def _waiting(self, method: str, tenant: str, name: str, args: Any, kwargs: Any) -> Any:
        try:
            self.enter(tenant, CONSUME, name)
            at = _WAIT_AT[method]
            wait = args[at] if len(args) > at else kwargs.get("wait", 0)
            waiter = bool(wait) and not (type(tenant) is Principal and tenant.session is not None)
            if waiter:
                self._hold_subscription(tenant)
        except QGateError as e:
            return fail(e)
        d = getattr(self.service, method)(tenant, name, *args, **kwargs)
        if waiter:
            d.addBoth(self._waited, tenant)
        if method == "pop_messages":
            d.addCallback(self._taken, tenant)
        return d

    def _waited(self, result: Any, tenant: str) -> Any:
        self._release_subscriptions(tenant, 1)
        return result

    def claim(self, tenant: str, name: str, *args: Any, **kwargs: Any) -> Any:
        return self._waiting("claim", tenant, name, args, kwargs)

    def observe(self, tenant: str, name: str, *args: Any, **kwargs: Any) -> Any:
        return self._waiting("observe", tenant, name, args, kwargs)

    def pop_messages(self, tenant: str, name: str, *args: Any, **kwargs: Any) -> Any:
        return self._waiting("pop_messages", tenant, name, args, kwargs)

    # -- subscriptions: push ones are stored, STOMP ones and waiters are live --------------

    def _others(self, kind: str, tenant: str) -> int:
        """What the other workers count (0 in one process)."""
        return 0 if self._share is None else self._share.others(kind, tenant)

    def _changed(self, kind: str, tenant: str) -> None:
        if self._share is not None:
            self._share.changed(kind, tenant)

    def _hold_subscription(self, tenant: str, stored: int | None = None) -> None:
        limit = self.of(tenant).max_subscriptions
        own = self._subscriptions.get(tenant, 0)
        live = own + self._others(SUBSCRIPTIONS, tenant)
        if limit:
            if stored is None:
                known = self.usage.known(tenant)
                stored = known.subscriptions if known is not None else 0
            if live + stored >= limit:
                raise QuotaExceeded(
                    "max_subscriptions",
                    limit,
                    f"tenant has {live + stored} subscriptions and waiters",
                )
        self._subscriptions[tenant] = own + 1
        self._changed(SUBSCRIPTIONS, tenant)

    def _release_subscriptions(self, tenant: str, count: int) -> None:
        left = self._subscriptions.get(tenant, 0) - count
        if left > 0:
            self._subscriptions[tenant] = left
        else:
            self._subscriptions.pop(tenant, None)
        self._changed(SUBSCRIPTIONS, tenant)

    def create_subscription(self, tenant: str, name: str, *args: Any, **kwargs: Any) -> Any:
        try:
            self.enter(tenant, MANAGE, name)
        except QGateError as e:
            return fail(e)
        return Deferred.fromCoroutine(self._create_subscription(tenant, name, args, kwargs))

    async def _create_subscription(self, tenant: str, name: str, args: Any, kwargs: Any) -> Any:
        limit = self.of(tenant).max_subscriptions
        if limit:
            stored = (await self.usage.exact(tenant)).subscriptions
            live = self._subscriptions.get(tenant, 0) + self._others(SUBSCRIPTIONS, tenant)
            if live + stored >= limit:
                raise QuotaExceeded(
                    "max_subscriptions",
                    limit,
                    f"tenant has {live + stored} subscriptions and waiters",
                )
        found = await self.service.create_subscription(tenant, name, *args, **kwargs)
        if found[1]:
            self.usage.add_subscriptions(tenant, 1)
        return found

    def delete_subscription(self, tenant: str, name: str, subscription_id: str) -> Any:
        try:
            self.enter(tenant, MANAGE, name)
        except QGateError as e:
            return fail(e)
        d = self.service.delete_subscription(tenant, name, subscription_id)
        return d.addCallback(self._recount, tenant)

    def purge_subscriptions(self, tenant: str, name: str) -> Any:
        try:
            self.enter(tenant, MANAGE, name)
        except QGateError as e:
            return fail(e)
        return self.service.purge_subscriptions(tenant, name).addCallback(self._recount, tenant)

    # -- connections (ITenantSessions) -----------------------------------------------------

    def open_session(
        self, tenant: str, on_revoked: Callable[[str], None] | None = None
    ) -> TenantSession:
        plain = str(tenant)
        limit = self.of(plain).max_connections
        own = self._connections.get(plain, 0)
        open_now = own + self._others(CONNECTIONS, plain)
        if limit and open_now >= limit:
            raise QuotaExceeded("max_connections", limit, f"tenant has {open_now} connections")
        session = TenantSession(tenant, on_revoked, self)
        self._connections[plain] = own + 1
        self._changed(CONNECTIONS, plain)
        key_id = getattr(tenant, "key_id", None)
        if key_id:
            self._by_key.setdefault(key_id, set()).add(session)
        return session

    def session_subscribe(self, session: TenantSession) -> None:
        self._hold_subscription(session.tenant)

    def session_unsubscribe(self, session: TenantSession, count: int) -> None:
        self._release_subscriptions(session.tenant, count)

    def session_closed(self, session: TenantSession) -> None:
        tenant = session.tenant
        left = self._connections.get(tenant, 0) - 1
        if left > 0:
            self._connections[tenant] = left
        else:
            self._connections.pop(tenant, None)
        self._changed(CONNECTIONS, tenant)
        key_id = session.principal.key_id
        if key_id and key_id in self._by_key:
            self._by_key[key_id].discard(session)
            if not self._by_key[key_id]:
                del self._by_key[key_id]

    def connections(self, tenant: str) -> int:
        """Open connections of ``tenant`` in this process (STOMP sessions, HTTP
        connections)."""
        return self._connections.get(tenant, 0)

    async def check_keys(self, live: frozenset[str] | None = None) -> int:
        """Close the sessions whose API key is revoked (the tenant watch calls this when
        keys changed, with the ids of the live keys it has just loaded: without them, each
        key is read); -> how many were closed."""
        if self._tenants is None and live is None:
            return 0
        closed = 0
        for key_id in list(self._by_key):
            if live is not None:
                if key_id in live:
                    continue
            elif self._tenants is not None and await self._tenants.find_key(key_id) is not None:
                continue
            for session in list(self._by_key.pop(key_id, ())):
                session.revoked("the API key of this connection was revoked")
                closed += 1
        return closed
