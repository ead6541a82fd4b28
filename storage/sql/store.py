"""SQL storage: SQLAlchemy Core over SQLite (embedded default) or PostgreSQL (psycopg2).

Reads run on a thread pool with their own connections; every write goes through the
group-commit writer (one thread, one connection). Nothing here blocks the reactor thread.

``SQLStorage`` is the facade: it owns the engines, threads and writer and hands each call
to its operation in ``queues``, ``messages``, ``claims``, ``subscriptions`` (push
subscriptions) or ``tenants``, which get a
connection and the store's ``Statements`` (``statements``) and nothing else. Engines are
made in ``engine``; cross-process wake-ups (LISTEN/NOTIFY) live in ``notify``.
"""

from __future__ import annotations

import threading
import uuid
from collections.abc import Callable, Mapping, Sequence
from typing import Any, TypeVar

import sqlalchemy as sa
from twisted.internet.defer import Deferred
from twisted.internet.interfaces import IReactorFromThreads
from twisted.internet.threads import deferToThreadPool
from twisted.logger import Logger
from twisted.python.failure import Failure
from twisted.python.threadpool import ThreadPool
from zope.interface import implementer

from qgate.core.admin import DepthReport
from qgate.core.errors import StorageUnavailable
from qgate.core.handoff import Handoff
from qgate.core.interfaces import IHandoffStorage, IQueueStorage, ITenantStore, IWakeupSource
from qgate.core.model import (
    Claim,
    Delivery,
    Message,
    NewMessage,
    NewSubscription,
    ObserveQuery,
    PushLease,
    PushStats,
    Queue,
    QueueOptions,
    QueueStats,
    Settlement,
    Subscription,
    SubscriptionUpdate,
    Tenant,
)
from qgate.core.usage import TenantUsage
from qgate.storage.sql import claims, messages, push, queues, subscriptions, tenants
from qgate.storage.sql.engine import DEFAULT_BUSY_TIMEOUT, make_engine, normalize_url
from qgate.storage.sql.notify import Listener
from qgate.storage.sql.statements import Statements
from qgate.storage.sql.writer import GroupCommitWriter, is_unavailable

__all__ = ["DEFAULT_BUSY_TIMEOUT", "SQLStorage", "make_engine", "normalize_url"]

T = TypeVar("T")

READ_DOWN = "storage unavailable: the database cannot be read right now"

#: Messages a purge, or the sweep of a deleted queue, deletes per transaction: a slice
#: takes the writer some 10 ms on SQLite, so other tenants' writes wait no longer than that.
BULK_SLICE = 1000

log = Logger()


@implementer(IQueueStorage, ITenantStore, IWakeupSource, IHandoffStorage)
class SQLStorage:
    """Durable queues in a SQL database."""

    def __init__(
        self,
        reactor: IReactorFromThreads,
        url: str,
        *,
        read_threads: int = 4,
        synchronous: str = "FULL",
        max_batch: int = 512,
        busy_timeout: float = DEFAULT_BUSY_TIMEOUT,
        bulk_slice: int | None = BULK_SLICE,
    ) -> None:
        self.url = url
        self._reactor = reactor
        self.engine = make_engine(
            url, synchronous=synchronous, pool_size=read_threads, busy_timeout=busy_timeout
        )
        self.write_engine = make_engine(
            url, writer=True, synchronous=synchronous, busy_timeout=busy_timeout
        )
        self.dialect = self.engine.dialect.name
        self._pool = ThreadPool(minthreads=1, maxthreads=read_threads, name="qgate-sql-read")
        self._pool.start()
        self._writer = GroupCommitWriter(reactor, self.write_engine, max_batch=max_batch)
        token = uuid.uuid4().hex[:12]
        self._sql = Statements(self.dialect, token)
        self._listener = Listener(reactor, url, token)
        self._closed: Deferred[None] | None = None
        self._dead_lettered: Callable[[str, str, int], None] | None = None
        if bulk_slice is not None and bulk_slice < 1:
            raise ValueError(f"bulk_slice must be at least 1 (got {bulk_slice})")
        #: Messages a purge or a deleted queue's sweep deletes per transaction (None: all
        #: at once, as one write that holds up every other writer until it is done).
        self._bulk_slice = bulk_slice
        self._sweeping: Deferred[None] | None = None
        self._sweep_again = False
        self._sweep_waiters: list[Deferred[None]] = []

    # -- plumbing --------------------------------------------------------------------------

    def _read(self, fn: Callable[..., T], *args: Any) -> Deferred[T]:
        return deferToThreadPool(self._reactor, self._pool, self._in_read, fn, args)

    def _in_read(self, fn: Callable[..., T], args: tuple[Any, ...]) -> T:
        try:
            with self.engine.connect() as conn:
                return fn(conn, *args)
        except sa.exc.DBAPIError as e:
            if is_unavailable(e):
                raise StorageUnavailable(READ_DOWN) from e
            raise

    def _write(self, tenant: str, group: Any, *args: Any) -> Deferred[Any]:
        """``group`` on the writer, in ``tenant``'s fair share of its batches ("": work of
        no tenant)."""
        return self._writer.submit(group, *args, tenant=tenant)

    @property
    def writer(self) -> GroupCommitWriter:
        return self._writer

    def ping(self) -> Deferred[bool]:
        return self._read(lambda conn: conn.execute(sa.text("SELECT 1")).scalar() == 1)

    def close(self) -> Deferred[None]:
        """Commit what is pending, then release threads and connections (idempotent)."""
        if self._closed is None:
            self._listener.stop()
            self._closed = self._writer.close()

            def finish(_: Any) -> None:
                self._pool.stop()
                self.engine.dispose()
                self.write_engine.dispose()

            self._closed.addCallback(finish)
        done: Deferred[None] = Deferred()

        def chain(result: object) -> object:
            done.callback(None)
            return result

        self._closed.addBoth(chain)
        return done

    # -- queues ----------------------------------------------------------------------------

    def create_queue(
        self,
        tenant: str,
        name: str,
        options: QueueOptions,
        metadata: Mapping[str, Any],
        now: float,
    ) -> Deferred[Queue]:
        return self._write(
            tenant, queues.create_queue, self._sql, tenant, name, options, metadata, now
        )

    def get_queue(self, tenant: str, name: str) -> Deferred[Queue | None]:
        return self._read(queues.get_queue, self._sql, tenant, name)

    def update_queue(
        self, tenant: str, name: str, options: QueueOptions, metadata: Mapping[str, Any]
    ) -> Deferred[Queue]:
        return self._write(tenant, queues.update_queue, self._sql, tenant, name, options, metadata)

    def set_queue_schema(
        self,
        tenant: str,
        name: str,
        fingerprint: int | None,
        text: str | None,
        writers: Sequence[int],
        now: float,
    ) -> Deferred[Queue]:
        return self._write(
            tenant,
            queues.set_queue_schema,
            self._sql,
            tenant,
            name,
            fingerprint,
            text,
            list(writers),
            now,
        )

    def schema_writers(self, tenant: str, name: str, now: float) -> Deferred[list[int]]:
        return self._read(queues.schema_writers, self._sql, tenant, name, now)

    def put_schema(self, fingerprint: int, text: str) -> Deferred[None]:
        return self._write("", queues.put_schema, self._sql, fingerprint, text)

    def get_schema(self, fingerprint: int) -> Deferred[str | None]:
        return self._read(queues.get_schema, fingerprint)

    def own_schema(self, tenant: str, fingerprint: int) -> Deferred[None]:
        return self._write(tenant, queues.own_schema, self._sql, tenant, fingerprint)

    def owns_schema(self, tenant: str, fingerprint: int) -> Deferred[bool]:
        return self._read(queues.owns_schema, tenant, fingerprint)

    def delete_queue(self, tenant: str, name: str) -> Deferred[bool]:
        """Fires once the queue is gone (one short transaction); its messages are swept
        afterwards, ``bulk_slice`` per transaction (``swept``)."""
        d = self._write(tenant, queues.delete_queue, self._sql, tenant, name)
        return d.addCallback(self._deleted)

    def _deleted(self, queue_id: int | None) -> bool:
        if queue_id is None:
            return False
        self.sweep()
        return True

    def sweep(self) -> None:
        """Sweep the messages of deleted queues, one slice per write, in the background
        (a sweep under way carries on, and looks again before it ends)."""
        if self._closed is not None:
            return
        if self._sweeping is not None:
            self._sweep_again = True
            return
        self._sweeping = Deferred.fromCoroutine(self._sweep())
        self._sweeping.addBoth(self._swept)

    async def _sweep(self) -> None:
        while True:
            self._sweep_again = False
            found = True
            while found and self._closed is None:
                _, found = await self._write("", queues.sweep_slice, self._bulk_slice)
            if not self._sweep_again or self._closed is not None:
                return

    def _swept(self, result: object) -> None:
        self._sweeping = None
        waiting, self._sweep_waiters = self._sweep_waiters, []
        if isinstance(result, Failure) and not result.check(StorageUnavailable):
            log.failure("sweeping the messages of deleted queues failed", result)
        # StorageUnavailable: the database is away or the store closes; the reaper's next
        # round sweeps again (as after a crash: the deleted queues are in the database).
        for d in waiting:
            d.callback(None)

    def swept(self) -> Deferred[None]:
        """Fires once no sweep of deleted queues' messages is under way."""
        d: Deferred[None] = Deferred()
        if self._sweeping is None:
            d.callback(None)
        else:
            self._sweep_waiters.append(d)
        return d

    def list_queues(self, tenant: str, marker: str | None, limit: int) -> Deferred[list[Queue]]:
        return self._read(queues.list_queues, self._sql, tenant, marker, limit)

    def queue_depths(self, now: float, limit: int) -> Deferred[DepthReport]:
        return self._read(queues.queue_depths, self._sql, now, limit)

    def queue_stats(self, tenant: str, name: str, now: float) -> Deferred[QueueStats]:
        return self._read(queues.queue_stats, self._sql, tenant, name, now)

    def purge_queue(self, tenant: str, name: str) -> Deferred[int]:
        """Deletes, ``bulk_slice`` per transaction, the messages the queue holds when the
        purge starts (up to its last marker then; messages published meanwhile stay) and
        its claims; fires once they are all gone with how many this purge deleted."""
        return Deferred.fromCoroutine(self._purge(tenant, name))

    async def _purge(self, tenant: str, name: str) -> int:
        limit = self._bulk_slice
        queue_id, upto, total, left = await self._write(
            tenant, queues.purge_start, self._sql, tenant, name, limit
        )
        while left and limit is not None:  # no limit: one transaction deleted them all
            n, left = await self._write(tenant, queues.purge_slice, queue_id, upto, limit)
            total += n
        return total  # type: ignore[no-any-return]

    # -- messages --------------------------------------------------------------------------

    def publish(
        self,
        tenant: str,
        name: str,
        new: Sequence[NewMessage],
        now: float,
        schema: int | None,
        handoff: Handoff | None = None,
    ) -> Deferred[list[int]]:
        return self._write(
            tenant, messages.publish_group, self._sql, tenant, name, new, now, schema, handoff
        )

    def get_messages(
        self, tenant: str, name: str, markers: Sequence[int], now: float
    ) -> Deferred[list[Message]]:
        return self._read(messages.get_messages, self._sql, tenant, name, markers, now)

    def delete_messages(
        self,
        tenant: str,
        name: str,
        markers: Sequence[int],
        claim_id: str | None,
        now: float,
    ) -> Deferred[list[int]]:
        if claim_id is not None:
            # What a claim holder deletes is an ack: one DELETE with the commit's acks.
            return self._write(
                tenant, claims.ack_group, tenant, name, claim_id, sorted(set(markers))
            )
        return self._write(
            tenant, messages.delete_messages, self._sql, tenant, name, list(markers), claim_id, now
        )

    def pop_messages(
        self,
        tenant: str,
        name: str,
        limit: int,
        now: float,
        handoff: Handoff | None = None,
        prompt: bool = False,
    ) -> Deferred[list[Message]]:
        group = messages.pop_messages_promptly if prompt else messages.pop_messages
        return self._write(tenant, group, self._sql, tenant, name, limit, now, handoff)

    def observe(
        self, tenant: str, name: str, query: ObserveQuery, now: float
    ) -> Deferred[list[Message]]:
        return self._read(messages.observe, self._sql, tenant, name, query, now)

    def next_wake(
        self, tenant: str, name: str, now: float, after: int | None = None
    ) -> Deferred[float | None]:
        return self._read(messages.next_wake, self._sql, tenant, name, now, after)

    def reap(self, now: float, limit: int) -> Deferred[int]:
        """Also starts a sweep of deleted queues' messages: one cut short (a crash, the
        database away) finishes in the reaper's next round."""
        self.sweep()
        return self._write("", messages.reap, now, limit)

    # -- claims ----------------------------------------------------------------------------

    def claim(
        self,
        tenant: str,
        name: str,
        claim_id: str,
        limit: int,
        ttl: float,
        grace: float,
        now: float,
        handoff: Handoff | None = None,
    ) -> Deferred[list[Message]]:
        d = self._write(
            tenant,
            claims.claim_group,
            self._sql,
            tenant,
            name,
            claim_id,
            limit,
            ttl,
            grace,
            now,
            handoff,
        )
        return d.addCallback(self._claimed, tenant)

    def _claimed(self, done: claims.Claimed, tenant: str) -> list[Message]:
        """A committed claim: wake the waiters of the queues it dead-lettered into."""
        if done.dead_letter_queues and self._dead_lettered is not None:
            for dlq in sorted(done.dead_letter_queues):  # one: a queue has one DLQ
                self._dead_lettered(tenant, dlq, done.dead_lettered)
        return done.messages

    def on_dead_letter(self, callback: Callable[[str, str, int], None]) -> None:
        self._dead_lettered = callback

    def get_claim(
        self, tenant: str, name: str, claim_id: str, now: float
    ) -> Deferred[Claim | None]:
        return self._read(claims.get_claim, self._sql, tenant, name, claim_id, now)

    def renew_claim(
        self, tenant: str, name: str, claim_id: str, ttl: float, grace: float, now: float
    ) -> Deferred[bool]:
        return self._write(
            tenant, claims.renew_claim, self._sql, tenant, name, claim_id, ttl, grace, now
        )

    def release(
        self,
        tenant: str,
        name: str,
        claim_id: str,
        markers: Sequence[int] | None,
        delay: float,
        now: float,
        undelivered: bool = False,
    ) -> Deferred[int]:
        wanted = None if markers is None else list(markers)
        return self._write(
            tenant,
            claims.release,
            self._sql,
            tenant,
            name,
            claim_id,
            wanted,
            delay,
            now,
            undelivered,
        )

    def ack(
        self, tenant: str, name: str, claim_id: str, markers: Sequence[int], now: float
    ) -> Deferred[list[int]]:
        return self._write(tenant, claims.ack_group, tenant, name, claim_id, list(markers))

    # -- durable subscriptions -------------------------------------------------------------

    def get_cursor(self, tenant: str, name: str, subscription: str) -> Deferred[int | None]:
        return self._read(queues.get_cursor, self._sql, tenant, name, subscription)

    def set_cursor(
        self, tenant: str, name: str, subscription: str, marker: int | None
    ) -> Deferred[None]:
        return self._write(tenant, queues.set_cursor, self._sql, tenant, name, subscription, marker)

    # -- push subscriptions ----------------------------------------------------------------

    def create_subscription(
        self,
        tenant: str,
        name: str,
        new: NewSubscription,
        now: float,
    ) -> Deferred[tuple[Subscription, bool]]:
        return self._write(
            tenant, subscriptions.create_subscription, self._sql, tenant, name, new, now
        )

    def get_subscription(
        self, tenant: str, name: str, subscription_id: str, now: float
    ) -> Deferred[Subscription | None]:
        return self._read(
            subscriptions.get_subscription, self._sql, tenant, name, subscription_id, now
        )

    def list_subscriptions(
        self, tenant: str, name: str, marker: str | None, limit: int, now: float
    ) -> Deferred[list[Subscription]]:
        return self._read(
            subscriptions.list_subscriptions, self._sql, tenant, name, marker, limit, now
        )

    def update_subscription(
        self,
        tenant: str,
        name: str,
        subscription_id: str,
        changes: SubscriptionUpdate,
        now: float,
    ) -> Deferred[Subscription]:
        return self._write(
            tenant,
            subscriptions.update_subscription,
            self._sql,
            tenant,
            name,
            subscription_id,
            changes,
            now,
        )

    def advance_subscription(
        self, tenant: str, name: str, subscription_id: str, marker: int, now: float
    ) -> Deferred[int | None]:
        return self._write(
            tenant,
            subscriptions.advance_subscription,
            self._sql,
            tenant,
            name,
            subscription_id,
            marker,
            now,
        )

    def delete_subscription(self, tenant: str, name: str, subscription_id: str) -> Deferred[bool]:
        return self._write(
            tenant, subscriptions.delete_subscription, self._sql, tenant, name, subscription_id
        )

    def purge_subscriptions(self, tenant: str, name: str) -> Deferred[int]:
        return self._write(tenant, subscriptions.purge_subscriptions, self._sql, tenant, name)

    # -- push delivery (storage/sql/push.py) -----------------------------------------------

    def lease_push(
        self, owner: str, lease: float, limit: int, now: float
    ) -> Deferred[list[PushLease]]:
        return self._write("", push.lease_push, self._sql, owner, lease, limit, now)

    def release_push(self, owner: str, subscription_ids: Sequence[str]) -> Deferred[int]:
        return self._write("", push.release_push, self._sql, owner, list(subscription_ids))

    def take_deliveries(
        self, tenant: str, name: str, subscription_id: str, owner: str, limit: int, now: float
    ) -> Deferred[list[Delivery]]:
        return self._write(
            tenant,
            push.take_deliveries,
            self._sql,
            tenant,
            name,
            subscription_id,
            owner,
            limit,
            now,
        )

    def pending_deliveries(
        self, tenant: str, name: str, subscription_id: str, now: float
    ) -> Deferred[list[Delivery]]:
        return self._read(push.pending_deliveries, self._sql, tenant, name, subscription_id, now)

    def settle_delivery(
        self,
        tenant: str,
        name: str,
        subscription_id: str,
        marker: int,
        settlement: Settlement,
        next_at: float,
        error: str | None,
        now: float,
    ) -> Deferred[bool]:
        return self._write(
            tenant,
            push.settle_deliveries,
            self._sql,
            tenant,
            name,
            subscription_id,
            marker,
            settlement,
            next_at,
            error,
            now,
        )

    def push_stats(
        self, tenant: str, name: str, subscription_id: str, now: float
    ) -> Deferred[PushStats | None]:
        return self._read(push.push_stats, self._sql, tenant, name, subscription_id, now)

    # -- tenants ---------------------------------------------------------------------------

    def create_tenant(self, name: str, now: float) -> Deferred[tuple[Tenant, bool]]:
        return self._write("", tenants.create_tenant, name, now)

    def get_tenant(self, name: str) -> Deferred[Tenant | None]:
        return self._read(tenants.get_tenant, name)

    def list_tenants(self) -> Deferred[list[Tenant]]:
        return self._read(tenants.list_tenants, self._sql)

    def add_key(
        self,
        tenant: str,
        key_id: str,
        secret_hash: str,
        now: float,
        queues: str | None = None,
        ops: str | None = None,
    ) -> Deferred[None]:
        return self._write(tenant, tenants.add_key, tenant, key_id, secret_hash, now, queues, ops)

    def find_key_scope(self, key_id: str) -> Deferred[tuple[str | None, str | None] | None]:
        return self._read(tenants.find_key_scope, key_id)

    def set_quota(self, tenant: str, quota: str, value: float | None) -> Deferred[None]:
        return self._write(tenant, tenants.set_quota, tenant, quota, value)

    def quota_overrides(self) -> Deferred[dict[str, dict[str, float]]]:
        return self._read(tenants.quota_overrides)

    def tenant_version(self) -> Deferred[int]:
        return self._read(tenants.tenant_version)

    def tenant_usage(self, tenant: str, now: float) -> Deferred[TenantUsage]:
        return self._read(tenants.tenant_usage, tenant, now)

    def find_key(self, key_id: str) -> Deferred[tuple[str, str] | None]:
        return self._read(tenants.find_key, key_id)

    def key_ids(self) -> Deferred[list[str]]:
        return self._read(tenants.key_ids)

    def revoke_key(self, key_id: str, now: float) -> Deferred[bool]:
        return self._write("", tenants.revoke_key, key_id, now)

    # -- cross-process wakeups (PostgreSQL LISTEN/NOTIFY) ----------------------------------

    def start_wakeups(self, callback: Callable[[str, str], None]) -> None:
        if self._sql.pg:
            self._listener.start(callback)

    @property
    def listen_ready(self) -> threading.Event:
        """Set once the LISTEN thread listens."""
        return self._listener.ready

    @property
    def listen_connects(self) -> int:
        """How many times the LISTEN thread has (re)connected."""
        return self._listener.connects
