"""``Offers``: the claims and pops waiting on each queue, in line for a publish's hand-off.

A waiter opens an offer (``core.handoff.Handoff``) when it starts waiting and keeps it
open across its attempts and parks; a publish ``reserve``s the first open one of its queue
before it goes to the store, and ``settle``s it with what the store handed over once it is
committed (or with nothing when it failed). A waiter that gave up meanwhile gets nothing:
what was handed to it goes back (``give_back``).
"""

from __future__ import annotations

from collections.abc import Callable, Hashable

from twisted.internet.defer import Deferred

from qgate.core.handoff import Handoff
from qgate.core.model import Message


class Pending:
    """One waiter's offer: whether a publish holds it, and what that publish handed over."""

    __slots__ = ("key", "handoff", "reserved", "result", "settled", "wakeup", "cancelled")

    def __init__(self, key: Hashable, handoff: Handoff) -> None:
        self.key = key
        self.handoff = handoff
        self.reserved = False  # a publish holds the offer
        self.result: list[Message] | None = None  # that publish's outcome, once settled
        self.settled: Deferred[None] | None = None  # the waiter waits for the outcome
        self.wakeup: Deferred[bool] | None = None  # the waiter is parked on this
        self.cancelled = False


class Offers:
    """Open offers by queue (first opened first), and the reserved ones by offer.

    ``wake(key, d)`` wakes a parked waiter whose offer settled; ``give_back(key, offer,
    messages)`` returns what was handed to a waiter that is gone."""

    def __init__(
        self,
        wake: Callable[[Hashable, Deferred[bool]], None],
        give_back: Callable[[Hashable, Handoff, list[Message]], None],
    ) -> None:
        self._wake = wake
        self._give_back = give_back
        self._lines: dict[Hashable, dict[Handoff, Pending]] = {}
        self._reserved: dict[Handoff, Pending] = {}

    def open(self, key: Hashable, handoff: Handoff) -> Pending:
        pending = Pending(key, handoff)
        self._lines.setdefault(key, {})[handoff] = pending
        return pending

    def close(self, pending: Pending) -> None:
        """The waiter stops waiting: its offer leaves the line (a reserved one settles)."""
        line = self._lines.get(pending.key)
        if line is not None and line.pop(pending.handoff, None) is not None and not line:
            del self._lines[pending.key]

    def reserve(self, key: Hashable, now: float, parked_only: bool = False) -> Handoff | None:
        """The first open offer of the queue (``parked_only``: of a waiter parked, not
        trying a claim or pop of its own), for a publish at ``now``; None if none."""
        line = self._lines.get(key)
        if not line:
            return None
        for pending in line.values():
            if not parked_only or pending.wakeup is not None:
                break
        else:
            return None
        handoff = pending.handoff
        self.close(pending)
        pending.reserved = True
        handoff.now = now
        self._reserved[handoff] = pending
        return handoff

    def settle(self, handoff: Handoff, messages: list[Message]) -> None:
        """The publish holding ``handoff`` is done: ``messages`` were handed over."""
        pending = self._reserved.pop(handoff, None)
        if pending is None:
            return
        if pending.cancelled:
            self._give_back(pending.key, handoff, messages)
            return
        pending.result = messages
        if pending.settled is not None:
            pending.settled.callback(None)
        elif pending.wakeup is not None and not pending.wakeup.called:
            self._wake(pending.key, pending.wakeup)

    async def outcome(self, pending: Pending) -> bool:
        """Wait for a reserved offer to settle; whether it brought messages."""
        if pending.result is None:
            pending.settled = Deferred()
            await pending.settled
        return bool(pending.result)

    def cancel(self, pending: Pending) -> None:
        """The waiter gave up: what a store takes for it from now on goes back."""
        pending.cancelled = True
        pending.handoff.cancel()
        self.close(pending)
        if pending.result:
            messages, pending.result = pending.result, None
            self._give_back(pending.key, pending.handoff, messages)
