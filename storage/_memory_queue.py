"""The in-memory queue: messages by marker in log order, and the claim structures.

Per queue, messages sit in a dict by marker plus an append-only list of markers (markers
only grow, so both are in log order; observers bisect the list) and in the claim
structures: per priority, a FIFO of fresh messages (published in marker order, so a deque
is enough and claiming stays O(1) however long the backlog) beside a heap of returned ones
(released, lease ended, delay over), and one ``waiting`` heap of delayed or leased
messages by the time they become claimable. Entries carry the message's generation, so a
stale entry is skipped instead of searched for and removed. An ``expiry`` heap finds what
the reaper removes.

No Deferreds and no queue semantics beyond claim order here: ``storage.memory`` holds
the queues and decides (with ``core.bounds`` and ``core.dead_letter``) what to do.
"""

from __future__ import annotations

import heapq
from bisect import bisect_right
from collections import deque
from collections.abc import Iterator, Mapping
from typing import Any

from qgate.core.model import Message, NewMessage, Queue, Subscription

#: Bytes a stored message is counted for besides its body and headers (its objects and
#: index entries), toward ``MemoryStorage(max_bytes=...)``.
MESSAGE_OVERHEAD = 512


class Usage:
    """Bytes the queues of one store hold (bodies, headers and ``MESSAGE_OVERHEAD`` per
    message), in total and per tenant."""

    __slots__ = ("total", "by_tenant", "freed")

    def __init__(self) -> None:
        self.total = 0
        self.by_tenant: dict[str, int] = {}
        #: Bytes freed since the owner last gave memory back (``storage._trim``).
        self.freed = 0

    def change(self, tenant: str, delta: int) -> None:
        self.total += delta
        if delta < 0:
            self.freed -= delta
        held = self.by_tenant.get(tenant, 0) + delta
        if held > 0:
            self.by_tenant[tenant] = held
        else:
            self.by_tenant.pop(tenant, None)


def cost(body: bytes, headers: dict[str, str] | Mapping[str, str]) -> int:
    """What a message is counted for in a ``Usage``."""
    size = len(body) + MESSAGE_OVERHEAD
    for k, v in headers.items():
        size += len(k) + len(v)
    return size


class Msg:
    """A stored message; its lease, visibility and generation change in place."""

    __slots__ = (
        "marker",
        "body",
        "content_type",
        "headers",
        "producer",
        "priority",
        "created_at",
        "expires_at",
        "available_at",
        "visible_at",
        "claim_id",
        "claim_expires",
        "claim_count",
        "gen",
    )

    def __init__(
        self, marker: int, m: NewMessage, created_at: float, expires_at: float, available_at: float
    ) -> None:
        self.marker = marker
        self.body = m.body
        self.content_type = m.content_type
        self.headers = dict(m.headers)
        self.producer = m.producer
        self.priority = m.priority
        self.created_at = created_at
        self.expires_at = expires_at
        self.available_at = available_at
        self.visible_at = available_at
        self.claim_id: str | None = None
        self.claim_expires: float | None = None
        self.claim_count = 0
        self.gen = 0

    def freeze(self) -> Message:
        return Message(
            self.marker,
            self.body,
            self.content_type,
            self.headers,
            self.producer,
            self.priority,
            self.created_at,
            self.expires_at,
            self.available_at,
            self.claim_id,
            self.claim_expires,
            self.claim_count,
        )

    def claimed(self, now: float) -> bool:
        return (
            self.claim_id is not None
            and self.claim_expires is not None
            and (self.claim_expires > now)
        )


class ClaimRecord:
    """A claim: its lease, and the markers it took."""

    __slots__ = ("id", "ttl", "grace", "created_at", "expires_at", "markers")

    def __init__(self, claim_id: str, ttl: float, grace: float, now: float) -> None:
        self.id = claim_id
        self.ttl = ttl
        self.grace = grace
        self.created_at = now
        self.expires_at = now + ttl
        self.markers: list[int] = []


class MemoryQueue:
    """One queue: its messages in log order and in claim order, its claims, cursors and
    push subscriptions."""

    def __init__(self, queue: Queue, usage: Usage | None = None) -> None:
        self.queue = queue
        self.usage = usage
        #: What the queue's messages are counted for in ``usage``.
        self.footprint = 0
        self.next_marker = 1
        self.msgs: dict[int, Msg] = {}
        # Markers in log order, with removed ones left behind until they are half the list.
        self.order: list[int] = []
        self.head = 0  # no live marker sits before order[head]
        self.removed = 0
        # Claimable, per priority 0-9: fresh ones in publish order, returned ones by marker.
        self.fresh: list[deque[tuple[int, int]]] = [deque() for _ in range(10)]
        self.returned: list[list[tuple[int, int]]] = [[] for _ in range(10)]
        self.waiting: list[tuple[float, int, int]] = []  # (visible_at, marker, gen)
        self.expiry: list[tuple[float, int]] = []  # (expires_at, marker)
        self.claims: dict[str, ClaimRecord] = {}
        self.bytes = 0
        self.cursors: dict[str, int] = {}
        self.subscriptions: dict[str, Subscription] = {}  # by id
        self.push: dict[str, Any] = {}  # delivery state by subscription id (_memory_push)

    # -- the heaps -------------------------------------------------------------------------

    def schedule(self, msg: Msg, now: float) -> None:
        """Put ``msg`` where it belongs after its visibility changed."""
        msg.gen += 1
        if msg.visible_at > now:
            heapq.heappush(self.waiting, (msg.visible_at, msg.marker, msg.gen))
        elif msg.gen == 1:  # just published: the newest marker, so the FIFO stays sorted
            self.fresh[msg.priority].append((msg.marker, msg.gen))
        else:
            heapq.heappush(self.returned[msg.priority], (msg.marker, msg.gen))

    def advance(self, now: float) -> None:
        """Make messages whose delay or lease has run out claimable again."""
        waiting = self.waiting
        msgs = self.msgs
        while waiting and waiting[0][0] <= now:
            _, marker, gen = heapq.heappop(waiting)
            msg = msgs.get(marker)
            if msg is not None and msg.gen == gen:
                heapq.heappush(self.returned[msg.priority], (marker, gen))

    def take(self, limit: int, now: float) -> list[Msg]:
        """Pop up to ``limit`` claimable messages in claim order (``core.dead_letter.
        claim_order``): highest priority first, lowest marker first within a priority."""
        self.advance(now)
        out: list[Msg] = []
        msgs = self.msgs
        for priority in range(9, -1, -1):
            fresh = self.fresh[priority]
            returned = self.returned[priority]
            while (fresh or returned) and len(out) < limit:
                if returned and (not fresh or returned[0][0] < fresh[0][0]):
                    marker, gen = heapq.heappop(returned)
                else:
                    marker, gen = fresh.popleft()
                msg = msgs.get(marker)
                if msg is None or msg.gen != gen:
                    continue
                if msg.expires_at <= now:
                    continue  # left to reap, as SQL leaves it: bounds and counts agree
                out.append(msg)
            if len(out) >= limit:
                break
        return out

    def has_claimable(self, now: float) -> bool:
        """Whether a claim at ``now`` would find anything (what ``take`` would skip goes)."""
        self.advance(now)
        msgs = self.msgs
        for priority in range(10):
            fresh = self.fresh[priority]
            while fresh:
                msg = msgs.get(fresh[0][0])
                if msg is not None and msg.gen == fresh[0][1] and msg.expires_at > now:
                    return True
                fresh.popleft()
            returned = self.returned[priority]
            while returned:
                msg = msgs.get(returned[0][0])
                if msg is not None and msg.gen == returned[0][1] and msg.expires_at > now:
                    return True
                heapq.heappop(returned)
        return False

    # -- membership ------------------------------------------------------------------------

    def add(self, msg: Msg, now: float) -> None:
        self.msgs[msg.marker] = msg
        self.order.append(msg.marker)
        self.bytes += len(msg.body)
        if self.usage is not None:
            size = cost(msg.body, msg.headers)
            self.footprint += size
            self.usage.change(self.queue.tenant, size)
        heapq.heappush(self.expiry, (msg.expires_at, msg.marker))
        msg.gen = 0
        self.schedule(msg, now)

    def remove(self, marker: int) -> Msg | None:
        msg = self.msgs.pop(marker, None)
        if msg is not None:
            self.bytes -= len(msg.body)
            if self.usage is not None:
                size = cost(msg.body, msg.headers)
                self.footprint -= size
                self.usage.change(self.queue.tenant, -size)
            self.removed += 1
            if self.removed > 64 and self.removed * 2 > len(self.order):
                self.order = list(self.msgs)  # dicts keep insertion (= marker) order
                self.head = self.removed = 0
        return msg

    def after(self, marker: int | None) -> Iterator[Msg]:
        """Live messages with markers above ``marker`` (all when None), in log order."""
        order, msgs = self.order, self.msgs
        if marker is None:
            self.oldest()  # moves head past the removed markers in front, for good
            i = self.head
        else:
            i = bisect_right(order, marker)
        while i < len(order):
            msg = msgs.get(order[i])
            i += 1
            if msg is not None:
                yield msg

    def oldest(self) -> Msg | None:
        order, msgs = self.order, self.msgs
        while self.head < len(order):
            msg = msgs.get(order[self.head])
            if msg is not None:
                return msg
            self.head += 1
        return None

    def live(self, marker: int, now: float) -> Msg | None:
        msg = self.msgs.get(marker)
        if msg is None or msg.expires_at <= now:
            return None
        return msg

    def contents(self) -> list[Any]:
        """The containers that hold its messages and their index entries (for freeing a
        deleted or purged queue a slice at a time: ``storage._trim.HeapTrimmer.discard``)."""
        return [
            self.msgs,
            self.order,
            *self.fresh,
            *self.returned,
            self.waiting,
            self.expiry,
            self.claims,
        ]

    def forget(self) -> None:
        """The queue is deleted or emptied: it no longer counts in its ``usage``."""
        if self.usage is not None and self.footprint:
            self.usage.change(self.queue.tenant, -self.footprint)
        self.footprint = 0

    # -- time ------------------------------------------------------------------------------

    def keep_until(self, msg: Msg, until: float) -> None:
        """A lease's grace: ``msg`` lives at least until ``until``."""
        if msg.expires_at < until:
            msg.expires_at = until
            heapq.heappush(self.expiry, (until, msg.marker))

    def next_visible(self, now: float) -> float | None:
        """When the next delayed or leased message becomes claimable (None: none waits)."""
        self.advance(now)
        waiting, msgs = self.waiting, self.msgs
        while waiting:
            _, marker, gen = waiting[0]
            msg = msgs.get(marker)
            if msg is not None and msg.gen == gen:
                return waiting[0][0]
            heapq.heappop(waiting)
        return None

    def reap(self, now: float, limit: int) -> int:
        """Remove up to ``limit`` expired messages, and every ended claim; how many
        messages went."""
        removed = 0
        while self.expiry and self.expiry[0][0] <= now and removed < limit:
            _, marker = heapq.heappop(self.expiry)
            msg = self.msgs.get(marker)
            if msg is not None and msg.expires_at <= now:
                self.remove(marker)
                removed += 1
        for claim_id in [c.id for c in self.claims.values() if c.expires_at <= now]:
            del self.claims[claim_id]
        return removed
