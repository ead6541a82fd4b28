"""``PushCalls``: the push-delivery calls of ``IQueueService`` (the service inherits them),
for a dispatcher (``protocols/push``) that delivers push subscriptions as a consumer of
its own: it leases subscriptions, takes deliveries from their positions, settles each
attempt, and dead-letters what it gives up on. The state lives in the queue's store
(``IPushStore``), so it survives restarts and is shared by processes on one database.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from twisted.internet.defer import Deferred
from twisted.internet.interfaces import IReactorTime

from qgate.core.errors import InvalidArgument, QueueNotFound, SubscriptionNotFound
from qgate.core.interfaces import IQueueStorage, ITransientStorage
from qgate.core.model import Delivery, Message, NewMessage, PushLease, PushStats, Settlement

#: Longest lease a dispatcher may take on a subscription, in seconds.
MAX_PUSH_LEASE = 3600.0


class PushCalls:
    """Mixed into ``QueueService``, which provides ``clock``, ``_store``, ``_durable``,
    ``_transient``, ``get_queue`` and ``publish``."""

    clock: IReactorTime
    _durable: IQueueStorage
    _transient: ITransientStorage

    def _store(self, tenant: str, name: str) -> IQueueStorage:
        raise NotImplementedError

    def get_queue(self, tenant: str, name: str) -> Deferred[Any]:
        raise NotImplementedError

    def publish(
        self, tenant: str, name: str, messages: Sequence[NewMessage], create: bool = True
    ) -> Deferred[list[str]]:
        raise NotImplementedError

    def _push_now(self) -> float:
        return float(self.clock.seconds())

    async def _lease_push(self, owner: str, lease: float, limit: int) -> list[PushLease]:
        if not isinstance(owner, str) or not owner or len(owner) > 64:
            raise InvalidArgument("owner must be 1 to 64 characters", field="owner")
        if not 0 < lease <= MAX_PUSH_LEASE:
            raise InvalidArgument(f"lease must be in (0, {MAX_PUSH_LEASE:g}]", field="lease")
        held: list[PushLease] = []
        for store in (self._transient, self._durable):
            if len(held) < limit:
                got = await store.lease_push(owner, lease, limit - len(held), self._push_now())
                held.extend(got)
        return held

    def lease_push(self, owner: str, lease: float, limit: int = 1000) -> Deferred[list[PushLease]]:
        """-> list[PushLease]: push subscriptions of every tenant now held by ``owner``
        (renewed, or newly taken because free or over) until ``lease`` seconds from now."""
        return Deferred.fromCoroutine(self._lease_push(owner, lease, limit))

    async def _release_push(self, owner: str, ids: Sequence[str]) -> int:
        count = 0
        for store in (self._transient, self._durable):
            count += await store.release_push(owner, list(ids))
        return count

    def release_push(self, owner: str, subscription_ids: Sequence[str]) -> Deferred[int]:
        """-> int: leases of ``owner`` given back (a dispatcher stopping cleanly)."""
        return Deferred.fromCoroutine(self._release_push(owner, subscription_ids))

    def take_deliveries(
        self, tenant: str, name: str, subscription_id: str, owner: str, limit: int
    ) -> Deferred[list[Delivery]]:
        """-> list[Delivery]: up to ``limit`` messages after the subscription's position,
        now pending for it (position moved past them); [] unless ``owner`` holds it."""
        store = self._store(tenant, name)
        found: Deferred[list[Delivery]] = store.take_deliveries(
            tenant, name, subscription_id, owner, limit, self._push_now()
        )
        return found

    def pending_deliveries(
        self, tenant: str, name: str, subscription_id: str
    ) -> Deferred[list[Delivery]]:
        """-> list[Delivery] of the subscription taken and not settled, by marker."""
        store = self._store(tenant, name)
        found: Deferred[list[Delivery]] = store.pending_deliveries(
            tenant, name, subscription_id, self._push_now()
        )
        return found

    def settle_delivery(
        self,
        tenant: str,
        name: str,
        subscription_id: str,
        marker: int,
        settlement: Settlement,
        next_at: float = 0.0,
        error: str | None = None,
    ) -> Deferred[bool]:
        """-> bool: records how an attempt ended (``Settlement``); a retry is due at
        ``next_at``; ``error`` (failures) is kept as the subscription's last."""
        store = self._store(tenant, name)
        done: Deferred[bool] = store.settle_delivery(
            tenant,
            name,
            subscription_id,
            marker,
            Settlement(settlement),
            next_at,
            None if error is None else error[:500],
            self._push_now(),
        )
        return done

    async def _push_stats(self, tenant: str, name: str, subscription_id: str) -> PushStats:
        store = self._store(tenant, name)
        try:
            stats = await store.push_stats(tenant, name, subscription_id, self._push_now())
        except QueueNotFound:
            stats = None
        if stats is None:
            raise SubscriptionNotFound(str(subscription_id))
        found: PushStats = stats
        return found

    def push_stats(self, tenant: str, name: str, subscription_id: str) -> Deferred[PushStats]:
        """-> PushStats; SubscriptionNotFound when unknown or expired."""
        return Deferred.fromCoroutine(self._push_stats(tenant, name, subscription_id))

    async def _dead_letter_push(self, tenant: str, name: str, message: Message) -> str | None:
        queue = await self.get_queue(tenant, name)
        target = queue.options.dead_letter_queue
        if target is None:
            return None
        ttl = queue.options.dead_letter_ttl or max(1.0, message.ttl)
        copy = NewMessage(
            body=message.body,
            content_type=message.content_type,
            headers=message.headers,
            ttl=ttl,
            priority=message.priority,
            producer=message.producer,
        )
        await self.publish(tenant, target, [copy])
        dead: str = target
        return dead

    def dead_letter_push(self, tenant: str, name: str, message: Message) -> Deferred[str | None]:
        """-> the dead-letter queue ``message`` (a push given up on) was copied to, or None
        when the queue has none."""
        return Deferred.fromCoroutine(self._dead_letter_push(tenant, name, message))
