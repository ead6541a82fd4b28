"""``QueueService``: the one internal queue-service API, over a durable and a transient store."""

from __future__ import annotations

import os
from collections.abc import Callable, Coroutine, Hashable, Mapping, Sequence
from dataclasses import replace
from typing import Any, ParamSpec, TypeVar

from twisted.internet.defer import Deferred, fail, succeed
from twisted.internet.interfaces import IReactorTime
from twisted.internet.task import LoopingCall
from twisted.logger import Logger
from twisted.python.failure import Failure
from zope.interface import implementer

from qgate.core.avro_bodies import QueueBodies, avro_writer, format_fingerprint, schema_from_text
from qgate.core.errors import (
    ClaimNotFound,
    Conflict,
    InvalidArgument,
    MessageNotFound,
    QGateError,
    QueueExists,
    QueueNotFound,
    SchemaChanged,
    UncheckedWriters,
)
from qgate.core.interfaces import (
    IQueueService,
    IQueueStorage,
    ISynchronousStorage,
    ITransientStorage,
    IWakeupSource,
)
from qgate.core.limits import (
    SUBSCRIPTION_RE,
    Limits,
    check_messages,
    check_metadata,
    check_name,
    check_number,
    check_options,
    check_tenant,
)
from qgate.core.model import Claim, Message, NewMessage, Queue, QueueOptions, QueueStats
from qgate.core.schemas import AvroSchema, UnknownSchema, parse_schema
from qgate.core.wakeup import WakeupRegistry

P = ParamSpec("P")
T = TypeVar("T")

log = Logger()

#: Seconds a queue's schema, as this process last saw it, is trusted for reading and for
#: picking up a change of defaults made elsewhere. Fingerprint changes need no waiting:
#: storage checks the fingerprint on every publish (see ``QueueService.publish``).
SCHEMA_TTL = 5.0
#: Times a publish or a schema change is retried when the schema changes under it.
SCHEMA_RETRIES = 4
#: Queues whose schema is remembered before the memory starts over.
MAX_REMEMBERED = 100_000


def _as_deferred(f: Callable[P, Coroutine[Any, Any, T]]) -> Callable[P, Deferred[T]]:
    """Expose a coroutine method as a Deferred-returning one (cancellable)."""

    def wrapper(*args: P.args, **kwargs: P.kwargs) -> Deferred[T]:
        return Deferred.fromCoroutine(f(*args, **kwargs))

    wrapper.__name__ = f.__name__
    wrapper.__doc__ = f.__doc__
    return wrapper


def _marker(message_id: object) -> int | None:
    """The marker behind a message id, or None for an id that cannot exist. "0" is the
    marker before every message (a cursor or ``after`` meaning "from the start")."""
    if isinstance(message_id, int) and not isinstance(message_id, bool):
        return message_id if message_id >= 0 else None
    if isinstance(message_id, str) and message_id.isdigit() and len(message_id) < 20:
        return int(message_id)
    return None


def _markers(ids: Sequence[object]) -> list[int]:
    return [m for m in map(_marker, ids) if m is not None]


def _ids(markers: Sequence[int]) -> list[str]:
    return [str(m) for m in markers]


def new_claim_id() -> str:
    """128 random bits as hex (uuid4's entropy, a fraction of its cost)."""
    return os.urandom(16).hex()


def _to_claim(
    found: list[Message], claim_id: str, name: str, ttl: float, grace: float, now: float
) -> Claim | None:
    if not found:
        return None
    return Claim(
        id=claim_id,
        queue=name,
        ttl=ttl,
        grace=grace,
        created_at=now,
        expires_at=now + ttl,
        messages=tuple(found),
    )


@implementer(IQueueService)
class QueueService:
    """Routes each queue to its store (transient queues in memory, durable ones in SQL),
    checks every argument against ``limits``, and owns waiting: waiters park on a per-queue
    wakeup registry and are woken by publishes and releases, never by polling storage.

    Schema-checked queues: the service remembers, per queue, the schema it last saw
    (``_schemas``; queues without a schema have no entry) and checks publishes against it.
    Storage re-checks the fingerprint in the transaction that stores (``SchemaChanged``),
    so a stale memory costs a retry, never a wrong message, and a queue without a schema
    costs no storage read. The schema registry (writer schemas by fingerprint) lives in the
    durable store: schemas are content-addressed, so every queue shares one."""

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
    ) -> None:
        self.clock = clock
        self.limits = limits or Limits()
        self.default_options = check_options(default_options or QueueOptions(), self.limits)
        self._durable = durable
        self._transient = transient
        self._wakeups = WakeupRegistry(clock)
        self._generations: dict[Hashable, int] = {}
        self._checked: set[tuple[str, str]] = set()
        # Stores that answer the hot calls synchronously, by identity (memory).
        self._synchronous: dict[int, ISynchronousStorage] = {
            id(store): store
            for store in (durable, transient)
            if ISynchronousStorage.providedBy(store)
        }
        self._closing = False
        self._reap_interval = reap_interval
        self._reap_batch = reap_batch
        self._ping_timeout = ping_timeout
        self._reaper: LoopingCall | None = None
        self._bodies = QueueBodies()
        #: (tenant, queue) -> (its schema, when seen), for queues that have one.
        self._schemas: dict[tuple[str, str], tuple[AvroSchema, float]] = {}
        #: (tenant, queue) -> when it was seen without a schema (for readers only).
        self._schemaless: dict[tuple[str, str], float] = {}

    # -- life cycle ------------------------------------------------------------------------

    def start(self) -> None:
        """Start the background expiry reaper and cross-process wakeups."""
        source = IWakeupSource(self._durable, None)
        if source is not None:
            source.start_wakeups(self.notify)
        if self._reaper is None:
            self._reaper = LoopingCall(self._reap_and_carry_on)
            self._reaper.clock = self.clock
            self._reaper.start(self._reap_interval, now=False)

    def _reap_and_carry_on(self) -> Deferred[None]:
        """One reaper round; a failure (the database away for a moment) is logged and the
        next round tries again, instead of stopping the reaper for good."""
        return self.reap().addCallbacks(
            lambda _: None, lambda f: log.failure("reaping expired messages failed", f)
        )

    async def _stop(self) -> None:
        self._closing = True
        self._wakeups.release_all()
        if self._reaper is not None and self._reaper.running:
            self._reaper.stop()
        self._reaper = None
        await self._transient.close()
        await self._durable.close()

    def stop(self) -> Deferred[None]:
        """Stop the reaper; fires once pending writes are committed and stores closed."""
        return Deferred.fromCoroutine(self._stop())

    @_as_deferred
    async def reap(self) -> int:
        """Delete expired messages in batches, from every store."""
        total = 0
        for store in (self._transient, self._durable):
            while True:
                n = await store.reap(self.clock.seconds(), self._reap_batch)
                total += n
                if n < self._reap_batch:
                    break
        return total

    def ping(self) -> Deferred[bool]:
        """Whether the durable storage answers (health checks); fails with TimeoutError
        after ``ping_timeout`` seconds, so a database that hangs cannot hang a check."""
        return self._durable.ping().addTimeout(self._ping_timeout, self.clock)

    # -- wakeups ---------------------------------------------------------------------------

    def notify(self, tenant: str, name: str) -> None:
        """Wake waiters of a queue: it may have something claimable or observable."""
        key = (tenant, name)
        self._generations[key] = self._generations.get(key, 0) + 1
        self._wakeups.notify(key)

    async def _wait(self, key: tuple[str, str], generation: int, until: float) -> bool:
        """Park until the queue is woken or ``until``; False when shutting down (the
        waiter should answer with what it has, now)."""
        if self._closing:
            return False
        if self._generations.get(key, 0) != generation:
            return True
        await self._wakeups.wait(key, until - self.clock.seconds())
        return not self._closing

    def waiting(self, tenant: str, name: str) -> int:
        """How many callers are parked waiting on this queue right now."""
        return self._wakeups.waiting((tenant, name))

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

    def _now(self) -> float:
        return self.clock.seconds()

    def _check_limit(self, limit: object, field: str, high: int) -> int:
        if type(limit) is int and 1 <= limit <= high:
            return limit
        return int(check_number(limit, field, 1, high, integer=True))

    def _check_wait(self, wait: object) -> float:
        if wait == 0 and type(wait) in (int, float):
            return 0.0
        return float(check_number(wait, "wait", 0, self.limits.max_wait))

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
        schema = None
        if options.schema_text is not None:
            schema = self._parse_schema(options.schema_text)
            if options.schema not in (None, schema.fingerprint):
                raise InvalidArgument(
                    "schema is not the fingerprint of schema_text", field="schema"
                )
            options = replace(options, schema=schema.fingerprint, schema_text=schema.text)
        options = check_options(options, self.limits)
        metadata = check_metadata({} if metadata is None else metadata)
        existing = await self._find(tenant, name)
        if existing is not None:
            return self._seen(existing), False
        if schema is not None:
            await self._register(schema)
        store = self._durable if options.durable else self._transient
        try:
            queue = await store.create_queue(tenant, name, options, metadata, self._now())
        except QueueExists:
            found = await self._find(tenant, name)
            if found is None:
                raise
            return self._seen(found), False
        return self._seen(queue), True

    async def _find(self, tenant: str, name: str) -> Queue | None:
        if self._transient.has_queue(tenant, name):
            return await self._transient.get_queue(tenant, name)
        return await self._durable.get_queue(tenant, name)

    @_as_deferred
    async def get_queue(self, tenant: str, name: str) -> Queue:
        queue = await self._store(tenant, name).get_queue(tenant, name)
        if queue is None:
            raise QueueNotFound(name)
        return self._seen(queue)

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
        return self._seen(updated)

    @_as_deferred
    async def delete_queue(self, tenant: str, name: str) -> bool:
        deleted = await self._store(tenant, name).delete_queue(tenant, name)
        self._generations.pop((tenant, name), None)
        self._schemas.pop((tenant, name), None)
        return deleted

    @_as_deferred
    async def list_queues(
        self, tenant: str, marker: str | None = None, limit: int = 10
    ) -> list[Queue]:
        check_tenant(tenant)
        limit = self._check_limit(limit, "limit", self.limits.max_page)
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
        if (tenant, name) in self._schemas:
            return Deferred.fromCoroutine(self._publish_checked(tenant, name, messages, create))
        # The hot path: a queue not known to have a schema is published to as one without;
        # storage refuses with SchemaChanged (storing nothing) if it has one after all.
        fast = self._synchronous.get(id(store))
        if fast is not None:
            try:
                markers = fast.publish_now(tenant, name, messages, self._now(), None)
            except QGateError:
                pass  # the careful way below says what to do about it
            else:
                return succeed(self._published(markers, tenant, name))
        d = store.publish(tenant, name, messages, self._now(), None)
        return d.addCallbacks(
            self._published,
            self._publish_again,
            callbackArgs=(tenant, name),
            errbackArgs=(tenant, name, messages, create),
        )

    def _publish_again(
        self,
        failure: Failure,
        tenant: str,
        name: str,
        messages: Sequence[NewMessage],
        create: bool,
    ) -> Deferred[list[str]] | Failure:
        """The queue has a schema after all, or did not exist (and ``create`` says to
        create it): publish the careful way."""
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
        key = (tenant, name)
        fresh = False  # whether the schema remembered was read during this call
        for _ in range(SCHEMA_RETRIES):
            store = self._store(tenant, name)
            entry = self._schemas.get(key)
            if refresh or (
                entry is not None and not fresh and self._now() - entry[1] >= SCHEMA_TTL
            ):
                entry = await self._refresh_schema(tenant, name, store)
                fresh, refresh = True, False
            stored: Sequence[NewMessage] = messages
            fingerprint = None
            if entry is not None:
                schema, _ = entry
                fingerprint = schema.fingerprint
                await self._load_writers(self._bodies.writers_of(messages, schema))
                try:
                    stored = self._bodies.to_queue_schema(schema, messages)
                except InvalidArgument:
                    if fresh:
                        raise
                    # Refused by the schema remembered: refuse only if it still holds
                    # (it may have been cleared or replaced elsewhere).
                    again = await self._refresh_schema(tenant, name, store)
                    fresh = True
                    if again is not None and again[0].text == schema.text:
                        raise
                    continue
            try:
                markers = await store.publish(tenant, name, stored, self._now(), fingerprint)
            except SchemaChanged:
                refresh = True
                continue
            except QueueNotFound:
                if not create:
                    raise
                await self.create_queue(tenant, name)
                continue
            return self._published(markers, tenant, name)
        raise Conflict(f"Queue {name!r} kept changing its schema; try again", field="schema")

    def _published(self, markers: list[int], tenant: str, name: str) -> list[str]:
        self.notify(tenant, name)
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
    async def pop_messages(self, tenant: str, name: str, limit: int) -> list[Message]:
        store = self._store(tenant, name)
        limit = self._check_limit(limit, "pop", self.limits.max_claim)
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
        limit = self._check_limit(limit, "limit", self.limits.max_page)
        wait = self._check_wait(wait)
        start: int | None = None
        if after is not None:
            start = _marker(after)
            if start is None:
                raise InvalidArgument(f"marker {after!r:.40} is not a message id", field="marker")
        key = (tenant, name)
        deadline = self._now() + wait
        while True:
            generation = self._generations.get(key, 0)
            now = self._now()
            try:
                found = await store.observe(
                    tenant,
                    name,
                    start,
                    limit,
                    include_claimed,
                    include_delayed,
                    exclude_producer,
                    now,
                )
            except QueueNotFound:
                if not wait:
                    raise
                found = []  # a waiter may wait for a queue its first publish creates
            if found or now >= deadline:
                return found
            until = deadline
            if not include_delayed:
                nxt = await self._next_wake(store, tenant, name, now, start)
                if nxt is not None:
                    until = min(until, nxt)
            if not await self._wait(key, generation, until):
                return []
            store = self._store(tenant, name)

    async def _next_wake(
        self, store: IQueueStorage, tenant: str, name: str, now: float, after: int | None
    ) -> float | None:
        try:
            return await store.next_wake(tenant, name, now, after)
        except QueueNotFound:
            return None

    # -- claims ----------------------------------------------------------------------------

    def _check_lease(self, ttl: object, grace: object) -> tuple[float, float]:
        limits = self.limits
        if (
            type(ttl) in (int, float)
            and type(grace) in (int, float)
            and limits.min_lease <= ttl <= limits.max_lease  # type: ignore[operator]
            and 0 <= grace <= limits.max_grace  # type: ignore[operator]
        ):
            return float(ttl), float(grace)  # type: ignore[arg-type]
        lease = float(check_number(ttl, "ttl", limits.min_lease, limits.max_lease))
        grace_s = float(check_number(grace, "grace", 0, limits.max_grace))
        return lease, grace_s

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
            limit = self._check_limit(limit, "limit", self.limits.max_claim)
            lease, grace_s = self._check_lease(ttl, grace)
            wait = self._check_wait(wait)
        except QGateError as e:
            return fail(e)
        if wait:
            return Deferred.fromCoroutine(
                self._claim_waiting(store, tenant, name, limit, lease, grace_s, wait)
            )
        now = self._now()
        claim_id = new_claim_id()
        fast = self._synchronous.get(id(store))
        if fast is not None:
            try:
                found = fast.claim_now(tenant, name, claim_id, limit, lease, grace_s, now)
            except QGateError as e:
                return fail(e)
            return succeed(_to_claim(found, claim_id, name, lease, grace_s, now))
        return store.claim(tenant, name, claim_id, limit, lease, grace_s, now).addCallback(
            _to_claim, claim_id, name, lease, grace_s, now
        )

    async def _claim_waiting(
        self,
        store: IQueueStorage,
        tenant: str,
        name: str,
        limit: int,
        lease: float,
        grace: float,
        wait: float,
    ) -> Claim | None:
        key = (tenant, name)
        deadline = self._now() + wait
        while True:
            generation = self._generations.get(key, 0)
            now = self._now()
            claim_id = new_claim_id()
            try:
                found = await self._claim_once(store, tenant, name, claim_id, limit, lease, grace)
            except QueueNotFound:
                found = []  # wait for the publish that creates the queue
            if found:
                return _to_claim(found, claim_id, name, lease, grace, now)
            now = self._now()
            if now >= deadline:
                return None
            until = deadline
            nxt = await self._next_wake(store, tenant, name, now, None)
            if nxt is not None:
                until = min(until, nxt)
            if not await self._wait(key, generation, until):
                return None
            store = self._store(tenant, name)

    def _claim_once(
        self,
        store: IQueueStorage,
        tenant: str,
        name: str,
        claim_id: str,
        limit: int,
        ttl: float,
        grace: float,
    ) -> Deferred[list[Message]]:
        """Claim, shielded from cancellation: a caller that gives up while the store is
        working gets CancelledError at once, and whatever the store then leases to it goes
        straight back to the queue instead of waiting out the lease."""
        result: Deferred[list[Message]] = Deferred(lambda d: None)

        def done(found: list[Message]) -> None:
            if not result.called:
                result.callback(found)
            elif found:
                store.release(tenant, name, claim_id, None, 0, self._now()).addCallbacks(
                    lambda _: self.notify(tenant, name),
                    lambda f: log.failure("releasing an abandoned claim failed", f),
                )

        def failed(f: Any) -> None:
            if not result.called:
                result.errback(f)

        store.claim(tenant, name, claim_id, limit, ttl, grace, self._now()).addCallbacks(
            done, failed
        )
        return result

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
        lease, grace_s = self._check_lease(ttl, grace)
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
    ) -> int:
        store = self._store(tenant, name)
        delay = float(check_number(delay, "delay", 0, self.limits.max_delay))
        markers = None if ids is None else _markers(ids)
        count = await store.release(tenant, name, claim_id, markers, delay, self._now())
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

    def _seen(self, queue: Queue) -> Queue:
        """Remember the schema of a queue just read from storage; returns the queue."""
        key = (queue.tenant, queue.name)
        text = queue.options.schema_text
        if text is None:
            self._schemas.pop(key, None)
            self._remember(self._schemaless, key, self._now())
        else:
            self._schemaless.pop(key, None)
            self._remember(self._schemas, key, (schema_from_text(text), self._now()))
        return queue

    @staticmethod
    def _remember(memory: dict[tuple[str, str], T], key: tuple[str, str], value: T) -> None:
        if len(memory) >= MAX_REMEMBERED and key not in memory:
            memory.clear()
        memory[key] = value

    def _forget_schema(self, tenant: str, name: str) -> None:
        self._schemas.pop((tenant, name), None)
        self._schemaless.pop((tenant, name), None)

    async def _refresh_schema(
        self, tenant: str, name: str, store: IQueueStorage
    ) -> tuple[AvroSchema, float] | None:
        """Read the queue's schema from storage again; None when it has none (or the queue
        is gone: the publish that follows will say so)."""
        self._forget_schema(tenant, name)
        queue = await store.get_queue(tenant, name)
        if queue is not None:
            self._seen(queue)
        return self._schemas.get((tenant, name))

    async def _queue_schema(self, tenant: str, name: str) -> AvroSchema | None:
        """The queue's schema for readers: remembered for ``SCHEMA_TTL`` seconds."""
        key = (tenant, name)
        now = self._now()
        entry = self._schemas.get(key)
        if entry is not None and now - entry[1] < SCHEMA_TTL:
            return entry[0]
        seen = self._schemaless.get(key)
        if entry is None and seen is not None and now - seen < SCHEMA_TTL:
            return None
        entry = await self._refresh_schema(tenant, name, self._store(tenant, name))
        return None if entry is None else entry[0]

    def _parse_schema(self, schema: object) -> AvroSchema:
        if isinstance(schema, bytes):
            schema = schema.decode("utf-8", "replace")
        if isinstance(schema, str):
            return schema_from_text(schema)
        if isinstance(schema, dict | list):
            return schema_from_text(parse_schema(schema).text)
        raise InvalidArgument("a schema is JSON text or a JSON value", field="schema")

    async def _register(self, schema: AvroSchema) -> None:
        """Put a writer schema into the registry (once per process and fingerprint)."""
        if schema.fingerprint not in self._bodies:
            await self._durable.put_schema(schema.fingerprint, schema.text)
            self._bodies.add(schema)

    async def _load_writers(self, fingerprints: set[int]) -> None:
        """Fetch the writer schemas named by ``fingerprints`` that are not here yet;
        unknown ones are left out (whoever needs them names them in the error)."""
        for fingerprint in sorted(self._bodies.missing(fingerprints)):
            text = await self._durable.get_schema(fingerprint)
            if text is None:
                continue
            schema = self._parse_schema(text)
            if schema.fingerprint == fingerprint:
                self._bodies.add(schema)

    @_as_deferred
    async def register_schema(self, schema: str | bytes | Mapping[str, Any] | list[Any]) -> int:
        parsed = self._parse_schema(schema)
        await self._register(parsed)
        return parsed.fingerprint

    @_as_deferred
    async def set_schema(
        self, tenant: str, name: str, schema: str | bytes | Mapping[str, Any] | list[Any]
    ) -> int:
        """The new schema is checked against the writer schemas of the queue's messages,
        read first; storage then sets it only if no other writer has appeared meanwhile
        (UncheckedWriters: check those too, and try again). Publishes checked against the
        old schema that have not landed yet will fail storage's check and be checked
        again, so every Avro message in the queue can always be read by its schema."""
        store = self._store(tenant, name)
        new = self._parse_schema(schema)
        await self._register(new)
        checked: set[int] = set()
        pending = set(await store.schema_writers(tenant, name, self._now()))
        for _ in range(SCHEMA_RETRIES):
            await self._check_writers(new, pending - checked - {new.fingerprint})
            checked |= pending
            try:
                updated = await store.set_queue_schema(
                    tenant, name, new.fingerprint, new.text, sorted(checked), self._now()
                )
            except UncheckedWriters as e:
                pending = set(e.fingerprints)
                continue
            self._seen(updated)
            return new.fingerprint
        raise Conflict(f"Queue {name!r} kept changing; try again", field="schema")

    async def _check_writers(self, new: AvroSchema, fingerprints: set[int]) -> None:
        await self._load_writers(fingerprints)
        for fingerprint in sorted(fingerprints):
            try:
                writer = self._bodies.writer(fingerprint)
            except UnknownSchema:
                raise InvalidArgument(
                    f"the queue holds messages of schema {format_fingerprint(fingerprint)}, "
                    "which is not registered, so a new schema cannot be checked against them",
                    field="schema",
                ) from None
            self._bodies.check_reads(new, writer)

    @_as_deferred
    async def clear_schema(self, tenant: str, name: str) -> None:
        store = self._store(tenant, name)
        self._seen(await store.set_queue_schema(tenant, name, None, None, (), self._now()))

    @_as_deferred
    async def get_schema(self, tenant: str, name: str) -> tuple[int, str] | None:
        queue = await self.get_queue(tenant, name)
        options = queue.options
        if options.schema is None or options.schema_text is None:
            return None
        return options.schema, options.schema_text

    async def _readable(
        self, tenant: str, name: str, messages: Sequence[Message]
    ) -> AvroSchema | None:
        """Get what reading the Avro ``messages`` needs: the queue's schema (returned) and
        their writer schemas."""
        try:
            schema = await self._queue_schema(tenant, name)
        except QueueNotFound:
            schema = None
        writers = set()
        for m in messages:
            avro = avro_writer(m.content_type, m.body)
            if avro is not None and (schema is None or avro[0] != schema.fingerprint):
                writers.add(avro[0])
        await self._load_writers(writers)
        return schema

    @_as_deferred
    async def decode_bodies(
        self, tenant: str, name: str, messages: Sequence[Message]
    ) -> dict[int, Any]:
        avro = [m for m in messages if avro_writer(m.content_type, m.body) is not None]
        if not avro:
            return {}
        schema = await self._readable(tenant, name, avro)
        out: dict[int, Any] = {}
        for m in avro:
            try:
                out[m.marker] = self._bodies.decode_json(schema, m)
            except InvalidArgument:
                continue  # not decodable: the protocol shows it as stored
        return out

    @_as_deferred
    async def resolve_bodies(
        self, tenant: str, name: str, messages: Sequence[Message]
    ) -> list[Message]:
        if not any(avro_writer(m.content_type, m.body) is not None for m in messages):
            return list(messages)
        schema = await self._readable(tenant, name, messages)
        return [self._bodies.rewrite(schema, m) for m in messages]

    # -- durable subscriptions -------------------------------------------------------------

    def _check_subscription(self, subscription: object) -> str:
        if not isinstance(subscription, str) or not SUBSCRIPTION_RE.match(subscription):
            raise InvalidArgument(
                "subscription must be 1 to 255 printable characters", field="subscription"
            )
        return subscription

    @_as_deferred
    async def get_cursor(self, tenant: str, name: str, subscription: str) -> str | None:
        store = self._store(tenant, name)
        marker = await store.get_cursor(tenant, name, self._check_subscription(subscription))
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
        await store.set_cursor(tenant, name, self._check_subscription(subscription), value)
