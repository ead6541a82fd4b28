"""Group commit: one writer thread, one connection, many callers per transaction.

Callers on the reactor thread submit write operations; the writer thread takes what is
queued (up to ``max_batch``), runs it in ONE transaction and commits, then fires each
caller's Deferred on the reactor thread. Concurrent publishers and ackers therefore share
fsyncs and round trips, and every Deferred fires only after its commit, except those of a
group marked ``answered_before_commit`` (a prompt pop), which fire once the whole batch's
statements have run, just before its COMMIT.

Fair share: each operation names its tenant ("" for work of no tenant: the reaper, the
sweep of deleted queues, push leases), and a batch is taken round-robin over the tenants
with operations queued, one operation of each in turn, the round carrying on where the
last batch stopped. A tenant with one operation queued is in the next batch whatever
another tenant has queued (with fewer than ``max_batch`` tenants waiting), and a tenant
with thousands queued still fills the rest of every batch, so group commits stay large
under load. The operations of one tenant keep their submission order in every batch and
across batches.

Operations come in groups: a group function receives the arguments of every queued
operation of its kind and may serve them with one statement (all publishes in a batch
become one multi-row INSERT). A group function reports a caller's domain error (a
``QGateError``) by returning it in that caller's slot; by contract it raises such an error
only before writing anything for that caller. Any other exception rolls the whole
transaction back, and each operation is then retried alone, so one bad operation cannot
fail its neighbours.

When the database fails (it restarts, is unreachable, SQLite's lock stays taken past the
busy timeout, the disk is full), the writer thread carries on; no caller is left waiting:

- A failed connect, or a transaction failing with an error that is about the database
  rather than one operation (``is_unavailable``), answers every caller of the batch with
  ``StorageUnavailable`` at once: retrying them one by one would fail the same way, each
  after its own timeout. The connection is dropped, and the next attempt comes no sooner
  than a backoff later (``FIRST_BACKOFF`` doubling to ``MAX_BACKOFF``, reset by a success);
  batches arriving meanwhile are refused at once without touching the database. A caller
  therefore waits for at most one attempt, and writes work again within ``MAX_BACKOFF`` of
  the database's return.
- The connection is long-lived, so the first batch after a server restart finds it dead.
  A connection lost before COMMIT was sent committed nothing: the batch is retried once on
  a new connection, and the restart costs no caller an error.
- A failure during COMMIT leaves the outcome unknown: the server may have committed just
  before the connection dropped. That batch is never retried (a blind retry could store a
  publish twice, or lease messages twice); its callers get ``StorageUnavailable``. So an
  error answer to a publish (HTTP 503, a STOMP ERROR) means "maybe stored": a client that
  retries may store the message twice, which is the at-least-once delivery every protocol
  already promises and what any broker acknowledging over a network gives. A success
  always means committed.
- Stopping: ``close()`` queues a stop mark behind everything submitted; the writer serves
  everything taken before the mark, and once an attempt has failed while stopping, refuses the rest
  without another attempt. ``close()`` thus fires in bounded time whatever the database
  does, and a SIGTERM ends the process.
- Anything unexpected (a bug) fails that batch's callers and is logged; the thread lives.

Counters (``stats()``): batches, operations, the statements the writer's connections sent
(every cursor execute, SQLite's ``BEGIN IMMEDIATE`` included, an executemany as one;
COMMIT and psycopg2's implicit BEGIN are the driver's own and not counted), and the
writer thread's busy time; for the benchmark and the operator's metrics.
"""

from __future__ import annotations

import queue
import sys
import threading
import time
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import sqlalchemy as sa
from twisted.internet.defer import Deferred, fail
from twisted.internet.interfaces import IReactorFromThreads
from twisted.logger import Logger
from twisted.python.failure import Failure

from qgate.core.errors import QGateError, StorageUnavailable

log = Logger()

#: group(conn, [args of each op]) -> [result or QGateError of each op]
Group = Callable[[sa.Connection, Sequence[tuple[Any, ...]]], Sequence[Any]]

#: Seconds between attempts while the database fails: after the first failure, and at most.
FIRST_BACKOFF = 0.05
MAX_BACKOFF = 0.5

DOWN = "storage unavailable: the database cannot be reached or cannot write right now"
UNKNOWN = (
    "storage unavailable: the database failed while committing; "
    "the write may or may not have been stored"
)
SHUTTING_DOWN = "storage unavailable: the storage is shutting down"

# What the log says failed.
CONNECT_FAILED = "connecting to the database failed"
WRITE_FAILED = "the database failed a write transaction"
COMMIT_FAILED = "COMMIT failed, its outcome is unknown"


def is_unavailable(error: BaseException) -> bool:
    """Whether ``error`` is about the database rather than one operation: a connection
    refused or lost, a server shutting down, SQLite's busy timeout, a full disk.

    PostgreSQL's class 40 (deadlock, serialization failure) is an OperationalError too,
    but it concerns one transaction, and the operations retried alone succeed."""
    if isinstance(error, sa.exc.DBAPIError) and error.connection_invalidated:
        return True
    if not isinstance(error, sa.exc.OperationalError | sa.exc.InterfaceError):
        return False
    code = getattr(error.orig, "pgcode", None)
    return not (isinstance(code, str) and code.startswith("40"))


#: Where a writer connection's ``info`` holds its statement counter (see ``sent_directly``).
_COUNTER = "qgate.writer.count_statements"


def sent_directly(conn: sa.Connection, statements: int) -> None:
    """Count ``statements`` a group sent on ``conn``'s DB-API connection itself, past
    SQLAlchemy's events (a no-op on connections that are not a writer's)."""
    counter = conn.info.get(_COUNTER)
    if counter is not None:
        counter(statements)


def each(fn: Callable[..., Any]) -> Group:
    """A group that runs ``fn(conn, *args)`` once per operation."""

    def group(conn: sa.Connection, batch: Sequence[tuple[Any, ...]]) -> list[Any]:
        out: list[Any] = []
        for args in batch:
            try:
                out.append(fn(conn, *args))
            except QGateError as e:
                out.append(e)
        return out

    group.__name__ = getattr(fn, "__name__", "group")
    return group


@dataclass(frozen=True, slots=True)
class WriterStats:
    """What the writer has done since it started (a snapshot; ``b - a`` is an interval)."""

    batches: int = 0
    operations: int = 0
    #: cursor executes on the writer's connections, whatever their outcome
    statements: int = 0
    #: seconds the writer thread spent serving batches (connecting and retries included)
    busy_seconds: float = 0.0

    def __sub__(self, other: WriterStats) -> WriterStats:
        return WriterStats(
            self.batches - other.batches,
            self.operations - other.operations,
            self.statements - other.statements,
            self.busy_seconds - other.busy_seconds,
        )


def answered_before_commit(group: Group) -> Group:
    """Mark ``group`` as one whose callers are answered once its statements (and those of
    the whole batch) have run, before the COMMIT: a caller that does not need the commit
    (a pop: what it took is delivered without a lease, and a pop that did not commit
    leaves its messages stored, delivered again later) then does not wait for the fsync."""
    group.answers_before_commit = True  # type: ignore[attr-defined]
    return group


@dataclass(slots=True)
class _Op:
    group: Group
    args: tuple[Any, ...]
    deferred: Deferred[Any]
    tenant: str
    #: Answered before the commit (``answered_before_commit``): skipped after it.
    answered: bool = False


class _CommitFailed(Exception):
    """COMMIT raised: the transaction may or may not have been committed."""

    def __init__(self, error: Exception) -> None:
        super().__init__(str(error))
        self.error = error


_STOP = object()


def _early(op: _Op) -> bool:
    return getattr(op.group, "answers_before_commit", False)


def _answer(op: _Op, outcome: Any) -> None:
    if isinstance(outcome, Failure | QGateError):
        op.deferred.errback(outcome)
    else:
        op.deferred.callback(outcome)


class GroupCommitWriter:
    """The single writer of one database, batching concurrent writes into transactions."""

    def __init__(
        self,
        reactor: IReactorFromThreads,
        engine: sa.Engine,
        max_batch: int = 512,
    ) -> None:
        self._reactor = reactor
        self._engine = engine
        self._max_batch = max_batch
        self._queue: queue.SimpleQueue[Any] = queue.SimpleQueue()
        self._thread = threading.Thread(target=self._run, name="qgate-sql-writer", daemon=True)
        self._closed: Deferred[None] | None = None
        self._stopping = threading.Event()
        # The writer thread's own state.
        #: operations taken off the queue and not yet in a batch, by tenant, in turn order
        self._lanes: dict[str, deque[_Op]] = {}
        self._stop_seen = False  # the stop mark came off the queue
        self._conn: sa.Connection | None = None
        self._backoff = 0.0  # seconds: 0 while the database works
        self._retry_at = 0.0  # time.monotonic() before which no attempt is made
        # Counters: written by the writer thread only, read by stats() from anywhere.
        self._batches = 0
        self._operations = 0
        self._statements = 0
        self._busy = 0.0
        #: Called on the writer thread after each batch with its size and seconds (the
        #: admin metrics' histograms; must be thread-safe and quick).
        self.on_batch: Callable[[int, float], None] | None = None
        self._thread.start()

    def submit(self, group: Group, *args: Any, tenant: str = "") -> Deferred[Any]:
        """Run ``group`` for ``args`` in a coming transaction, in ``tenant``'s turn (its
        fair share of each batch, see the module docstring); -> the group's result."""
        if self._closed is not None:
            return fail(StorageUnavailable(SHUTTING_DOWN))
        d: Deferred[Any] = Deferred()
        self._queue.put(_Op(group, args, d, str(tenant)))
        return d

    def close(self) -> Deferred[None]:
        """Fires once every operation submitted before has been answered: committed, or
        refused with StorageUnavailable when the database fails meanwhile."""
        if self._closed is None:
            self._closed = Deferred()
            self._stopping.set()
            self._queue.put(_STOP)
        return self._closed

    def stats(self) -> WriterStats:
        """The counters now. Each is exact; read while a batch completes, they may be one
        batch apart from each other."""
        return WriterStats(self._batches, self._operations, self._statements, self._busy)

    # -- the writer thread -----------------------------------------------------------------

    def _run(self) -> None:
        stopping = False
        while not stopping:
            batch, stopping = self._take()
            if not batch:
                continue
            start = time.perf_counter()
            outcomes = self._serve(batch)
            elapsed = time.perf_counter() - start
            self._busy += elapsed
            self._batches += 1
            self._operations += len(batch)
            if self.on_batch is not None:
                self.on_batch(len(batch), elapsed)
            self._reactor.callFromThread(self._deliver, batch, outcomes)
        self._drop_connection(invalidate=False)
        self._reactor.callFromThread(self._finished)

    def _take(self) -> tuple[list[_Op], bool]:
        """The next batch, round-robin over tenants (waiting for an operation when none is
        queued), and whether the stop mark has come with nothing left behind the batch."""
        if not self._lanes and not self._stop_seen:
            self._enqueue(self._queue.get())
        while not self._stop_seen:  # nothing is submitted after the stop mark
            try:
                self._enqueue(self._queue.get_nowait())
            except queue.Empty:
                break
        lanes = self._lanes
        batch: list[_Op] = []
        while lanes and len(batch) < self._max_batch:
            if len(lanes) == 1:  # one tenant left: the rest of the batch is its, in order
                tenant, lane = next(iter(lanes.items()))
                room = self._max_batch - len(batch)
                if len(lane) <= room:
                    batch.extend(lane)
                    del lanes[tenant]
                else:
                    batch.extend(lane.popleft() for _ in range(room))
                break
            tenant = next(iter(lanes))
            lane = lanes.pop(tenant)
            batch.append(lane.popleft())
            if lane:
                lanes[tenant] = lane  # to the back of the round
        return batch, self._stop_seen and not lanes

    def _enqueue(self, item: Any) -> None:
        if item is _STOP:
            self._stop_seen = True
            return
        lane = self._lanes.get(item.tenant)
        if lane is None:
            self._lanes[item.tenant] = lane = deque()
        lane.append(item)

    def _serve(self, batch: list[_Op]) -> list[Any]:
        """The outcome of each operation of ``batch``; never raises."""
        try:
            if self._backoff and (self._stopping.is_set() or time.monotonic() < self._retry_at):
                return self._refuse(batch, DOWN)
            try:
                conn = self._connection()
            except Exception as e:  # noqa: BLE001 - the database is away
                self._failed(e, CONNECT_FAILED)
                return self._refuse(batch, DOWN)
            return self._execute(conn, batch)
        except Exception:  # noqa: BLE001 - a bug of ours: the batch fails, the writer lives
            error = sys.exc_info()[1]
            log.failure("the SQL writer failed on a batch")
            self._drop_connection()
            return [Failure(error) for _ in batch]

    def _execute(self, conn: sa.Connection, batch: list[_Op]) -> list[Any]:
        failure: Failure | None = None
        for attempt in (1, 2):
            try:
                return self._committed(self._transaction(conn, batch))
            except _CommitFailed as e:
                self._failed(e.error, COMMIT_FAILED)
                return self._refuse(batch, UNKNOWN)
            except Exception as e:  # noqa: BLE001 - a DB error; see below
                if conn.invalidated and attempt == 1:
                    # Found dead before COMMIT (the server restarted since the last batch):
                    # nothing was committed, so one more try on a new connection is safe.
                    try:
                        conn = self._connection()
                    except Exception as again:  # noqa: BLE001 - the database is away
                        self._failed(again, CONNECT_FAILED)
                        return self._refuse(batch, DOWN)
                    continue
                if conn.invalidated or is_unavailable(e):
                    self._failed(e, WRITE_FAILED)
                    return self._refuse(batch, DOWN)
                failure = Failure()
                break
        assert failure is not None
        if len(batch) == 1:
            return [failure]
        # Not the database's fault: some operation is bad. Each alone, so it fails alone.
        outcomes: list[Any] = []
        for i, op in enumerate(batch):
            try:
                outcomes.extend(self._committed(self._transaction(conn, [op])))
            except _CommitFailed as e:
                self._failed(e.error, COMMIT_FAILED)
                outcomes.append(StorageUnavailable(UNKNOWN))
                outcomes.extend(self._refuse(batch[i + 1 :], DOWN))
                break
            except Exception as e:  # noqa: BLE001 - reported to that op's caller
                if conn.invalidated or is_unavailable(e):
                    self._failed(e, WRITE_FAILED)
                    outcomes.extend(self._refuse(batch[i:], DOWN))
                    break
                outcomes.append(Failure())
        return outcomes

    def _transaction(self, conn: sa.Connection, batch: list[_Op]) -> list[Any]:
        groups: dict[Group, list[int]] = {}
        for i, op in enumerate(batch):
            groups.setdefault(op.group, []).append(i)
        outcomes: list[Any] = [None] * len(batch)
        try:
            transaction = conn.begin()
            for group, indexes in groups.items():
                results = group(conn, [batch[i].args for i in indexes])
                for i, result in zip(indexes, results, strict=True):
                    outcomes[i] = result
        except BaseException:
            self._reset(conn)
            raise
        early = [i for i, op in enumerate(batch) if _early(op)]
        if early:
            # Only the COMMIT is left, and a failed COMMIT is never retried: these callers
            # get exactly what ran (see ``answered_before_commit``).
            for i in early:
                batch[i].answered = True
            self._reactor.callFromThread(
                self._deliver_early, [batch[i] for i in early], [outcomes[i] for i in early]
            )
        try:
            transaction.commit()
        except Exception as e:
            raise _CommitFailed(e) from e
        return outcomes

    def _connection(self) -> sa.Connection:
        conn = self._conn
        if conn is not None and not conn.closed and not conn.invalidated:
            return conn
        self._drop_connection()
        self._conn = conn = self._engine.connect()
        sa.event.listen(conn, "before_cursor_execute", self._count_statement)
        conn.info[_COUNTER] = self._count_statements
        return conn

    def _count_statement(self, *_: Any) -> None:
        self._statements += 1

    def _count_statements(self, n: int) -> None:
        self._statements += n

    def _drop_connection(self, invalidate: bool = True) -> None:
        """Forget the connection; ``invalidate``: its state is unknown, never reuse it."""
        conn, self._conn = self._conn, None
        if conn is None:
            return
        try:
            if invalidate and not conn.invalidated:
                conn.invalidate()
            conn.close()
        except Exception:  # noqa: BLE001 - it is gone either way
            log.failure("closing the writer's connection failed")

    def _reset(self, conn: sa.Connection) -> None:
        try:
            if conn.in_transaction():
                conn.rollback()
        except Exception:  # noqa: BLE001 - the connection is gone; _connection reconnects
            conn.invalidate()

    def _committed(self, outcomes: list[Any]) -> list[Any]:
        """A transaction went through: the database works (again)."""
        if self._backoff:
            log.info("the database accepts writes again")
            self._backoff = 0.0
            self._retry_at = 0.0
        return outcomes

    def _failed(self, error: BaseException, what: str) -> None:
        """The database failed: drop the connection, wait longer before the next try."""
        first = not self._backoff
        self._backoff = FIRST_BACKOFF if first else min(2 * self._backoff, MAX_BACKOFF)
        self._retry_at = time.monotonic() + self._backoff
        self._drop_connection()
        if first:
            log.failure(
                "{what}; writes answer StorageUnavailable until it works again",
                Failure(error),
                what=what,
            )
        else:
            log.warn("{what} again: {error}", what=what, error=str(error).splitlines()[0])

    def _refuse(self, batch: Sequence[_Op], description: str) -> list[Any]:
        return [StorageUnavailable(description) for _ in batch]

    # -- back on the reactor thread --------------------------------------------------------

    def _deliver(self, batch: list[_Op], outcomes: list[Any]) -> None:
        for op, outcome in zip(batch, outcomes, strict=True):
            if not op.answered:
                _answer(op, outcome)

    def _deliver_early(self, batch: list[_Op], outcomes: list[Any]) -> None:
        for op, outcome in zip(batch, outcomes, strict=True):
            _answer(op, outcome)

    def _finished(self) -> None:
        assert self._closed is not None
        self._closed.callback(None)
