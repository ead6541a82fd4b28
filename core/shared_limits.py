"""A tenant's rates and live counts held across the workers of one hub.

Each worker's guard (``core.guard``) keeps its own token buckets and live counts, so
alone N workers would give a tenant N times its rate and N times its connections. With
``WorkerShare`` every worker sends the hub, every ``interval`` seconds (0.1 s), what it
spent per tenant since the last round and its live counts that changed; ``HubShare``
applies the spending to one global bucket per tenant (allowed into debt, as a STOMP
publish is), sums the counts, and answers the levels and the other workers' totals that
changed since this worker last asked. Each worker's view is then the global level minus
what it spent since it sent its report, refilled at the full rate between rounds, and
its own live count plus the others'. No request waits for the hub: the round runs beside
them, one at a time.

The error, for N workers: what one worker spends reaches the others within two rounds
(its report, then their next round), and meanwhile each spends from the level it last
heard. So a tenant can get up to (N - 1) x (that level + rate x 2 rounds) more than its
bucket allowed; the global bucket then holds that as debt, refused everywhere until
repaid, so over any longer time the tenant's rate holds. A live count can be over its
quota by what other workers admitted within the last two rounds (0.2 s).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from twisted.internet.defer import Deferred
from twisted.internet.interfaces import IReactorTime
from twisted.internet.task import LoopingCall
from twisted.logger import Logger

from qgate.core.ratelimit import MAX_BUCKETS, RateLimiter, TokenBucket

log = Logger()

#: Seconds between two rounds with the hub.
SYNC_INTERVAL = 0.1
#: The token buckets, by what they limit.
PUBLISH, REQUEST = "publish", "request"
#: The live counts, by what they count.
CONNECTIONS, SUBSCRIPTIONS = "connections", "subscriptions"


class SyncedLimiter(RateLimiter):
    """A worker's buckets of one kind: spending is noted for the next round, and each
    round sets the levels the hub answered."""

    def __init__(self, clock: IReactorTime) -> None:
        super().__init__(clock)
        #: tenant -> [tokens spent since the last report, rate, burst].
        self.unsynced: dict[str, list[float]] = {}

    def _note(self, tenant: str, rate: float, burst: float, count: float) -> None:
        noted = self.unsynced.get(tenant)
        if noted is None:
            self.unsynced[str(tenant)] = [count, rate, burst]  # a plain str crosses
        else:
            noted[0] += count
            noted[1], noted[2] = rate, burst

    def take(self, tenant: str, rate: float, burst: float, count: float = 1.0) -> float:
        wait = super().take(tenant, rate, burst, count)
        if rate and not wait:
            self._note(tenant, rate, burst, count)
        return wait

    def spend(self, tenant: str, rate: float, burst: float, count: float = 1.0) -> float:
        if rate:
            self._note(tenant, rate, burst, count)
        return super().spend(tenant, rate, burst, count)

    def report(self) -> dict[str, list[float]]:
        """What was spent since the last report (forgotten here: the hub has it now)."""
        out, self.unsynced = self.unsynced, {}
        return out

    def set_levels(self, levels: dict[str, float]) -> None:
        """The hub's levels, less what was spent here since the report was sent."""
        now = self._clock.seconds()
        for tenant, level in levels.items():
            noted = self.unsynced.get(tenant)
            tokens = level - (noted[0] if noted is not None else 0.0)
            bucket = self._buckets.get(tenant)
            if bucket is None:
                if len(self._buckets) < MAX_BUCKETS:  # else learnt when spent here
                    self._buckets[tenant] = TokenBucket(tokens, now)
            else:
                bucket.tokens, bucket.stamp = tokens, now


class WorkerShare:
    """A worker's end: its synced buckets and the other workers' live counts.

    ``call_hub(report)`` sends one round's report (a dict) and answers the hub's."""

    def __init__(
        self,
        clock: IReactorTime,
        call_hub: Callable[[dict[str, Any]], Deferred[dict[str, Any]]],
        interval: float = SYNC_INTERVAL,
    ) -> None:
        self._call_hub = call_hub
        self.limiters = {PUBLISH: SyncedLimiter(clock), REQUEST: SyncedLimiter(clock)}
        #: kind -> tenant -> this worker's live count (the guard's own dictionaries).
        self._own: dict[str, dict[str, int]] = {}
        #: kind -> tenants whose count here changed since the last report.
        self._changed: dict[str, set[str]] = {CONNECTIONS: set(), SUBSCRIPTIONS: set()}
        #: kind -> tenant -> what the other workers count.
        self._others: dict[str, dict[str, int]] = {CONNECTIONS: {}, SUBSCRIPTIONS: {}}
        self._fresh = True
        self._busy = False
        #: Rounds answered (for tests and stats).
        self.rounds = 0
        self._loop = LoopingCall(self.sync)
        self._loop.clock = clock
        self._interval = interval

    def count_in(self, kind: str, counts: dict[str, int]) -> None:
        """``counts`` (tenant -> live count) is this worker's count of ``kind``."""
        self._own[kind] = counts

    def changed(self, kind: str, tenant: str) -> None:
        self._changed[kind].add(str(tenant))

    def others(self, kind: str, tenant: str) -> int:
        """What the other workers count of ``kind`` for ``tenant``, as of the last round."""
        return self._others[kind].get(tenant, 0)

    def start(self) -> None:
        self._loop.start(self._interval, now=True)

    def stop(self) -> None:
        if self._loop.running:
            self._loop.stop()

    def sync(self) -> Deferred[None] | None:
        """One round with the hub (skipped while the last one is still answering)."""
        if self._busy:
            return None
        self._busy = True
        counts: dict[str, dict[str, int]] = {}
        for kind, tenants in self._changed.items():
            own = self._own.get(kind, {})
            counts[kind] = {t: own.get(t, 0) for t in tenants}
            tenants.clear()
        report = {
            "fresh": self._fresh,
            "spent": {kind: limiter.report() for kind, limiter in self.limiters.items()},
            "counts": counts,
        }
        self._fresh = False
        d = self._call_hub(report)
        d.addCallback(self._answered)
        d.addErrback(lambda f: log.failure("syncing tenant limits with the hub failed", f))

        def done(_: object) -> None:
            self._busy = False

        return d.addBoth(done)

    def _answered(self, answer: dict[str, Any]) -> None:
        self.rounds += 1
        for kind, levels in answer.get("levels", {}).items():
            limiter = self.limiters.get(kind)
            if limiter is not None:
                limiter.set_levels(levels)
        for kind, totals in answer.get("others", {}).items():
            mine = self._others.setdefault(kind, {})
            for tenant, total in totals.items():
                if total > 0:
                    mine[tenant] = total
                else:
                    mine.pop(tenant, None)


class HubShare:
    """The hub's end: one global bucket per tenant and kind, and every worker's counts.

    ``sync(worker, report)`` is what a worker's round calls (over the channel)."""

    def __init__(self, clock: IReactorTime) -> None:
        self._buckets = {PUBLISH: RateLimiter(clock), REQUEST: RateLimiter(clock)}
        #: kind -> tenant -> (rate, burst), as the workers last said.
        self._rates: dict[str, dict[str, tuple[float, float]]] = {PUBLISH: {}, REQUEST: {}}
        #: kind -> worker -> tenant -> live count.
        self._counts: dict[str, dict[int, dict[str, int]]] = {CONNECTIONS: {}, SUBSCRIPTIONS: {}}
        #: worker -> (kind, tenant) spent or counted since its last round (by anyone).
        self._dirty: dict[int, set[tuple[str, str]]] = {}

    def _touched(self, key: tuple[str, str]) -> None:
        for dirty in self._dirty.values():
            dirty.add(key)

    def sync(self, worker: int, report: dict[str, Any]) -> dict[str, Any]:
        if report.get("fresh"):
            self.forget(worker)
        mine = self._dirty.setdefault(worker, set())
        for kind, spent in report.get("spent", {}).items():
            if kind not in self._buckets:
                continue
            rates = self._rates[kind]
            if len(rates) > MAX_BUCKETS:  # what the buckets forgot, forgotten here too
                self._rates[kind] = rates = {
                    t: r for t, r in rates.items() if t in self._buckets[kind]
                }
            for tenant, (count, rate, burst) in spent.items():
                rates[tenant] = (rate, burst)
                self._buckets[kind].settle(tenant, rate, burst, count)
                self._touched((kind, tenant))
        for kind, counts in report.get("counts", {}).items():
            if kind not in self._counts:
                continue
            own = self._counts[kind].setdefault(worker, {})
            for tenant, n in counts.items():
                if n > 0:
                    own[tenant] = n
                else:
                    own.pop(tenant, None)
                self._touched((kind, tenant))
        levels: dict[str, dict[str, float]] = {}
        others: dict[str, dict[str, int]] = {}
        for kind, tenant in mine:
            if kind in self._buckets:
                rate, burst = self._rates[kind].get(tenant, (0.0, 0.0))
                if rate:
                    levels.setdefault(kind, {})[tenant] = self._buckets[kind].level(
                        tenant, rate, burst
                    )
            else:
                others.setdefault(kind, {})[tenant] = sum(
                    counts.get(tenant, 0) for w, counts in self._counts[kind].items() if w != worker
                )
        mine.clear()
        return {"levels": levels, "others": others}

    def forget(self, worker: int) -> None:
        """``worker`` ended (or started again): its live counts are gone."""
        self._dirty.pop(worker, None)
        for kind, by_worker in self._counts.items():
            for tenant in by_worker.pop(worker, {}):
                self._touched((kind, tenant))

    def total(self, kind: str, tenant: str) -> int:
        """Every worker's count of ``kind`` for ``tenant`` (for tests and stats)."""
        return sum(counts.get(tenant, 0) for counts in self._counts[kind].values())
