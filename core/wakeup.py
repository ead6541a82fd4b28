"""Per-queue wakeups: how long polls, subscriptions and pushes wait without polling storage."""

from __future__ import annotations

from collections.abc import Hashable

from twisted.internet.defer import Deferred
from twisted.internet.interfaces import IDelayedCall, IReactorTime


class WakeupRegistry:
    """Waiters keyed by queue; ``notify(key)`` wakes every waiter of that queue at once.

    A wait fires ``True`` when woken and ``False`` at its timeout. Cancelling it (a client
    that hung up) removes the waiter and its timer at once.
    """

    def __init__(self, clock: IReactorTime) -> None:
        self._clock = clock
        self._waiters: dict[Hashable, dict[Deferred[bool], IDelayedCall | None]] = {}

    def wait(self, key: Hashable, timeout: float | None) -> Deferred[bool]:
        def cancel(d: Deferred[bool]) -> None:
            self._forget(key, d)

        d: Deferred[bool] = Deferred(cancel)
        timer = None
        if timeout is not None:
            timer = self._clock.callLater(max(0.0, timeout), self._expire, key, d)
        self._waiters.setdefault(key, {})[d] = timer
        return d

    def notify(self, key: Hashable) -> int:
        """Wake every waiter of ``key``; returns how many were woken."""
        waiters = self._waiters.pop(key, None)
        if not waiters:
            return 0
        for timer in waiters.values():
            if timer is not None and timer.active():
                timer.cancel()
        for d in waiters:
            d.callback(True)
        return len(waiters)

    def wake(self, key: Hashable, d: Deferred[bool]) -> None:
        """Wake the one waiter ``d`` of ``key`` (a hand-off settled for it)."""
        waiters = self._waiters.get(key)
        if waiters is None or d not in waiters:
            return
        self._forget(key, d)
        d.callback(True)

    def release_all(self) -> int:
        """Answer every waiter now with False (a timeout), as when shutting down."""
        count = 0
        for key in list(self._waiters):
            waiters = self._waiters.pop(key)
            for d, timer in waiters.items():
                if timer is not None and timer.active():
                    timer.cancel()
                if not d.called:
                    d.callback(False)
                    count += 1
        return count

    def waiting(self, key: Hashable) -> int:
        return len(self._waiters.get(key, ()))

    def __len__(self) -> int:
        return sum(len(w) for w in self._waiters.values())

    def _expire(self, key: Hashable, d: Deferred[bool]) -> None:
        waiters = self._waiters.get(key)
        if waiters is not None:
            waiters.pop(d, None)
            if not waiters:
                del self._waiters[key]
        if not d.called:
            d.callback(False)

    def _forget(self, key: Hashable, d: Deferred[bool]) -> None:
        waiters = self._waiters.get(key)
        if waiters is None:
            return
        timer = waiters.pop(d, None)
        if timer is not None and timer.active():
            timer.cancel()
        if not waiters:
            del self._waiters[key]
