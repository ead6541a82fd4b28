"""``PushDispatcher``: the Twisted service that delivers push subscriptions.

Every ``scan_interval`` it leases (and renews) the subscriptions it may push through
``IQueueService.lease_push`` and keeps one ``Pump`` per subscription it holds; one whose
lease it lost, or that was deleted or expired, is stopped. Leases live in storage, so
any number of dispatchers on one database share the subscriptions without pushing one
to two places at once; a dispatcher that dies is replaced within one ``lease``.
"""

from __future__ import annotations

import os
import socket
import uuid
from collections.abc import Sequence
from typing import Any

from twisted.application import service
from twisted.internet import defer, task
from twisted.logger import Logger

from qgate.core.errors import QGateError
from qgate.core.model import PushStats
from qgate.protocols.context import ProtocolContext
from qgate.protocols.push.client import HTTPPusher, IPusher
from qgate.protocols.push.hooks import load_hooks
from qgate.protocols.push.pump import Pump
from qgate.protocols.push.settings import PushSettings

log = Logger()

Key = tuple[str, str, str]  # tenant, queue, subscription id


def new_owner() -> str:
    """A dispatcher's id: host, process and a random part (at most 64 characters)."""
    return f"{socket.gethostname()[:32]}:{os.getpid()}:{uuid.uuid4().hex[:12]}"


class PushDispatcher(service.Service):
    """Delivers every push subscription this process holds the lease of."""

    def __init__(
        self,
        ctx: ProtocolContext[PushSettings],
        pusher: IPusher | None = None,
        owner: str | None = None,
        hooks: Sequence[Any] | None = None,
    ) -> None:
        self._ctx = ctx
        self._settings = ctx.settings
        self._service = ctx.service
        self._metrics = ctx.metrics
        self._clock = ctx.reactor
        self._pusher = pusher
        self.owner = owner or new_owner()
        self._hooks = list(hooks) if hooks is not None else load_hooks(ctx.settings.hooks)
        self.pumps: dict[Key, Pump] = {}
        self._loop: task.LoopingCall | None = None
        self._round_running: defer.Deferred[None] | None = None

    def startService(self) -> None:  # noqa: N802 - Twisted's name
        super().startService()
        if self._pusher is None:
            self._pusher = HTTPPusher(self._clock, self._settings)
        self._loop = task.LoopingCall(self._tick)
        self._loop.clock = self._clock
        self._loop.start(self._settings.scan_interval, now=True)

    def _tick(self) -> defer.Deferred[None]:
        self._round_running = defer.Deferred.fromCoroutine(self.lease_round())
        return self._round_running

    async def lease_round(self) -> None:
        """Renews and takes leases, starts and stops pumps to match."""
        s = self._settings
        try:
            held = await self._service.lease_push(self.owner, s.lease, s.max_subscriptions)
        except QGateError as e:
            log.warn("push: leases not renewed: {e}", e=e)
            return
        except Exception:  # noqa: BLE001 - the loop must go on (a bug, a schema not upgraded)
            log.failure("push: lease round failed")
            return
        seen: set[Key] = set()
        for lease in held:
            sub = lease.subscription
            if s.require_confirmation and not sub.confirmed:
                continue
            key = (lease.tenant, sub.queue, sub.id)
            seen.add(key)
            pump = self.pumps.get(key)
            if pump is None:
                assert self._pusher is not None
                pump = Pump(
                    self._service,
                    self._clock,
                    self._pusher,
                    s,
                    self.owner,
                    lease.tenant,
                    sub,
                    self._hooks,
                    self._metrics,
                )
                self.pumps[key] = pump
                pump.start()
            else:
                pump.update(sub)
        for key in [k for k in self.pumps if k not in seen]:
            self.pumps.pop(key).stop()

    def in_flight(self, tenant: str, queue: str, subscription_id: str) -> int:
        pump = self.pumps.get((tenant, queue, subscription_id))
        return 0 if pump is None else pump.in_flight

    async def stats(self, tenant: str, queue: str, subscription_id: str) -> PushStats:
        found: PushStats = await self._service.push_stats(tenant, queue, subscription_id)
        return found

    async def _stop(self) -> None:
        if self._loop is not None and self._loop.running:
            self._loop.stop()
        if self._round_running is not None and not self._round_running.called:
            await self._round_running
        pumps, self.pumps = list(self.pumps.values()), {}
        await defer.DeferredList([p.stop() for p in pumps], consumeErrors=True)
        ids = [p.subscription.id for p in pumps]
        try:
            await self._service.release_push(self.owner, ids)
        except QGateError as e:
            log.warn("push: leases not released (they end by themselves): {e}", e=e)
        if self._pusher is not None:
            await self._pusher.close()

    def stopService(self) -> defer.Deferred[None]:  # noqa: N802
        super().stopService()
        return defer.Deferred.fromCoroutine(self._stop())


class Idle(service.Service):
    """What ``[push] enabled = false`` runs: nothing."""


def component(ctx: ProtocolContext[PushSettings]) -> service.IService:
    """The push protocol's component: the dispatcher, or nothing when disabled."""
    if not ctx.settings.enabled:
        return Idle()
    return PushDispatcher(ctx)
