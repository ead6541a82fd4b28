"""``Reaper``: the queue service's background expiry reaper.

Every ``interval`` seconds it deletes expired messages (and expired claims) from each
store, ``batch`` at a time until a store has fewer left. A round that fails (the database
away for a moment) is logged, and the next round tries again: one failure never stops
reaping for good.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

from twisted.internet.defer import Deferred
from twisted.internet.interfaces import IReactorTime
from twisted.internet.task import LoopingCall
from twisted.logger import Logger

from qgate.core.interfaces import IQueueStorage

log = Logger()


class Reaper:
    """Reaps ``stores`` in turn, on ``clock``."""

    def __init__(
        self, clock: IReactorTime, stores: Sequence[IQueueStorage], interval: float, batch: int
    ) -> None:
        self._clock = clock
        self._stores = tuple(stores)
        self._interval = interval
        self._batch = batch
        self._loop: LoopingCall | None = None
        #: Told how many expired messages each pass deleted (the admin metrics).
        self.on_reaped: Callable[[int], None] | None = None

    def start(self) -> None:
        """Reap every ``interval`` seconds from now on (the first round one interval from
        now); a reaper that runs already carries on."""
        if self._loop is None:
            self._loop = LoopingCall(self._round)
            self._loop.clock = self._clock
            self._loop.start(self._interval, now=False)

    def stop(self) -> None:
        if self._loop is not None and self._loop.running:
            self._loop.stop()
        self._loop = None

    def reap(self) -> Deferred[int]:
        """One pass over every store, now: -> how many expired messages it deleted."""
        return Deferred.fromCoroutine(self._reap())

    async def _reap(self) -> int:
        total = 0
        for store in self._stores:
            while True:
                n = await store.reap(self._clock.seconds(), self._batch)
                total += n
                if n < self._batch:
                    break
        if total and self.on_reaped is not None:
            self.on_reaped(total)
        return total

    def _round(self) -> Deferred[None]:
        return self.reap().addCallbacks(
            lambda _: None, lambda f: log.failure("reaping expired messages failed", f)
        )
