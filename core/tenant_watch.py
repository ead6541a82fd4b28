"""``TenantWatch``: every process sees quota changes and key revocations within a second.

Every ``interval`` seconds it reads the tenant store's change counter (one indexed row:
``ITenantStore.tenant_version``); when it has moved — a quota set, a key revoked, here or
in another process — it reloads the quota overrides and the ids of the live API keys
(so a new key works, and unknown ones are refused without a read), makes the
authenticator forget the keys it verified, and has the guard close the sessions of
revoked keys. One read in
flight at a time; a failed read is logged and tried again next round.
"""

from __future__ import annotations

from typing import Any

from twisted.internet.defer import Deferred
from twisted.internet.interfaces import IReactorTime
from twisted.internet.task import LoopingCall
from twisted.logger import Logger

from qgate.core.interfaces import ITenantStore
from qgate.core.quotas import TenantQuotas

log = Logger()

#: Seconds between reads of the change counter: a change is in force within about this.
WATCH_INTERVAL = 0.5


class TenantWatch:
    def __init__(
        self,
        clock: IReactorTime,
        store: ITenantStore,
        quotas: TenantQuotas,
        auth: Any = None,
        guard: Any = None,
        interval: float = WATCH_INTERVAL,
    ) -> None:
        self._store = store
        self._quotas = quotas
        self._auth = auth
        self._guard = guard
        self._interval = interval
        self._version: int | None = None
        self._busy = False
        self._loop = LoopingCall(self.poll)
        self._loop.clock = clock

    def start(self) -> None:
        self._loop.start(self._interval, now=True)

    def stop(self) -> None:
        if self._loop.running:
            self._loop.stop()

    def poll(self) -> Deferred[None] | None:
        """One round: read the counter, and reload when it moved (skipped while the last
        round is still reading)."""
        if self._busy:
            return None
        self._busy = True
        d = Deferred.fromCoroutine(self._poll())
        d.addErrback(lambda f: log.failure("reading tenant changes failed", f))
        return d

    async def _poll(self) -> None:
        try:
            version = await self._store.tenant_version()
            if version == self._version:
                return
            first = self._version is None
            self._quotas.replace_overrides(await self._store.quota_overrides())
            load = getattr(self._auth, "load_keys", None)
            if load is not None:
                await load()
            self._version = version
            if first:
                return
            forget = getattr(self._auth, "forget_keys", None)
            if forget is not None:
                forget()
            if self._guard is not None:
                await self._guard.check_keys(getattr(self._auth, "known_keys", None))
        finally:
            self._busy = False
