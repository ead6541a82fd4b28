"""Push delivery state in memory (``IPushStore``): per subscription, its lease and its
deliveries taken and not settled, in its ``MemoryQueue`` beside the subscription.

Memory is one process, so a lease only matters for dispatchers sharing this store; the
state goes with the subscription (a record whose subscription is gone is dropped).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import replace

from qgate.core.model import Delivery, PushLease, PushStats, Settlement
from qgate.storage._fired import fired
from qgate.storage._memory_queue import MemoryQueue
from qgate.storage._memory_subscriptions import live


class PushRecord:
    """One subscription's lease, deliveries and counters."""

    __slots__ = ("owner", "expires", "deliveries", "delivered", "failed", "given_up", "error")

    def __init__(self) -> None:
        self.owner: str | None = None
        self.expires = 0.0
        self.deliveries: dict[int, Delivery] = {}
        self.delivered = 0
        self.failed = 0
        self.given_up = 0
        self.error: str | None = None


def _record(q: MemoryQueue, subscription_id: str, now: float) -> PushRecord | None:
    """The record of a live subscription (made on first use), or None."""
    subs = live(q, now)
    for sid in [sid for sid in q.push if sid not in subs]:
        del q.push[sid]
    if subscription_id not in subs:
        return None
    rec: PushRecord | None = q.push.get(subscription_id)
    if rec is None:
        rec = q.push[subscription_id] = PushRecord()
    return rec


class MemoryPush:
    """The ``IPushStore`` half of ``MemoryStorage``, which provides ``_queues``/``_get``."""

    _queues: dict[tuple[str, str], MemoryQueue]

    def _get(self, tenant: str, name: str) -> MemoryQueue:
        raise NotImplementedError

    @fired
    def lease_push(self, owner: str, lease: float, limit: int, now: float) -> list[PushLease]:
        held: list[PushLease] = []
        for (tenant, _name), q in sorted(self._queues.items()):
            for sid in sorted(live(q, now)):
                if len(held) >= limit:
                    return held
                rec = _record(q, sid, now)
                assert rec is not None
                if rec.owner == owner or rec.expires <= now:
                    rec.owner, rec.expires = owner, now + lease
                    held.append(PushLease(tenant, q.subscriptions[sid], rec.expires))
        return held

    @fired
    def release_push(self, owner: str, subscription_ids: Sequence[str]) -> int:
        count = 0
        wanted = set(subscription_ids)
        for q in self._queues.values():
            for sid, rec in q.push.items():
                if sid in wanted and rec.owner == owner:
                    rec.owner, rec.expires = None, 0.0
                    count += 1
        return count

    @fired
    def take_deliveries(
        self, tenant: str, name: str, subscription_id: str, owner: str, limit: int, now: float
    ) -> list[Delivery]:
        q = self._get(tenant, name)
        rec = _record(q, subscription_id, now)
        if rec is None or rec.owner != owner or rec.expires <= now or limit <= 0:
            return []
        sub = q.subscriptions[subscription_id]
        taken: list[Delivery] = []
        last = sub.marker
        for msg in q.after(sub.marker):
            if msg.expires_at <= now:
                continue
            d = Delivery(msg.marker, 0, max(now, msg.available_at), now)
            rec.deliveries[msg.marker] = d
            taken.append(d)
            last = msg.marker
            if len(taken) >= limit:
                break
        if last > sub.marker:
            q.subscriptions[subscription_id] = replace(sub, marker=last)
        return taken

    @fired
    def pending_deliveries(
        self, tenant: str, name: str, subscription_id: str, now: float
    ) -> list[Delivery]:
        rec = _record(self._get(tenant, name), subscription_id, now)
        if rec is None:
            return []
        return [rec.deliveries[m] for m in sorted(rec.deliveries)]

    @fired
    def settle_delivery(
        self,
        tenant: str,
        name: str,
        subscription_id: str,
        marker: int,
        settlement: Settlement,
        next_at: float,
        error: str | None,
        now: float,
    ) -> bool:
        rec = _record(self._get(tenant, name), subscription_id, now)
        if rec is None:
            return False
        d = rec.deliveries.get(marker)
        if d is None:
            return False
        if settlement is Settlement.DELIVERED:
            del rec.deliveries[marker]
            rec.delivered += 1
            return True
        rec.failed += 1
        rec.error = error
        if settlement is Settlement.GIVEN_UP:
            del rec.deliveries[marker]
            rec.given_up += 1
        else:
            rec.deliveries[marker] = replace(d, attempts=d.attempts + 1, next_at=next_at)
        return True

    @fired
    def push_stats(
        self, tenant: str, name: str, subscription_id: str, now: float
    ) -> PushStats | None:
        q = self._get(tenant, name)
        rec = _record(q, subscription_id, now)
        if rec is None:
            return None
        sub = q.subscriptions[subscription_id]
        lag = sum(1 for msg in q.after(sub.marker) if msg.expires_at > now)
        return PushStats(
            delivered=rec.delivered,
            failed=rec.failed,
            given_up=rec.given_up,
            pending=len(rec.deliveries),
            lag=lag,
            last_error=rec.error,
        )
