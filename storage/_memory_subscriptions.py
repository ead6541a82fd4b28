"""Push subscriptions in memory (``ISubscriptionStore``): each queue's subscriptions by id
in its ``MemoryQueue``, so they go with the queue and stay through a purge.

Values are the core's frozen ``Subscription``s, replaced on every change. Expired ones are
dropped whenever their queue's subscriptions are looked at, and by the reaper.
"""

from __future__ import annotations

from dataclasses import replace

from qgate.core.errors import SubscriptionExists, SubscriptionNotFound
from qgate.core.model import NewSubscription, Subscription, SubscriptionUpdate
from qgate.storage._fired import fired
from qgate.storage._memory_queue import MemoryQueue


def live(q: MemoryQueue, now: float) -> dict[str, Subscription]:
    """The queue's subscriptions, the expired ones dropped first."""
    subs = q.subscriptions
    for sid in [sid for sid, sub in subs.items() if sub.expires_at <= now]:
        del subs[sid]
    return subs


def _holder(q: MemoryQueue, subscriber: str, now: float) -> Subscription | None:
    return next((s for s in live(q, now).values() if s.subscriber == subscriber), None)


class MemorySubscriptions:
    """The ``ISubscriptionStore`` half of ``MemoryStorage``, which provides ``_get``."""

    def _get(self, tenant: str, name: str) -> MemoryQueue:
        raise NotImplementedError

    @fired
    def create_subscription(
        self,
        tenant: str,
        name: str,
        new: NewSubscription,
        now: float,
    ) -> tuple[Subscription, bool]:
        q = self._get(tenant, name)
        existing = _holder(q, new.subscriber, now)
        if existing is not None:
            return existing, False
        sub = new.placed(name, now, marker=q.next_marker - 1)
        q.subscriptions[sub.id] = sub
        return sub, True

    @fired
    def get_subscription(
        self, tenant: str, name: str, subscription_id: str, now: float
    ) -> Subscription | None:
        return live(self._get(tenant, name), now).get(subscription_id)

    @fired
    def list_subscriptions(
        self, tenant: str, name: str, marker: str | None, limit: int, now: float
    ) -> list[Subscription]:
        subs = live(self._get(tenant, name), now)
        ids = sorted(sid for sid in subs if marker is None or sid > marker)
        return [subs[sid] for sid in ids[:limit]]

    @fired
    def update_subscription(
        self,
        tenant: str,
        name: str,
        subscription_id: str,
        changes: SubscriptionUpdate,
        now: float,
    ) -> Subscription:
        q = self._get(tenant, name)
        sub = live(q, now).get(subscription_id)
        if sub is None:
            raise SubscriptionNotFound(subscription_id)
        subscriber = changes.subscriber
        if subscriber is not None and subscriber != sub.subscriber:
            if _holder(q, subscriber, now) is not None:
                raise SubscriptionExists(name, subscriber)
            sub = replace(sub, subscriber=subscriber)
        if changes.ttl is not None:
            sub = replace(sub, ttl=changes.ttl, expires_at=now + changes.ttl)
        if changes.options is not None:
            sub = replace(sub, options=dict(changes.options))
        if changes.confirmed is not None:
            sub = replace(sub, confirmed=changes.confirmed)
        q.subscriptions[subscription_id] = sub
        return sub

    @fired
    def advance_subscription(
        self, tenant: str, name: str, subscription_id: str, marker: int, now: float
    ) -> int | None:
        q = self._get(tenant, name)
        sub = live(q, now).get(subscription_id)
        if sub is None:
            return None
        if marker > sub.marker:
            sub = q.subscriptions[subscription_id] = replace(sub, marker=marker)
        return sub.marker

    @fired
    def delete_subscription(self, tenant: str, name: str, subscription_id: str) -> bool:
        q = self._get(tenant, name)
        q.push.pop(subscription_id, None)  # its delivery state (_memory_push) goes too
        return q.subscriptions.pop(subscription_id, None) is not None

    @fired
    def purge_subscriptions(self, tenant: str, name: str) -> int:
        q = self._get(tenant, name)
        count = len(q.subscriptions)
        q.subscriptions.clear()
        q.push.clear()
        return count
