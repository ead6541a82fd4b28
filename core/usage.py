"""What a tenant holds, counted cheaply: stored messages and bytes, queues, push
subscriptions (``IQueueStorage.tenant_usage`` counts them exactly; ``UsageCounters``
keeps a running estimate so that a publish does not count anything in storage).

The estimate moves with what this process sees (a publish adds its messages and bytes
before it is stored, and gives them back if it fails; acks, deletes and pops take theirs
off, bytes at the tenant's average size) and is made exact again by reading storage:
the first time a tenant is seen, whenever the estimate would refuse a call (so expiry,
``drop_oldest`` and purges never cause a refusal), and every ``resync`` seconds while a
tenant is above ``NEAR`` of a quota (so what other processes store is seen in time). A
tenant far from its quotas costs nothing but dictionary updates; a tenant near one costs
one aggregate query per ``resync`` seconds, and concurrent callers share one count.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass

from twisted.internet.defer import Deferred
from twisted.internet.interfaces import IReactorTime

#: Seconds between exact counts of a tenant that is near a quota ...
RESYNC_SECONDS = 1.0
#: ... that is, above this share of it.
NEAR = 0.9
#: Tenants whose estimates are kept; past it, the least recently counted are dropped.
MAX_TENANTS = 100_000


@dataclass(frozen=True, slots=True)
class TenantUsage:
    """What a tenant holds in one store, or in all of them."""

    queues: int = 0
    messages: int = 0
    bytes: int = 0
    subscriptions: int = 0

    def __add__(self, other: TenantUsage) -> TenantUsage:
        return TenantUsage(
            self.queues + other.queues,
            self.messages + other.messages,
            self.bytes + other.bytes,
            self.subscriptions + other.subscriptions,
        )


class _Count:
    __slots__ = ("queues", "messages", "bytes", "subscriptions", "synced_at")

    def __init__(self, usage: TenantUsage, now: float) -> None:
        self.queues = usage.queues
        self.messages = usage.messages
        self.bytes = usage.bytes
        self.subscriptions = usage.subscriptions
        self.synced_at = now


class UsageCounters:
    """Running per-tenant counts of stored messages and bytes, queues and push
    subscriptions, over ``count`` (an exact count from storage)."""

    def __init__(
        self,
        clock: IReactorTime,
        count: Callable[[str], Awaitable[TenantUsage]],
        resync: float = RESYNC_SECONDS,
    ) -> None:
        self._clock = clock
        self._count = count
        self._resync = resync
        self._tenants: dict[str, _Count] = {}
        self._counting: dict[str, list[Deferred[_Count]]] = {}

    async def exact(self, tenant: str) -> _Count:
        """Count the tenant in storage now, and keep that as its estimate (callers that
        ask while a count is under way get that count)."""
        waiting = self._counting.get(tenant)
        if waiting is not None:
            d: Deferred[_Count] = Deferred()
            waiting.append(d)
            return await d
        waiters: list[Deferred[_Count]] = []
        self._counting[tenant] = waiters
        try:
            usage = await self._count(tenant)
        except BaseException as e:
            del self._counting[tenant]
            for d in waiters:
                d.errback(e)
            raise
        del self._counting[tenant]
        found = _Count(usage, self._clock.seconds())
        if tenant not in self._tenants and len(self._tenants) >= MAX_TENANTS:
            self._tenants.pop(next(iter(self._tenants)))
        self._tenants[tenant] = found
        for d in waiters:
            d.callback(found)
        return found

    async def current(self, tenant: str) -> _Count:
        """The tenant's estimate (counted first if it has none yet)."""
        found = self._tenants.get(tenant)
        if found is None:
            found = await self.exact(tenant)
        return found

    def stale(self, count: _Count) -> bool:
        return self._clock.seconds() - count.synced_at >= self._resync

    def counting(self, tenant: str) -> bool:
        """Whether an exact count of the tenant is under way."""
        return tenant in self._counting

    def known(self, tenant: str) -> _Count | None:
        return self._tenants.get(tenant)

    def add_messages(self, tenant: str, messages: int, nbytes: int) -> None:
        found = self._tenants.get(tenant)
        if found is not None:
            found.messages = max(0, found.messages + messages)
            found.bytes = max(0, found.bytes + nbytes)

    def remove_messages(self, tenant: str, messages: int) -> None:
        """``messages`` left the tenant's queues (acked, deleted, popped): their bytes
        are taken off at the tenant's average message size."""
        found = self._tenants.get(tenant)
        if found is not None and messages:
            average = found.bytes // found.messages if found.messages else 0
            found.messages = max(0, found.messages - messages)
            found.bytes = max(0, found.bytes - average * messages) if found.messages else 0

    def add_queues(self, tenant: str, queues: int) -> None:
        found = self._tenants.get(tenant)
        if found is not None:
            found.queues = max(0, found.queues + queues)

    def add_subscriptions(self, tenant: str, subscriptions: int) -> None:
        found = self._tenants.get(tenant)
        if found is not None:
            found.subscriptions = max(0, found.subscriptions + subscriptions)

    def forget(self, tenant: str) -> None:
        """Count the tenant again next time (its queues were deleted or purged)."""
        self._tenants.pop(tenant, None)
