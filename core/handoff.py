"""``Handoff``: a parked claimer or popper that a publish may give its messages to directly.

A waiting claim (``claim(wait=)``) or pop (``pop_messages(wait=)``) that found nothing
parks; a publish to its queue then offers it to the store (``IQueueStorage.publish(...,
handoff=)``). When the queue holds no claimable message, the store stores the first
``limit`` of the publish's immediately available messages (claim order) already leased to
``claim_id`` in the same transaction, or, for a pop, does not store them at all, and
records them here; the waiter gets them from memory once the publish has committed.

The offer is open while the waiter waits, and while its own claim or pop attempt is on its
way to the store (the attempt carries the offer: ``IQueueStorage.claim(..., handoff=)``).
Whichever store operation comes first in the store's order wins it: a publish ``take``s
it (the attempt then takes nothing), or the attempt, finding messages, ``spend``s it (the
publish then stores its messages as any others). The store's writer may run on another
thread than the waiter's reactor: those and ``cancel`` (the waiter gave up) decide under a
lock. Cancelled first: the store stores the messages as any others. Taken first: the
service gives a claim's messages back after the commit (released as undelivered); a pop's
are gone (a pop is at-most-once), which is logged.
"""

from __future__ import annotations

import threading
from collections.abc import Sequence

from qgate.core.dead_letter import claim_order
from qgate.core.model import Message, NewMessage

_OPEN, _TAKEN, _SPENT, _CANCELLED = 0, 1, 2, 3


class Handoff:
    """One offer of one waiter to one publish. ``claim_id`` None: a pop."""

    __slots__ = (
        "limit",
        "ttl",
        "grace",
        "claim_id",
        "messages",
        "drained",
        "wake_at",
        "now",
        "dirty",
        "_state",
        "_lock",
    )

    def __init__(
        self, limit: int, ttl: float = 0.0, grace: float = 0.0, claim_id: str | None = None
    ) -> None:
        self.limit = limit
        self.ttl = ttl
        self.grace = grace
        self.claim_id = claim_id
        #: What the store handed over, in claim order (set by the store, read after commit).
        self.messages: list[Message] = []
        #: The store: once this publish was stored, the queue had no claimable message.
        self.drained = False
        #: The store, when ``drained``: when the queue's next message becomes claimable
        #: (a delay or a lease ends; the storage's ``next_wake``); None when none will.
        self.wake_at: float | None = None
        #: The service's count of the queue's changes when the offer was made.
        self.dirty = 0
        #: When the publish it is offered to happens (the lease runs from then).
        self.now = 0.0
        self._state = _OPEN
        self._lock = threading.Lock()

    @property
    def pop(self) -> bool:
        return self.claim_id is None

    def take(self) -> bool:
        """The store is about to hand messages over: True unless the waiter gave up."""
        with self._lock:
            if self._state == _OPEN:
                self._state = _TAKEN
            return self._state == _TAKEN

    def spend(self) -> bool:
        """The waiter's own attempt found messages: no publish may take the offer now.
        False when one did already (the attempt must not have taken anything)."""
        with self._lock:
            if self._state == _OPEN:
                self._state = _SPENT
            return self._state != _TAKEN

    @property
    def taken(self) -> bool:
        """A publish took the offer: the waiter's own attempt takes nothing."""
        return self._state == _TAKEN

    def cancel(self) -> bool:
        """The waiter gives up: True when no store took it (nothing to give back)."""
        with self._lock:
            if self._state == _OPEN:
                self._state = _CANCELLED
            return self._state == _CANCELLED

    @property
    def cancelled(self) -> bool:
        return self._state == _CANCELLED

    def handed(self, messages: list[Message], drained: bool, wake_at: float | None) -> None:
        """The store's report (called in the transaction that stores the publish)."""
        self.messages = messages
        self.drained = drained
        self.wake_at = wake_at


def earliest(a: float | None, b: float | None) -> float | None:
    """The earlier of two optional times."""
    if a is None:
        return b
    if b is None:
        return a
    return min(a, b)


def handoff_order(
    messages: Sequence[NewMessage], times: Sequence[tuple[float, float]], now: float, limit: int
) -> list[int]:
    """The indexes of the messages of a publish that a hand-off takes, in claim order:
    the first ``limit`` claimable at ``now`` (``times``: each one's expires_at and
    available_at). Markers grow with the index, so the index stands in for the marker."""
    ready = [i for i, (expires, available) in enumerate(times) if available <= now < expires]
    ready.sort(key=lambda i: claim_order(messages[i].priority, i))
    return ready[:limit]
