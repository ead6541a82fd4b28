"""In-memory storage: the transient-queue backend, and the fake the unit tests run on.

Everything happens synchronously on the calling (reactor) thread; results are wrapped in
already-fired Deferreds. Per queue, messages sit in a dict by marker plus an append-only
list of markers (markers only grow, so both are in log order; observers bisect the list)
and in the claim structures: per priority, a FIFO of fresh messages (published in marker
order, so a deque is enough and claiming stays O(1) however long the backlog) beside a
heap of returned ones (released, lease ended, delay over), and one ``waiting`` heap of
delayed or leased messages by the time they become claimable. Entries carry the message's
generation, so a stale entry is skipped instead of searched for and removed.
"""

from __future__ import annotations

import heapq
from bisect import bisect_right
from collections import deque
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import replace
from typing import Any, ParamSpec, TypeVar

from twisted.internet.defer import Deferred, fail, succeed
from zope.interface import implementer

from qgate.core.avro_bodies import avro_writer
from qgate.core.errors import (
    MessageClaimed,
    QGateError,
    QueueExists,
    QueueFull,
    QueueNotFound,
    SchemaChanged,
    UncheckedWriters,
)
from qgate.core.interfaces import ISynchronousStorage, ITenantStore, ITransientStorage
from qgate.core.limits import check_post_size, resolve_times
from qgate.core.model import (
    Claim,
    Message,
    NewMessage,
    Overflow,
    Queue,
    QueueOptions,
    QueueStats,
    Tenant,
)

P = ParamSpec("P")
T = TypeVar("T")


def _deferred(f: Callable[P, T]) -> Callable[P, Deferred[T]]:
    """Run ``f`` now; hand its result or its core error back as a fired Deferred."""

    def wrapper(*args: P.args, **kwargs: P.kwargs) -> Deferred[T]:
        try:
            return succeed(f(*args, **kwargs))
        except QGateError as e:
            return fail(e)

    wrapper.__name__ = f.__name__
    wrapper.__doc__ = f.__doc__
    return wrapper


class _Msg:
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


class _Claim:
    __slots__ = ("id", "ttl", "grace", "created_at", "expires_at", "markers")

    def __init__(self, claim_id: str, ttl: float, grace: float, now: float) -> None:
        self.id = claim_id
        self.ttl = ttl
        self.grace = grace
        self.created_at = now
        self.expires_at = now + ttl
        self.markers: list[int] = []


class _Queue:
    def __init__(self, queue: Queue) -> None:
        self.queue = queue
        self.next_marker = 1
        self.msgs: dict[int, _Msg] = {}
        # Markers in log order, with removed ones left behind until they are half the list.
        self.order: list[int] = []
        self.head = 0  # no live marker sits before order[head]
        self.removed = 0
        # Claimable, per priority 0-9: fresh ones in publish order, returned ones by marker.
        self.fresh: list[deque[tuple[int, int]]] = [deque() for _ in range(10)]
        self.returned: list[list[tuple[int, int]]] = [[] for _ in range(10)]
        self.waiting: list[tuple[float, int, int]] = []  # (visible_at, marker, gen)
        self.expiry: list[tuple[float, int]] = []  # (expires_at, marker)
        self.claims: dict[str, _Claim] = {}
        self.bytes = 0
        self.cursors: dict[str, int] = {}

    # -- the heaps -------------------------------------------------------------------------

    def schedule(self, msg: _Msg, now: float) -> None:
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

    def take(self, limit: int, now: float) -> list[_Msg]:
        """Pop up to ``limit`` claimable messages in claim order: highest priority first,
        lowest marker first within a priority."""
        self.advance(now)
        out: list[_Msg] = []
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

    # -- membership ------------------------------------------------------------------------

    def add(self, msg: _Msg, now: float) -> None:
        self.msgs[msg.marker] = msg
        self.order.append(msg.marker)
        self.bytes += len(msg.body)
        heapq.heappush(self.expiry, (msg.expires_at, msg.marker))
        msg.gen = 0
        self.schedule(msg, now)

    def remove(self, marker: int) -> _Msg | None:
        msg = self.msgs.pop(marker, None)
        if msg is not None:
            self.bytes -= len(msg.body)
            self.removed += 1
            if self.removed > 64 and self.removed * 2 > len(self.order):
                self.order = list(self.msgs)  # dicts keep insertion (= marker) order
                self.head = self.removed = 0
        return msg

    def after(self, marker: int | None) -> Iterator[_Msg]:
        """Live messages with markers above ``marker`` (all when None), in log order."""
        order, msgs = self.order, self.msgs
        i = self.head if marker is None else bisect_right(order, marker)
        while i < len(order):
            msg = msgs.get(order[i])
            i += 1
            if msg is not None:
                yield msg

    def oldest(self) -> _Msg | None:
        order, msgs = self.order, self.msgs
        while self.head < len(order):
            msg = msgs.get(order[self.head])
            if msg is not None:
                return msg
            self.head += 1
        return None

    def live(self, marker: int, now: float) -> _Msg | None:
        msg = self.msgs.get(marker)
        if msg is None or msg.expires_at <= now:
            return None
        return msg


def _writers(q: _Queue, now: float) -> list[int]:
    """The writer fingerprints named by the content types of the queue's live messages."""
    types = {msg.content_type for msg in q.msgs.values() if msg.expires_at > now}
    found = {avro_writer(t, b"") for t in types}
    return sorted(w[0] for w in found if w is not None)


@implementer(ITransientStorage, ITenantStore, ISynchronousStorage)
class MemoryStorage:
    """Queues held in this process's memory; lost on restart by design."""

    def __init__(self) -> None:
        self._queues: dict[tuple[str, str], _Queue] = {}
        self._tenants: dict[str, Tenant] = {}
        self._keys: dict[str, tuple[str, str, bool]] = {}  # id -> (tenant, hash, revoked)
        self._schemas: dict[int, str] = {}  # writer schemas by fingerprint

    def _get(self, tenant: str, name: str) -> _Queue:
        q = self._queues.get((tenant, name))
        if q is None:
            raise QueueNotFound(name)
        return q

    def has_queue(self, tenant: str, name: str) -> bool:
        return (tenant, name) in self._queues

    # -- queues ----------------------------------------------------------------------------

    @_deferred
    def create_queue(
        self,
        tenant: str,
        name: str,
        options: QueueOptions,
        metadata: Mapping[str, Any],
        now: float,
    ) -> Queue:
        if (tenant, name) in self._queues:
            raise QueueExists(name)
        queue = Queue(tenant, name, options, dict(metadata), now)
        self._queues[(tenant, name)] = _Queue(queue)
        return queue

    @_deferred
    def get_queue(self, tenant: str, name: str) -> Queue | None:
        q = self._queues.get((tenant, name))
        return None if q is None else q.queue

    @_deferred
    def update_queue(
        self, tenant: str, name: str, options: QueueOptions, metadata: Mapping[str, Any]
    ) -> Queue:
        q = self._get(tenant, name)
        old = q.queue
        kept = replace(options, schema=old.options.schema, schema_text=old.options.schema_text)
        q.queue = Queue(tenant, name, kept, dict(metadata), old.created_at)
        return q.queue

    @_deferred
    def set_queue_schema(
        self,
        tenant: str,
        name: str,
        fingerprint: int | None,
        text: str | None,
        writers: Sequence[int],
        now: float,
    ) -> Queue:
        q = self._get(tenant, name)
        old = q.queue
        if fingerprint is not None:
            unchecked = set(_writers(q, now)) - set(writers) - {fingerprint}
            if unchecked:
                raise UncheckedWriters(name, sorted(unchecked))
        options = replace(old.options, schema=fingerprint, schema_text=text)
        q.queue = Queue(tenant, name, options, old.metadata, old.created_at)
        return q.queue

    @_deferred
    def schema_writers(self, tenant: str, name: str, now: float) -> list[int]:
        return _writers(self._get(tenant, name), now)

    @_deferred
    def put_schema(self, fingerprint: int, text: str) -> None:
        self._schemas.setdefault(fingerprint, text)

    @_deferred
    def get_schema(self, fingerprint: int) -> str | None:
        return self._schemas.get(fingerprint)

    @_deferred
    def delete_queue(self, tenant: str, name: str) -> bool:
        return self._queues.pop((tenant, name), None) is not None

    @_deferred
    def list_queues(self, tenant: str, marker: str | None, limit: int) -> list[Queue]:
        names = sorted(
            n for (t, n) in self._queues if t == tenant and (marker is None or n > marker)
        )
        return [self._queues[(tenant, n)].queue for n in names[:limit]]

    @_deferred
    def queue_stats(self, tenant: str, name: str, now: float) -> QueueStats:
        q = self._get(tenant, name)
        total = available = claimed = delayed = 0
        oldest = newest = None
        for msg in q.msgs.values():
            if msg.expires_at <= now:
                continue
            total += 1
            if msg.claimed(now):
                claimed += 1
            elif msg.visible_at > now:
                delayed += 1
            else:
                available += 1
            if oldest is None:
                oldest = msg
            newest = msg
        return QueueStats(
            total=total,
            available=available,
            claimed=claimed,
            delayed=delayed,
            oldest=oldest.freeze() if oldest else None,
            newest=newest.freeze() if newest else None,
        )

    @_deferred
    def purge_queue(self, tenant: str, name: str) -> int:
        q = self._get(tenant, name)
        count = len(q.msgs)
        fresh = _Queue(q.queue)
        fresh.next_marker = q.next_marker
        fresh.cursors = q.cursors
        self._queues[(tenant, name)] = fresh
        return count

    # -- messages --------------------------------------------------------------------------

    def publish_now(
        self,
        tenant: str,
        name: str,
        messages: Sequence[NewMessage],
        now: float,
        schema: int | None,
    ) -> list[int]:
        q = self._get(tenant, name)
        options = q.queue.options
        if options.schema != schema:
            raise SchemaChanged(name, options.schema)
        check_post_size(name, options, messages)
        self._make_room(q, messages)
        markers = []
        for m in messages:
            expires_at, available_at = resolve_times(m, options, now)
            msg = _Msg(q.next_marker, m, now, expires_at, available_at)
            q.next_marker += 1
            q.add(msg, now)
            markers.append(msg.marker)
        return markers

    publish = _deferred(publish_now)

    def _make_room(self, q: _Queue, messages: Sequence[NewMessage]) -> None:
        """Apply the queue's bounds to a whole batch before any of it is stored."""
        options = q.queue.options
        max_messages, max_bytes = options.max_messages, options.max_bytes
        if max_messages is None and max_bytes is None:
            return
        count = len(messages)
        size = sum(len(m.body) for m in messages)
        if max_messages is not None and count > max_messages:
            raise QueueFull(q.queue.name, f"a batch of {count} exceeds max_messages")
        if max_bytes is not None and size > max_bytes:
            raise QueueFull(q.queue.name, f"a batch of {size} bytes exceeds max_bytes")
        over_count = max_messages is not None and len(q.msgs) + count > max_messages
        over_bytes = max_bytes is not None and q.bytes + size > max_bytes
        if not (over_count or over_bytes):
            return
        if options.overflow is Overflow.REJECT:
            what = "max_messages" if over_count else "max_bytes"
            raise QueueFull(q.queue.name, f"{what} reached")
        while q.msgs and (
            (max_messages is not None and len(q.msgs) + count > max_messages)
            or (max_bytes is not None and q.bytes + size > max_bytes)
        ):
            oldest = q.oldest()
            assert oldest is not None
            q.remove(oldest.marker)

    @_deferred
    def get_messages(
        self, tenant: str, name: str, markers: Sequence[int], now: float
    ) -> list[Message]:
        q = self._get(tenant, name)
        out = []
        for marker in markers:
            msg = q.live(marker, now)
            if msg is not None:
                out.append(msg.freeze())
        return out

    @_deferred
    def delete_messages(
        self,
        tenant: str,
        name: str,
        markers: Sequence[int],
        claim_id: str | None,
        now: float,
    ) -> list[int]:
        q = self._get(tenant, name)
        doomed = []
        for marker in sorted(set(markers)):
            msg = q.msgs.get(marker)
            if msg is None:
                continue
            if claim_id is None:
                if msg.claimed(now):
                    raise MessageClaimed(str(marker))
            elif msg.claim_id != claim_id:
                continue
            doomed.append(marker)
        for marker in doomed:
            q.remove(marker)
        return doomed

    @_deferred
    def pop_messages(self, tenant: str, name: str, limit: int, now: float) -> list[Message]:
        q = self._get(tenant, name)
        out = []
        for msg in q.take(limit, now):
            q.remove(msg.marker)
            out.append(msg.freeze())
        return out

    @_deferred
    def observe(
        self,
        tenant: str,
        name: str,
        after: int | None,
        limit: int,
        include_claimed: bool,
        include_delayed: bool,
        exclude_producer: str | None,
        now: float,
    ) -> list[Message]:
        q = self._get(tenant, name)
        out: list[Message] = []
        for msg in q.after(after):
            if msg.expires_at <= now:
                continue
            if exclude_producer is not None and msg.producer == exclude_producer:
                continue
            if msg.claimed(now):
                if not include_claimed:
                    continue
            elif msg.visible_at > now and not include_delayed:
                continue
            out.append(msg.freeze())
            if len(out) >= limit:
                break
        return out

    # -- claims ----------------------------------------------------------------------------

    def claim_now(
        self,
        tenant: str,
        name: str,
        claim_id: str,
        limit: int,
        ttl: float,
        grace: float,
        now: float,
    ) -> list[Message]:
        q = self._get(tenant, name)
        options = q.queue.options
        max_count = options.max_claim_count
        claim = _Claim(claim_id, ttl, grace, now)
        out: list[Message] = []
        while len(out) < limit:
            taken = q.take(limit - len(out), now)
            if not taken:
                break
            for msg in taken:
                if max_count is not None and msg.claim_count >= max_count:
                    self._dead_letter(q, msg, now)
                    continue
                msg.claim_id = claim_id
                msg.claim_expires = claim.expires_at
                msg.visible_at = claim.expires_at
                msg.claim_count += 1
                if msg.expires_at < now + ttl + grace:
                    msg.expires_at = now + ttl + grace
                    heapq.heappush(q.expiry, (msg.expires_at, msg.marker))
                q.schedule(msg, now)
                claim.markers.append(msg.marker)
                out.append(msg.freeze())
        if out:
            q.claims[claim_id] = claim
        return out

    claim = _deferred(claim_now)

    def _dead_letter(self, q: _Queue, msg: _Msg, now: float) -> None:
        """Move ``msg`` to its queue's dead-letter queue (created on demand), or drop it."""
        q.remove(msg.marker)
        options = q.queue.options
        dlq_name = options.dead_letter_queue
        if dlq_name is None:
            return
        tenant = q.queue.tenant
        dlq = self._queues.get((tenant, dlq_name))
        if dlq is None:
            # Created in this store, so as durable as the queue it serves (SQL's are durable).
            dlq_options = QueueOptions(durable=options.durable)
            dlq = _Queue(Queue(tenant, dlq_name, dlq_options, {}, now))
            self._queues[(tenant, dlq_name)] = dlq
        ttl = options.dead_letter_ttl or max(msg.expires_at - now, 1.0)
        moved = _Msg(
            dlq.next_marker,
            NewMessage(
                body=msg.body,
                content_type=msg.content_type,
                headers=msg.headers,
                priority=msg.priority,
                producer=msg.producer,
            ),
            msg.created_at,
            now + ttl,
            now,
        )
        moved.claim_count = msg.claim_count
        dlq.next_marker += 1
        dlq.add(moved, now)

    def _live_claim(self, q: _Queue, claim_id: str, now: float) -> _Claim | None:
        claim = q.claims.get(claim_id)
        if claim is None or claim.expires_at <= now:
            return None
        return claim

    def _held(self, q: _Queue, claim: _Claim, now: float) -> list[_Msg]:
        held = []
        for marker in claim.markers:
            msg = q.msgs.get(marker)
            if msg is not None and msg.claim_id == claim.id and msg.expires_at > now:
                held.append(msg)
        return held

    @_deferred
    def get_claim(self, tenant: str, name: str, claim_id: str, now: float) -> Claim | None:
        q = self._get(tenant, name)
        claim = self._live_claim(q, claim_id, now)
        if claim is None:
            return None
        return Claim(
            id=claim.id,
            queue=name,
            ttl=claim.ttl,
            grace=claim.grace,
            created_at=claim.created_at,
            expires_at=claim.expires_at,
            messages=tuple(m.freeze() for m in self._held(q, claim, now)),
        )

    @_deferred
    def renew_claim(
        self, tenant: str, name: str, claim_id: str, ttl: float, grace: float, now: float
    ) -> bool:
        q = self._get(tenant, name)
        claim = self._live_claim(q, claim_id, now)
        if claim is None:
            return False
        claim.ttl = ttl
        claim.grace = grace
        claim.expires_at = now + ttl
        for msg in self._held(q, claim, now):
            msg.claim_expires = msg.visible_at = claim.expires_at
            if msg.expires_at < now + ttl + grace:
                msg.expires_at = now + ttl + grace
                heapq.heappush(q.expiry, (msg.expires_at, msg.marker))
            q.schedule(msg, now)
        return True

    @_deferred
    def release(
        self,
        tenant: str,
        name: str,
        claim_id: str,
        markers: Sequence[int] | None,
        delay: float,
        now: float,
        undelivered: bool = False,
    ) -> int:
        q = self._get(tenant, name)
        claim = q.claims.get(claim_id)
        if claim is None:
            return 0
        wanted = None if markers is None else set(markers)
        count = 0
        for msg in self._held(q, claim, now):
            if wanted is not None and msg.marker not in wanted:
                continue
            msg.claim_id = None
            msg.claim_expires = None
            msg.visible_at = now + delay
            if undelivered and msg.claim_count > 0:
                msg.claim_count -= 1  # this claim never reached a consumer: it does not count
            q.schedule(msg, now)
            count += 1
        if wanted is None or not self._held(q, claim, now):
            del q.claims[claim_id]
        return count

    def ack_now(
        self, tenant: str, name: str, claim_id: str, markers: Sequence[int], now: float
    ) -> list[int]:
        q = self._get(tenant, name)
        done = []
        for marker in markers:
            msg = q.msgs.get(marker)
            if msg is not None and msg.claim_id == claim_id:
                q.remove(marker)
                done.append(marker)
        if len(done) > 1:
            done.sort()  # in marker order, as SQL answers
        return done

    ack = _deferred(ack_now)

    @_deferred
    def next_wake(
        self, tenant: str, name: str, now: float, after: int | None = None
    ) -> float | None:
        q = self._get(tenant, name)
        q.advance(now)
        while q.waiting:
            when, marker, gen = q.waiting[0]
            msg = q.msgs.get(marker)
            if msg is not None and msg.gen == gen:
                break
            heapq.heappop(q.waiting)
        if after is None:
            return q.waiting[0][0] if q.waiting else None
        return min((msg.visible_at for msg in q.after(after) if msg.visible_at > now), default=None)

    @_deferred
    def reap(self, now: float, limit: int) -> int:
        removed = 0
        for q in list(self._queues.values()):
            while q.expiry and q.expiry[0][0] <= now and removed < limit:
                _, marker = heapq.heappop(q.expiry)
                msg = q.msgs.get(marker)
                if msg is not None and msg.expires_at <= now:
                    q.remove(marker)
                    removed += 1
            for claim_id in [c.id for c in q.claims.values() if c.expires_at <= now]:
                del q.claims[claim_id]
            if removed >= limit:
                break
        return removed

    # -- durable subscriptions -------------------------------------------------------------

    @_deferred
    def get_cursor(self, tenant: str, name: str, subscription: str) -> int | None:
        return self._get(tenant, name).cursors.get(subscription)

    @_deferred
    def set_cursor(self, tenant: str, name: str, subscription: str, marker: int | None) -> None:
        cursors = self._get(tenant, name).cursors
        if marker is None:
            cursors.pop(subscription, None)
        else:
            cursors[subscription] = marker

    # -- tenants ---------------------------------------------------------------------------

    @_deferred
    def create_tenant(self, name: str, now: float) -> tuple[Tenant, bool]:
        if name in self._tenants:
            return self._tenants[name], False
        tenant = self._tenants[name] = Tenant(name, now)
        return tenant, True

    @_deferred
    def get_tenant(self, name: str) -> Tenant | None:
        return self._tenants.get(name)

    @_deferred
    def list_tenants(self) -> list[Tenant]:
        return [self._tenants[n] for n in sorted(self._tenants)]

    @_deferred
    def add_key(self, tenant: str, key_id: str, secret_hash: str, now: float) -> None:
        self._keys[key_id] = (tenant, secret_hash, False)

    @_deferred
    def find_key(self, key_id: str) -> tuple[str, str] | None:
        found = self._keys.get(key_id)
        if found is None or found[2]:
            return None
        return found[0], found[1]

    @_deferred
    def revoke_key(self, key_id: str, now: float) -> bool:
        found = self._keys.get(key_id)
        if found is None or found[2]:
            return False
        self._keys[key_id] = (found[0], found[1], True)
        return True

    @_deferred
    def ping(self) -> bool:
        return True

    @_deferred
    def close(self) -> None:
        return None
