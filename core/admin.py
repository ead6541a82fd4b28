"""What operators do to a running qgate, as core calls: queues across tenants with their
depth, a peek at messages with their claim state, and moving dead-lettered messages back.

The admin listener (``protocols/admin``) and ``qgate queues ...`` call these through
``IQueueAdmin``, which ``QueueService`` provides through ``AdminCalls``. Depths come from
one ``queue_depths`` read per store (top ``limit`` queues by depth, the rest summed), so a
tenant with a million queues costs one bounded answer, never a million series.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, replace
from typing import Any

from zope.interface import Attribute, Interface

from qgate.core._ids import as_deferred
from qgate.core.errors import InvalidArgument
from qgate.core.limits import check_count, check_name, check_tenant
from qgate.core.model import Message, NewMessage

#: The tenant whose API keys open the admin listener (``qgate admin-key create``): a name
#: no client-made tenant has (``:`` is allowed in tenant names, and qgate reserves this one).
ADMIN_TENANT = "qgate:admin"
#: Most messages one move takes (a DLQ of more is moved in several calls).
MAX_MOVE = 1000


@dataclass(frozen=True)
class QueueDepth:
    """One queue's live messages by state, and when its oldest live message was created."""

    tenant: str
    name: str
    available: int = 0
    claimed: int = 0
    delayed: int = 0
    oldest_created: float | None = None
    durable: bool = True

    @property
    def total(self) -> int:
        return self.available + self.claimed + self.delayed


@dataclass(frozen=True)
class DepthReport:
    """The deepest ``limit`` queues (deepest first, then by tenant and name), the rest of
    them summed into ``others`` (tenant and name empty), and how many queues there are."""

    queues: tuple[QueueDepth, ...]
    others: QueueDepth
    count: int


def depth_order(q: QueueDepth) -> tuple[int, str, str]:
    return -q.total, q.tenant, q.name


def summed(depths: Iterable[QueueDepth]) -> QueueDepth:
    """The sum of ``depths`` as one nameless queue (oldest: the oldest of them)."""
    available = claimed = delayed = 0
    oldest: float | None = None
    for d in depths:
        available += d.available
        claimed += d.claimed
        delayed += d.delayed
        if d.oldest_created is not None:
            oldest = d.oldest_created if oldest is None else min(oldest, d.oldest_created)
    return QueueDepth("", "", available, claimed, delayed, oldest)


def top_depths(depths: Sequence[QueueDepth], limit: int) -> DepthReport:
    """The report of every queue in ``depths`` (what a store computes in memory)."""
    ordered = sorted(depths, key=depth_order)
    return DepthReport(tuple(ordered[:limit]), summed(ordered[limit:]), len(ordered))


def merge_reports(reports: Sequence[DepthReport], limit: int) -> DepthReport:
    """Reports of several stores as one: the deepest ``limit`` of their tops, and the
    others of every report plus the tops that did not make it."""
    tops = sorted((q for r in reports for q in r.queues), key=depth_order)
    rest = [*tops[limit:], *(r.others for r in reports)]
    return DepthReport(tuple(tops[:limit]), summed(rest), sum(r.count for r in reports))


def as_new(message: Message) -> NewMessage:
    """A copy of ``message`` to publish elsewhere: body, type, headers, priority, producer
    (its TTL starts again, as a message moved to a dead-letter queue's does)."""
    return NewMessage(
        body=message.body,
        content_type=message.content_type,
        headers=dict(message.headers),
        priority=message.priority,
        producer=message.producer,
    )


class IQueueAdmin(Interface):
    """Operator calls (the admin listener and CLI); ``QueueService`` provides them."""

    def on_expired(callback):  # type: ignore[no-untyped-def]
        """Call ``callback(n)`` with the number of expired messages each reap deletes."""

    def on_dead_lettered(callback):  # type: ignore[no-untyped-def]
        """Call ``callback(n)`` with the number of messages each claim moves into a
        dead-letter queue (once committed)."""

    def waiters():  # type: ignore[no-untyped-def]
        """-> int: callers waiting on any queue now."""

    def queue_depths(limit):  # type: ignore[no-untyped-def]
        """-> Deferred[DepthReport] over every tenant and both stores."""

    def peek(tenant, name, limit=20, after=None):  # type: ignore[no-untyped-def]
        """-> Deferred[list[Message]]: messages in order, claimed and delayed ones too,
        nothing changed."""

    def move_messages(tenant, source, target, limit=MAX_MOVE):  # type: ignore[no-untyped-def]
        """-> Deferred[int]: up to ``limit`` available messages of ``source`` published to
        ``target`` then removed from ``source`` (claimed first, so no consumer gets them
        meanwhile); a crash in between leaves a copy in both, never in neither."""

    def dead_letter_sources(tenant, name):  # type: ignore[no-untyped-def]
        """-> Deferred[list[str]]: the queues of ``tenant`` whose dead-letter queue is
        ``name`` (where a move sends messages back)."""


class IGatewayStatus(Interface):
    """What the gateway tells operators about itself (the admin listener's ``status``);
    plain JSON-ready values."""

    rates = Attribute("core.metrics.QueueRates: publish and ack counts by queue")
    metrics = Attribute("core.metrics.IMetrics: what /metrics exports")

    def status():  # type: ignore[no-untyped-def]
        """-> Deferred[dict]: version, pid, workers, listeners, storage (kind, writer)."""

    def ready():  # type: ignore[no-untyped-def]
        """-> Deferred[dict]: {"ready": bool, "storage": bool, "listeners": bool}."""

    def reload():  # type: ignore[no-untyped-def]
        """-> list[dict]: TLS certificates loaded again, per listener (or the error)."""


class AdminCalls:
    """``IQueueAdmin`` for ``QueueService`` (mixed in like ``SubscriptionCalls``)."""

    _durable: Any
    _transient: Any

    # The service's own calls, used as a client would.
    _now: Any
    observe: Any
    claim: Any
    ack: Any
    release: Any
    publish: Any
    list_queues: Any
    get_queue: Any

    _waits: Any
    _reaper: Any

    def on_expired(self, callback: Callable[[int], None]) -> None:
        """Tell ``callback`` how many expired messages each reaper pass deletes."""
        self._reaper.on_reaped = callback

    def on_dead_lettered(self, callback: Callable[[int], None]) -> None:
        """Tell ``callback`` how many messages each committed claim dead-letters."""
        self._dead_lettered = callback

    def waiters(self) -> int:
        """Callers parked waiting on any queue (long polls, consumers) right now."""
        total: int = self._waits.total()
        return total

    @as_deferred
    async def queue_depths(self, limit: int = 20) -> DepthReport:
        limit = check_count(limit, "limit", 10_000)
        now = self._now()
        reports = [
            await self._durable.queue_depths(now, limit),
            await self._transient.queue_depths(now, limit),
        ]
        transient = reports[1]
        reports[1] = replace(
            transient, queues=tuple(replace(q, durable=False) for q in transient.queues)
        )
        return merge_reports(reports, limit)

    @as_deferred
    async def peek(
        self, tenant: str, name: str, limit: int = 20, after: str | None = None
    ) -> list[Message]:
        messages: list[Message] = await self.observe(
            tenant,
            name,
            after=after,
            limit=limit,
            include_claimed=True,
            include_delayed=True,
        )
        return messages

    @as_deferred
    async def move_messages(
        self, tenant: str, source: str, target: str, limit: int = MAX_MOVE
    ) -> int:
        check_tenant(tenant)
        check_name(source)
        check_name(target, "target")
        if source == target:
            raise InvalidArgument("target must differ from the source queue", field="target")
        limit = check_count(limit, "limit", MAX_MOVE)
        await self.get_queue(tenant, target)  # QueueNotFound before anything is taken
        moved = 0
        while moved < limit:
            batch = min(limit - moved, 100)
            claim = await self.claim(tenant, source, limit=batch, ttl=60)
            if claim is None or not claim.messages:
                break
            ids = [str(m.marker) for m in claim.messages]
            try:
                await self.publish(tenant, target, [as_new(m) for m in claim.messages], False)
            except BaseException:
                await self.release(tenant, source, claim.id)
                raise
            await self.ack(tenant, source, claim.id, ids)
            moved += len(ids)
        return moved

    @as_deferred
    async def dead_letter_sources(self, tenant: str, name: str) -> list[str]:
        found: list[str] = []
        marker = None
        while True:
            page = await self.list_queues(tenant, marker=marker, limit=100)
            found += [q.name for q in page if q.options.dead_letter_queue == name]
            if len(page) < 100:
                return found
            marker = page[-1].name


__all__ = [
    "ADMIN_TENANT",
    "MAX_MOVE",
    "AdminCalls",
    "DepthReport",
    "IGatewayStatus",
    "IQueueAdmin",
    "QueueDepth",
    "as_new",
    "merge_reports",
    "summed",
    "top_depths",
]
