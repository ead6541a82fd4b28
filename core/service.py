"""``QueueService``: the one internal queue-service API, over a durable and a transient store."""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Any

from twisted.internet.defer import Deferred, fail, succeed
from twisted.internet.interfaces import IReactorTime
from twisted.python.failure import Failure
from zope.interface import implementer

from qgate.core._claims import to_claim
from qgate.core._ids import as_deferred as _as_deferred
from qgate.core._ids import ids as _ids
from qgate.core._ids import marker as _marker
from qgate.core._ids import markers as _markers
from qgate.core._ids import new_claim_id
from qgate.core._push import PushCalls
from qgate.core._queue_schemas import SCHEMA_RETRIES, PublishCheck, QueueSchemas
from qgate.core._reaper import Reaper
from qgate.core._subscriptions import QueueSubscriptions, SubscriptionCalls
from qgate.core._waiting import QueueWaits
from qgate.core.admin import AdminCalls, IQueueAdmin
from qgate.core.avro_bodies import SCHEMA_TTL
from qgate.core.errors import (
    ClaimNotFound,
    Conflict,
    InvalidArgument,
    MessageNotFound,
    QGateError,
    QueueExists,
    QueueNotFound,
    SchemaChanged,
)
from qgate.core.handoff import Handoff
from qgate.core.interfaces import (
    IQueueService,
    IQueueStorage,
    ISynchronousStorage,
    ITransientStorage,
    IWakeupSource,
)
from qgate.core.limits import (
    Limits,
    check_count,
    check_lease,
    check_messages,
    check_metadata,
    check_name,
    check_number,
    check_options,
    check_subscription,
    check_tenant,
    check_wait,
)
from qgate.core.model import (
    Claim,
    Message,
    NewMessage,
    ObserveQuery,
    Queue,
    QueueOptions,
    QueueStats,
)
from qgate.core.schemas import AvroSchema
from qgate.core.usage import TenantUsage

__all__ = ["SCHEMA_TTL", "QueueService", "new_claim_id"]


@implementer(IQueueService, IQueueAdmin)
class QueueService(SubscriptionCalls, AdminCalls, PushCalls):
    """Routes each queue to its store (transient queues in memory, durable ones in SQL),
    checks every argument against ``limits``, and owns waiting (``core._waiting``): waiters
    park on a per-queue wakeup registry and are woken by publishes and releases, never by
    polling storage.

    Schema-checked queues: ``_schemas`` (``core._queue_schemas``) remembers each queue's
    schema and does the schema part of publishing, reading and changing schemas. Expired
    messages are deleted in the background by ``_reaper`` (``core._reaper``). Push
    subscriptions: ``_subscriptions`` (``core._subscriptions``), whose calls the service
    inherits from ``SubscriptionCalls``; their delivery: ``PushCalls`` (``core._push``)."""

    def __init__(
        self,
        clock: IReactorTime,
        durable: IQueueStorage,
        transient: ITransientStorage,
        limits: Limits | None = None,
        default_options: QueueOptions | None = None,
        reap_interval: float = 5.0,
        reap_batch: int = 1000,
        ping_timeout: float = 2.0,
        wait_jitter: float = 0.0,
    ) -> None:
        self.clock = clock
        self.limits = limits or Limits()
        self.default_options = check_options(default_options or QueueOptions(), self.limits)
        self._durable = durable
        self._transient = transient
        self._waits = QueueWaits(clock, self._store, jitter=wait_jitter)
        self._checked: set[tuple[str, str]] = set()
        # Stores that answer the hot calls synchronously, by identity (memory).
        self._synchronous: dict[int, ISynchronousStorage] = {
            id(store): store
            for store in (durable, transient)
            if ISynchronousStorage.providedBy(store)
        }
        self._ping_timeout = ping_timeout
        self._reaper = Reaper(clock, (transient, durable), reap_interval, reap_batch)
        self._schemas = QueueSchemas(clock, durable, self._store)
        self._subscriptions = QueueSubscriptions(
            clock, self.limits, self._store, lambda tenant, name: self.create_queue(tenant, name)
        )
        # A claim that dead-letters publishes to the dead-letter queue: wake its waiters,
        # and tell whoever counts (``on_dead_lettered``).
        self._dead_lettered: Callable[[int], None] = lambda n: None
        for store in (durable, transient):
            store.on_dead_letter(self._moved_dead)

    def _moved_dead(self, tenant: str, name: str, count: int) -> None:
        self.notify(tenant, name)
        self._dead_lettered(count)

    # -- life cycle ------------------------------------------------------------------------

    def start(self) -> None:
        """Start the background expiry reaper and cross-process wakeups."""
        source = IWakeupSource(self._durable, None)
        if source is not None:
            source.start_wakeups(self.notify)
        self._reaper.start()

    async def _stop(self) -> None:
        self._waits.close()
        self._reaper.stop()
        await self._transient.close()
        await self._durable.close()

    def stop_waiting(self) -> None:
        """The first step of stopping while callers remain (workers finishing): every
        parked wait answers now with what it has, and none parks again."""
        self._waits.close()

    def stop(self) -> Deferred[None]:
        """Stop the reaper; fires once pending writes are committed and stores closed."""
        return Deferred.fromCoroutine(self._stop())

    def reap(self) -> Deferred[int]:
        """Delete expired messages in batches, from every store (one reaper round, now)."""
        return self._reaper.reap()

    def ping(self) -> Deferred[bool]:
        """Whether the durable storage answers (health checks); fails with TimeoutError
        after ``ping_timeout`` seconds, so a database that hangs cannot hang a check."""
        return self._durable.ping().addTimeout(self._ping_timeout, self.clock)

    # -- wakeups ---------------------------------------------------------------------------

    def notify(self, tenant: str, name: str) -> None:
        """Wake waiters of a queue: it may have something claimable or observable."""
        self._waits.notify(tenant, name)

    def waiting(self, tenant: str, name: str) -> int:
        """How many callers are parked waiting on this queue right now."""
        return self._waits.waiting(tenant, name)

    # -- helpers ---------------------------------------------------------------------------

    def _store(self, tenant: str, name: str) -> IQueueStorage:
        key = (tenant, name)
        if key not in self._checked:  # names are checked once, not on every call
            check_tenant(tenant)
            check_name(name)
            if len(self._checked) >= 100_000:
                self._checked.clear()
            self._checked.add(key)
        if self._transient.has_queue(tenant, name):
            return self._transient
        return self._durable

    def _handoffs(self, store: IQueueStorage) -> bool:
        """Whether ``store`` takes hand-offs (``IHandoffStorage``)."""
        return self._waits.handoffs(store)

    def _now(self) -> float:
        return self.clock.seconds()

    # -- queues ----------------------------------------------------------------------------

    @_as_deferred
    async def create_queue(
        self,
        tenant: str,
        name: str,
        options: QueueOptions | None = None,
        metadata: Mapping[str, Any] | None = None,
    ) -> tuple[Queue, bool]:
        check_tenant(tenant)
        check_name(name)
        options = options or self.default_options
        options, schema = self._schemas.parse_options(options)
        options = check_options(options, self.limits)
        metadata = check_metadata({} if metadata is None else metadata)
        existing = await self._find(tenant, name)
        if existing is not None:
            return self._schemas.seen(existing), False
        if schema is not None:
            await self._schemas.register(schema, tenant)
        store = self._durable if options.durable else self._transient
        try:
            queue = await store.create_queue(tenant, name, options, metadata, self._now())
        except QueueExists:
            found = await self._find(tenant, name)
            if found is None:
                raise
            return self._schemas.seen(found), False
        return self._schemas.seen(queue), True

    async def _find(self, tenant: str, name: str) -> Queue | None:
        if self._transient.has_queue(tenant, name):
            return await self._transient.get_queue(tenant, name)
        return await self._durable.get_queue(tenant, name)

    @_as_deferred
    async def get_queue(self, tenant: str, name: str) -> Queue:
        queue = await self._store(tenant, name).get_queue(tenant, name)
        if queue is None:
            raise QueueNotFound(name)
        return self._schemas.seen(queue)

    @_as_deferred
    async def update_queue(
        self,
        tenant: str,
        name: str,
        options: QueueOptions | None = None,
        metadata: Mapping[str, Any] | None = None,
    ) -> Queue:
        store = self._store(tenant, name)
        queue = await store.get_queue(tenant, name)
        if queue is None:
            raise QueueNotFound(name)
        if options is not None:
            check_options(options, self.limits)
            if options.durable != queue.options.durable:
                raise InvalidArgument(
                    "a queue's durability is fixed when it is created", field="durable"
                )
        new_metadata = queue.metadata if metadata is None else check_metadata(metadata)
        # The schema is not changed here (storage keeps it): set_schema checks changes.
        updated = await store.update_queue(tenant, name, options or queue.options, new_metadata)
        self.notify(tenant, name)
        return self._schemas.seen(updated)

    @_as_deferred
    async def delete_queue(self, tenant: str, name: str) -> bool:
        deleted = await self._store(tenant, name).delete_queue(tenant, name)
        self._waits.forget(tenant, name)
        self._schemas.forget(tenant, name)
        return deleted

    @_as_deferred
    async def list_queues(
        self, tenant: str, marker: str | None = None, limit: int = 10
    ) -> list[Queue]:
        check_tenant(tenant)
        limit = check_count(limit, "limit", self.limits.max_page)
        if marker is not None and not isinstance(marker, str):
            raise InvalidArgument("marker must be a queue name", field="marker")
        durable = await self._durable.list_queues(tenant, marker, limit)
        transient = await self._transient.list_queues(tenant, marker, limit)
        merged = sorted([*durable, *transient], key=lambda q: q.name)
        return merged[:limit]

    @_as_deferred
    async def queue_stats(self, tenant: str, name: str) -> QueueStats:
        return await self._store(tenant, name).queue_stats(tenant, name, self._now())

    @_as_deferred
    async def tenant_usage(self, tenant: str) -> TenantUsage:
        """What ``tenant`` holds in every store, counted exactly (``core.usage``)."""
        now = self._now()
        return await self._durable.tenant_usage(tenant, now) + await self._transient.tenant_usage(
            tenant, now
        )

    @_as_deferred
    async def purge_queue(self, tenant: str, name: str) -> int:
        return await self._store(tenant, name).purge_queue(tenant, name)

    # -- messages --------------------------------------------------------------------------

    # publish, claim and ack are the hot path: plain Deferred chains, no coroutine machinery.

    def publish(
        self,
        tenant: str,
        name: str,
        messages: Sequence[NewMessage],
        create: bool = True,
    ) -> Deferred[list[str]]:
        try:
            store = self._store(tenant, name)
            check_messages(messages, self.limits)
        except QGateError as e:
            return fail(e)
        if self._schemas.has_schema(tenant, name):
            return Deferred.fromCoroutine(self._publish_checked(tenant, name, messages, create))
        # The hot path: a queue not known to have a schema is published to as one without;
        # storage refuses with SchemaChanged (storing nothing) if it has one after all.
        # A claim or pop parked on the queue is offered the messages (``core.handoff``).
        now = self._now()
        handoff = self._waits.offer(tenant, name, now) if self._handoffs(store) else None
        fast = self._synchronous.get(id(store))
        if fast is not None:
            try:
                if handoff is None:
                    markers = fast.publish_now(tenant, name, messages, now, None)
                else:
                    markers = fast.publish_now(tenant, name, messages, now, None, handoff=handoff)
            except QGateError:
                self._waits.unsettled(handoff)  # the careful way below says what to do
            else:
                return succeed(self._published(markers, tenant, name, handoff))
            handoff = None
        if handoff is None:
            d = store.publish(tenant, name, messages, now, None)
        else:
            d = store.publish(tenant, name, messages, now, None, handoff=handoff)
        return d.addCallbacks(
            self._published,
            self._publish_again,
            callbackArgs=(tenant, name, handoff),
            errbackArgs=(tenant, name, messages, create, handoff),
        )

    def _publish_again(
        self,
        failure: Failure,
        tenant: str,
        name: str,
        messages: Sequence[NewMessage],
        create: bool,
        handoff: Handoff | None = None,
    ) -> Deferred[list[str]] | Failure:
        """The queue has a schema after all, or did not exist (and ``create`` says to
        create it): publish the careful way. A waiter offered to the publish gets nothing
        from it and tries again."""
        self._waits.unsettled(handoff)
        changed = bool(failure.check(SchemaChanged))
        if not changed and not (create and failure.check(QueueNotFound)):
            return failure
        return Deferred.fromCoroutine(
            self._publish_checked(tenant, name, messages, create, refresh=changed)
        )

    async def _publish_checked(
        self,
        tenant: str,
        name: str,
        messages: Sequence[NewMessage],
        create: bool,
        refresh: bool = False,
    ) -> list[str]:
        check = PublishCheck(tenant, name, messages, refresh)
        for _ in range(SCHEMA_RETRIES):
            store = self._store(tenant, name)
            prepared = await self._schemas.prepare(check, store)
            if prepared is None:
                continue
            stored, fingerprint = prepared
            try:
                markers = await store.publish(tenant, name, stored, self._now(), fingerprint)
            except SchemaChanged:
                check.refresh = True
                continue
            except QueueNotFound:
                if not create:
                    raise
                await self.create_queue(tenant, name)
                continue
            return self._published(markers, tenant, name)
        raise Conflict(f"Queue {name!r} kept changing its schema; try again", field="schema")

    def _published(
        self, markers: list[int], tenant: str, name: str, handoff: Handoff | None = None
    ) -> list[str]:
        """Committed: wake the queue's waiters and hand the offered one its messages,
        before the publisher is answered."""
        self._waits.published(tenant, name, handoff)
        return [str(m) for m in markers]

    @_as_deferred
    async def get_messages(self, tenant: str, name: str, ids: Sequence[str]) -> list[Message]:
        store = self._store(tenant, name)
        if len(ids) > self.limits.max_page:
            raise InvalidArgument(f"at most {self.limits.max_page} ids", field="ids")
        return await store.get_messages(tenant, name, _markers(ids), self._now())

    @_as_deferred
    async def get_message(self, tenant: str, name: str, message_id: str) -> Message:
        store = self._store(tenant, name)
        marker = _marker(message_id)
        found = (
            [] if marker is None else await store.get_messages(tenant, name, [marker], self._now())
        )
        if not found:
            raise MessageNotFound(str(message_id))
        return found[0]

    @_as_deferred
    async def delete_messages(
        self, tenant: str, name: str, ids: Sequence[str], claim_id: str | None = None
    ) -> list[str]:
        store = self._store(tenant, name)
        if len(ids) > self.limits.max_page:
            raise InvalidArgument(f"at most {self.limits.max_page} ids", field="ids")
        deleted = await store.delete_messages(tenant, name, _markers(ids), claim_id, self._now())
        return [str(m) for m in deleted]

    @_as_deferred
    async def pop_messages(
        self, tenant: str, name: str, limit: int, wait: float = 0, prompt: bool = False
    ) -> list[Message]:
        store = self._store(tenant, name)
        limit = check_count(limit, "pop", self.limits.max_claim)
        wait = check_wait(wait, self.limits)
        if wait:
            return await self._waits.pop(store, tenant, name, limit, wait, prompt)
        if prompt:
            return await store.pop_messages(tenant, name, limit, self._now(), prompt=True)
        return await store.pop_messages(tenant, name, limit, self._now())

    @_as_deferred
    async def observe(
        self,
        tenant: str,
        name: str,
        after: str | None = None,
        limit: int = 10,
        include_claimed: bool = False,
        include_delayed: bool = False,
        exclude_producer: str | None = None,
        wait: float = 0,
    ) -> list[Message]:
        store = self._store(tenant, name)
        limit = check_count(limit, "limit", self.limits.max_page)
        wait = check_wait(wait, self.limits)
        start: int | None = None
        if after is not None:
            start = _marker(after)
            if start is None:
                raise InvalidArgument(f"marker {after!r:.40} is not a message id", field="marker")
        query = ObserveQuery(limit, start, include_claimed, include_delayed, exclude_producer)

        async def attempt(store: IQueueStorage) -> list[Message]:
            try:
                return await store.observe(tenant, name, query, self._now())
            except QueueNotFound:
                if not wait:
                    raise
                return []  # a waiter may wait for a queue its first publish creates

        timed = not include_delayed
        return await self._waits.poll(store, tenant, name, wait, attempt, timed=timed, after=start)

    # -- claims ----------------------------------------------------------------------------

    def claim(
        self,
        tenant: str,
        name: str,
        limit: int = 10,
        ttl: float = 60,
        grace: float = 0,
        wait: float = 0,
    ) -> Deferred[Claim | None]:
        try:
            store = self._store(tenant, name)
            limit = check_count(limit, "limit", self.limits.max_claim)
            lease, grace_s = check_lease(ttl, grace, self.limits)
            wait = check_wait(wait, self.limits)
        except QGateError as e:
            return fail(e)
        if wait:
            return Deferred.fromCoroutine(
                self._waits.claim(store, tenant, name, limit, lease, grace_s, wait)
            )
        now = self._now()
        claim_id = new_claim_id()
        fast = self._synchronous.get(id(store))
        if fast is not None:
            try:
                found = fast.claim_now(tenant, name, claim_id, limit, lease, grace_s, now)
            except QGateError as e:
                return fail(e)
            return succeed(to_claim(found, claim_id, name, lease, grace_s, now))
        return store.claim(tenant, name, claim_id, limit, lease, grace_s, now).addCallback(
            to_claim, claim_id, name, lease, grace_s, now
        )

    @_as_deferred
    async def get_claim(self, tenant: str, name: str, claim_id: str) -> Claim:
        store = self._store(tenant, name)
        claim = None
        if isinstance(claim_id, str) and claim_id:
            claim = await store.get_claim(tenant, name, claim_id, self._now())
        if claim is None:
            raise ClaimNotFound(str(claim_id))
        return claim

    @_as_deferred
    async def renew_claim(
        self, tenant: str, name: str, claim_id: str, ttl: float, grace: float = 0
    ) -> None:
        store = self._store(tenant, name)
        lease, grace_s = check_lease(ttl, grace, self.limits)
        if not await store.renew_claim(tenant, name, claim_id, lease, grace_s, self._now()):
            raise ClaimNotFound(str(claim_id))

    @_as_deferred
    async def release(
        self,
        tenant: str,
        name: str,
        claim_id: str,
        ids: Sequence[str] | None = None,
        delay: float = 0,
        undelivered: bool = False,
    ) -> int:
        store = self._store(tenant, name)
        delay = float(check_number(delay, "delay", 0, self.limits.max_delay))
        markers = None if ids is None else _markers(ids)
        count = await store.release(
            tenant, name, claim_id, markers, delay, self._now(), undelivered
        )
        if count:
            self.notify(tenant, name)
        return count

    def ack(self, tenant: str, name: str, claim_id: str, ids: Sequence[str]) -> Deferred[list[str]]:
        try:
            store = self._store(tenant, name)
        except QGateError as e:
            return fail(e)
        fast = self._synchronous.get(id(store))
        if fast is not None:
            try:
                return succeed(
                    _ids(fast.ack_now(tenant, name, claim_id, _markers(ids), self._now()))
                )
            except QGateError as e:
                return fail(e)
        d = store.ack(tenant, name, claim_id, _markers(ids), self._now())
        return d.addCallback(_ids)

    # -- schemas ---------------------------------------------------------------------------

    def parse_schema(self, schema: str | bytes | Mapping[str, Any] | list[Any]) -> AvroSchema:
        return self._schemas.parse(schema)

    def register_schema(
        self, schema: str | bytes | Mapping[str, Any] | list[Any], tenant: str | None = None
    ) -> Deferred[int]:
        return Deferred.fromCoroutine(self._schemas.register_schema(schema, tenant))

    def set_schema(
        self, tenant: str, name: str, schema: str | bytes | Mapping[str, Any] | list[Any]
    ) -> Deferred[int]:
        return Deferred.fromCoroutine(self._schemas.set_schema(tenant, name, schema))

    def clear_schema(self, tenant: str, name: str) -> Deferred[None]:
        return Deferred.fromCoroutine(self._schemas.clear_schema(tenant, name))

    @_as_deferred
    async def get_schema(self, tenant: str, name: str) -> tuple[int, str] | None:
        queue = await self.get_queue(tenant, name)
        options = queue.options
        if options.schema is None or options.schema_text is None:
            return None
        return options.schema, options.schema_text

    def decode_bodies(
        self, tenant: str, name: str, messages: Sequence[Message]
    ) -> Deferred[dict[int, Any]]:
        return Deferred.fromCoroutine(self._schemas.decode_bodies(tenant, name, messages))

    def resolve_bodies(
        self, tenant: str, name: str, messages: Sequence[Message]
    ) -> Deferred[list[Message]]:
        return Deferred.fromCoroutine(self._schemas.resolve_bodies(tenant, name, messages))

    # -- durable subscriptions -------------------------------------------------------------

    @_as_deferred
    async def get_cursor(self, tenant: str, name: str, subscription: str) -> str | None:
        store = self._store(tenant, name)
        marker = await store.get_cursor(tenant, name, check_subscription(subscription))
        return None if marker is None else str(marker)

    @_as_deferred
    async def set_cursor(
        self, tenant: str, name: str, subscription: str, marker: str | None
    ) -> None:
        store = self._store(tenant, name)
        value = None
        if marker is not None:
            value = _marker(marker)
            if value is None:
                raise InvalidArgument(f"{marker!r:.40} is not a message id", field="marker")
        await store.set_cursor(tenant, name, check_subscription(subscription), value)
