"""In-memory storage: the transient-queue backend, and the fake the unit tests run on.

Everything happens synchronously on the calling (reactor) thread; results are wrapped in
already-fired Deferreds. Each queue is a ``MemoryQueue`` (``storage._memory_queue``: the
log and the per-priority claim structures); this module keeps the queues, tenants and
keys and applies the rules (``core.bounds``, ``core.dead_letter``) to them.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import replace
from typing import Any

from zope.interface import implementer

from qgate.core.admin import DepthReport, QueueDepth, top_depths
from qgate.core.avro_bodies import avro_writer
from qgate.core.bounds import admit, drops_oldest, excess, oldest_to_drop
from qgate.core.dead_letter import dead_letter_expiry, dead_letter_options, is_dead
from qgate.core.errors import (
    MessageClaimed,
    QueueExists,
    QueueFull,
    QueueNotFound,
    SchemaChanged,
    UncheckedWriters,
)
from qgate.core.handoff import Handoff, handoff_order
from qgate.core.interfaces import (
    IHandoffStorage,
    ISynchronousStorage,
    ITenantStore,
    ITransientStorage,
)
from qgate.core.limits import resolve_times
from qgate.core.model import (
    Claim,
    Message,
    NewMessage,
    ObserveQuery,
    Queue,
    QueueOptions,
    QueueStats,
)
from qgate.core.usage import TenantUsage
from qgate.storage._fired import fired
from qgate.storage._memory_push import MemoryPush
from qgate.storage._memory_queue import ClaimRecord, MemoryQueue, Msg, Usage, cost
from qgate.storage._memory_subscriptions import MemorySubscriptions, live
from qgate.storage._memory_tenants import MemoryTenants
from qgate.storage._trim import TRIM_AFTER


def _writers(q: MemoryQueue, now: float) -> list[int]:
    """The writer fingerprints named by the content types of the queue's live messages."""
    types = {msg.content_type for msg in q.msgs.values() if msg.expires_at > now}
    found = {avro_writer(t, b"") for t in types}
    return sorted(w[0] for w in found if w is not None)


def _depth(q: MemoryQueue, now: float) -> QueueDepth:
    available = claimed = delayed = 0
    oldest: float | None = None
    for msg in q.msgs.values():
        if msg.expires_at <= now:
            continue
        if msg.claimed(now):
            claimed += 1
        elif msg.visible_at > now:
            delayed += 1
        else:
            available += 1
        oldest = msg.created_at if oldest is None else min(oldest, msg.created_at)
    queue = q.queue
    return QueueDepth(queue.tenant, queue.name, available, claimed, delayed, oldest)


@implementer(ITransientStorage, ITenantStore, ISynchronousStorage, IHandoffStorage)
class MemoryStorage(MemorySubscriptions, MemoryPush, MemoryTenants):
    """Queues held in this process's memory; lost on restart by design. Push
    subscriptions: ``storage._memory_subscriptions``; their delivery state:
    ``storage._memory_push``.

    ``max_bytes`` bounds what every queue together holds (bodies, headers and
    ``MESSAGE_OVERHEAD`` per message; ``[queues] transient_max_bytes``): a publish past it
    is refused with ``QueueFull`` naming the limit. ``tenant_bytes`` tells what one
    tenant's queues hold, for per-tenant quotas. ``trim`` (``storage._trim.HeapTrimmer``)
    is asked to give freed heap back once enough has been freed; without it, nothing is
    trimmed. ``discard`` (``HeapTrimmer.discard``) is handed the containers of a deleted or
    purged queue, to free them a slice at a time; without it they are freed at once."""

    def __init__(
        self,
        max_bytes: int | None = None,
        trim: Callable[[], object] | None = None,
        discard: Callable[..., object] | None = None,
    ) -> None:
        self.max_bytes = max_bytes
        self._trim = trim
        self._discard = discard
        self.usage = Usage()
        self._queues: dict[tuple[str, str], MemoryQueue] = {}
        self._init_tenants()
        self._schemas: dict[int, str] = {}  # writer schemas by fingerprint
        self._owned: set[tuple[str, int]] = set()  # (tenant, fingerprint) registered
        self._dead_lettered: Callable[[str, str, int], None] | None = None

    def _get(self, tenant: str, name: str) -> MemoryQueue:
        q = self._queues.get((tenant, name))
        if q is None:
            raise QueueNotFound(name)
        return q

    def has_queue(self, tenant: str, name: str) -> bool:
        return (tenant, name) in self._queues

    # -- queues ----------------------------------------------------------------------------

    @fired
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
        self._queues[(tenant, name)] = MemoryQueue(queue, self.usage)
        return queue

    @fired
    def get_queue(self, tenant: str, name: str) -> Queue | None:
        q = self._queues.get((tenant, name))
        return None if q is None else q.queue

    @fired
    def update_queue(
        self, tenant: str, name: str, options: QueueOptions, metadata: Mapping[str, Any]
    ) -> Queue:
        q = self._get(tenant, name)
        old = q.queue
        kept = replace(options, schema=old.options.schema, schema_text=old.options.schema_text)
        q.queue = Queue(tenant, name, kept, dict(metadata), old.created_at)
        return q.queue

    @fired
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

    @fired
    def schema_writers(self, tenant: str, name: str, now: float) -> list[int]:
        return _writers(self._get(tenant, name), now)

    @fired
    def put_schema(self, fingerprint: int, text: str) -> None:
        self._schemas.setdefault(fingerprint, text)

    @fired
    def get_schema(self, fingerprint: int) -> str | None:
        return self._schemas.get(fingerprint)

    @fired
    def own_schema(self, tenant: str, fingerprint: int) -> None:
        self._owned.add((tenant, fingerprint))

    @fired
    def owns_schema(self, tenant: str, fingerprint: int) -> bool:
        return (tenant, fingerprint) in self._owned or ("", fingerprint) in self._owned

    @fired
    def delete_queue(self, tenant: str, name: str) -> bool:
        q = self._queues.pop((tenant, name), None)
        if q is None:
            return False
        q.forget()
        if self._discard is not None:
            self._discard(*q.contents())  # freed a slice per reactor turn, then trimmed
        del q  # without discard, its messages are freed now, before the heap is trimmed
        self._give_back()
        return True

    def _give_back(self) -> None:
        """Hand freed heap back to the system once enough has been freed."""
        if self.usage.freed >= TRIM_AFTER:
            self.usage.freed = 0
            if self._trim is not None:
                self._trim()  # in a thread, never here: it stalls for tens of ms

    def tenant_bytes(self, tenant: str) -> int:
        """Bytes ``tenant``'s queues hold here, counted as ``max_bytes`` counts them."""
        return self.usage.by_tenant.get(tenant, 0)

    @property
    def held_bytes(self) -> int:
        """Bytes every queue here holds, counted as ``max_bytes`` counts them."""
        return self.usage.total

    @fired
    def list_queues(self, tenant: str, marker: str | None, limit: int) -> list[Queue]:
        names = sorted(
            n for (t, n) in self._queues if t == tenant and (marker is None or n > marker)
        )
        return [self._queues[(tenant, n)].queue for n in names[:limit]]

    @fired
    def queue_depths(self, now: float, limit: int) -> DepthReport:
        return top_depths([_depth(q, now) for q in self._queues.values()], limit)

    @fired
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

    @fired
    def purge_queue(self, tenant: str, name: str) -> int:
        q = self._get(tenant, name)
        count = len(q.msgs)
        q.forget()
        fresh = MemoryQueue(q.queue, self.usage)
        fresh.next_marker = q.next_marker
        fresh.cursors = q.cursors
        fresh.subscriptions = q.subscriptions
        fresh.push = q.push
        self._queues[(tenant, name)] = fresh
        if self._discard is not None:
            self._discard(*q.contents())
        del q
        self._give_back()
        return count

    # -- messages --------------------------------------------------------------------------

    def publish_now(
        self,
        tenant: str,
        name: str,
        messages: Sequence[NewMessage],
        now: float,
        schema: int | None,
        handoff: Handoff | None = None,
    ) -> list[int]:
        q = self._get(tenant, name)
        options = q.queue.options
        if options.schema != schema:
            raise SchemaChanged(name, options.schema)
        [refused] = admit(name, options, len(q.msgs), q.bytes, [messages])
        if refused is not None:
            raise refused
        if self.max_bytes is not None:
            self._check_room(name, messages)
        times = [resolve_times(m, options, now) for m in messages]
        handed: list[int] = []
        if handoff is not None and not q.has_claimable(now):
            handed = handoff_order(messages, times, now, handoff.limit)
            if handed and not handoff.take():
                handed = []
        popped = set(handed) if handoff is not None and handoff.pop else set()
        if drops_oldest(options):
            self._make_room(q, [m for i, m in enumerate(messages) if i not in popped])
        first = q.next_marker
        q.next_marker += len(messages)
        leased = set(handed) - popped
        out: dict[int, Message] = {}
        for i, (m, (expires_at, available_at)) in enumerate(zip(messages, times, strict=True)):
            msg = Msg(first + i, m, now, expires_at, available_at)
            if i in popped:
                out[i] = msg.freeze()
                continue
            if i in leased:
                assert handoff is not None and handoff.claim_id is not None
                msg.claim_id = handoff.claim_id
                msg.claim_expires = msg.visible_at = now + handoff.ttl
                msg.claim_count = 1
                msg.expires_at = max(msg.expires_at, now + handoff.ttl + handoff.grace)
            q.add(msg, now)
            if i in leased:
                out[i] = msg.freeze()
        if leased:
            assert handoff is not None and handoff.claim_id is not None
            claim = ClaimRecord(handoff.claim_id, handoff.ttl, handoff.grace, now)
            claim.markers = [first + i for i in handed]
            q.claims[claim.id] = claim
        if handoff is not None:
            drained = not q.has_claimable(now)
            wake_at = q.next_visible(now) if drained else None
            handoff.handed([out[i] for i in handed], drained, wake_at)
        return list(range(first, first + len(messages)))

    publish = fired(publish_now)

    def _check_room(self, name: str, messages: Sequence[NewMessage]) -> None:
        """The store-wide ``max_bytes``: the whole batch fits, or nothing is stored."""
        assert self.max_bytes is not None
        size = sum(cost(m.body, m.headers) for m in messages)
        if self.usage.total + size > self.max_bytes:
            raise QueueFull(
                name,
                f"transient queues hold their most bytes (queues.transient_max_bytes = "
                f"{self.max_bytes}; {self.usage.total} held, this publish needs {size})",
            )

    def _make_room(self, q: MemoryQueue, messages: Sequence[NewMessage]) -> None:
        """drop_oldest: drop the oldest messages the admitted batch needs room for."""
        size = sum(len(m.body) for m in messages)
        over = excess(q.queue.options, len(q.msgs) + len(messages), q.bytes + size)
        oldest = ((msg.marker, len(msg.body)) for msg in q.after(None))
        for marker in oldest_to_drop(over, oldest):
            q.remove(marker)

    @fired
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

    @fired
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

    @fired
    def pop_messages(
        self,
        tenant: str,
        name: str,
        limit: int,
        now: float,
        handoff: Handoff | None = None,
        prompt: bool = False,
    ) -> list[Message]:
        q = self._get(tenant, name)  # nothing to commit: every pop answers at once
        if handoff is not None and handoff.taken:
            return []
        out = []
        for msg in q.take(limit, now):
            q.remove(msg.marker)
            out.append(msg.freeze())
        if out and handoff is not None:
            handoff.spend()
        return out

    @fired
    def observe(self, tenant: str, name: str, query: ObserveQuery, now: float) -> list[Message]:
        q = self._get(tenant, name)
        out: list[Message] = []
        for msg in q.after(query.after):
            if msg.expires_at <= now:
                continue
            if query.exclude_producer is not None and msg.producer == query.exclude_producer:
                continue
            if msg.claimed(now):
                if not query.include_claimed:
                    continue
            elif msg.visible_at > now and not query.include_delayed:
                continue
            out.append(msg.freeze())
            if len(out) >= query.limit:
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
        handoff: Handoff | None = None,
    ) -> list[Message]:
        q = self._get(tenant, name)
        if handoff is not None and handoff.taken:
            return []
        options = q.queue.options
        claim = ClaimRecord(claim_id, ttl, grace, now)
        out: list[Message] = []
        moved_into: dict[str, int] = {}
        while len(out) < limit:
            taken = q.take(limit - len(out), now)
            if not taken:
                break
            for msg in taken:
                if is_dead(options, msg.claim_count):
                    dlq = self._dead_letter(q, msg, now)
                    if dlq is not None:
                        moved_into[dlq] = moved_into.get(dlq, 0) + 1
                    continue
                msg.claim_id = claim_id
                msg.claim_expires = claim.expires_at
                msg.visible_at = claim.expires_at
                msg.claim_count += 1
                q.keep_until(msg, now + ttl + grace)
                q.schedule(msg, now)
                claim.markers.append(msg.marker)
                out.append(msg.freeze())
        if out:
            q.claims[claim_id] = claim
            if handoff is not None:
                handoff.spend()
        # Last, with the claim complete: a woken waiter may claim at once.
        if moved_into and self._dead_lettered is not None:
            for dlq in sorted(moved_into):
                self._dead_lettered(tenant, dlq, moved_into[dlq])
        return out

    claim = fired(claim_now)

    def on_dead_letter(self, callback: Callable[[str, str, int], None]) -> None:
        self._dead_lettered = callback

    def _dead_letter(self, q: MemoryQueue, msg: Msg, now: float) -> str | None:
        """Move ``msg`` to its queue's dead-letter queue (created on demand), or drop it;
        the name of the queue it went to."""
        q.remove(msg.marker)
        options = q.queue.options
        dlq_name = options.dead_letter_queue
        if dlq_name is None:
            return None
        tenant = q.queue.tenant
        dlq = self._queues.get((tenant, dlq_name))
        if dlq is None:
            dlq = MemoryQueue(
                Queue(tenant, dlq_name, dead_letter_options(options), {}, now), self.usage
            )
            self._queues[(tenant, dlq_name)] = dlq
        moved = Msg(
            dlq.next_marker,
            NewMessage(
                body=msg.body,
                content_type=msg.content_type,
                headers=msg.headers,
                priority=msg.priority,
                producer=msg.producer,
            ),
            msg.created_at,
            dead_letter_expiry(options, msg.expires_at, now),
            now,
        )
        moved.claim_count = msg.claim_count
        dlq.next_marker += 1
        dlq.add(moved, now)
        return dlq_name

    def _live_claim(self, q: MemoryQueue, claim_id: str, now: float) -> ClaimRecord | None:
        claim = q.claims.get(claim_id)
        if claim is None or claim.expires_at <= now:
            return None
        return claim

    def _held(self, q: MemoryQueue, claim: ClaimRecord, now: float) -> list[Msg]:
        held = []
        for marker in claim.markers:
            msg = q.msgs.get(marker)
            if msg is not None and msg.claim_id == claim.id and msg.expires_at > now:
                held.append(msg)
        return held

    @fired
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

    @fired
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
            q.keep_until(msg, now + ttl + grace)
            q.schedule(msg, now)
        return True

    @fired
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

    ack = fired(ack_now)

    @fired
    def next_wake(
        self, tenant: str, name: str, now: float, after: int | None = None
    ) -> float | None:
        q = self._get(tenant, name)
        first = q.next_visible(now)
        if after is None:
            return first
        return min((msg.visible_at for msg in q.after(after) if msg.visible_at > now), default=None)

    @fired
    def reap(self, now: float, limit: int) -> int:
        removed = 0
        for q in list(self._queues.values()):
            live(q, now)  # expired subscriptions go too
            removed += q.reap(now, limit - removed)
            if removed >= limit:
                break
        self._give_back()
        return removed

    # -- durable subscriptions -------------------------------------------------------------

    @fired
    def get_cursor(self, tenant: str, name: str, subscription: str) -> int | None:
        return self._get(tenant, name).cursors.get(subscription)

    @fired
    def set_cursor(self, tenant: str, name: str, subscription: str, marker: int | None) -> None:
        cursors = self._get(tenant, name).cursors
        if marker is None:
            cursors.pop(subscription, None)
        else:
            cursors[subscription] = marker

    @fired
    def tenant_usage(self, tenant: str, now: float) -> TenantUsage:
        queues = messages = nbytes = subscriptions = 0
        for (t, _), q in self._queues.items():
            if t == tenant:
                queues += 1
                messages += len(q.msgs)
                nbytes += q.bytes
                subscriptions += len(live(q, now))
        return TenantUsage(queues, messages, nbytes, subscriptions)

    @fired
    def ping(self) -> bool:
        return True

    @fired
    def close(self) -> None:
        return None
