"""Group commit: one writer thread, one connection, many callers per transaction.

Callers on the reactor thread submit write operations; the writer thread takes everything
that is queued (up to ``max_batch``), runs it in ONE transaction and commits, then fires
each caller's Deferred on the reactor thread. Concurrent publishers and ackers therefore
share fsyncs and round trips, and every Deferred fires only after its commit.

Operations come in groups: a group function receives the arguments of every queued
operation of its kind and may serve them with one statement (all publishes in a batch
become one multi-row INSERT). A group function reports a caller's domain error (a
``QGateError``) by returning it in that caller's slot; by contract it raises such an error
only before writing anything for that caller. Any other exception rolls the whole
transaction back, and each operation is then retried alone, so one bad operation cannot
fail its neighbours.
"""

from __future__ import annotations

import queue
import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import sqlalchemy as sa
from twisted.internet.defer import Deferred
from twisted.internet.interfaces import IReactorFromThreads
from twisted.logger import Logger
from twisted.python.failure import Failure

from qgate.core.errors import QGateError, StorageUnavailable

log = Logger()

#: group(conn, [args of each op]) -> [result or QGateError of each op]
Group = Callable[[sa.Connection, Sequence[tuple[Any, ...]]], Sequence[Any]]


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


@dataclass(slots=True)
class _Op:
    group: Group
    args: tuple[Any, ...]
    deferred: Deferred[Any]


_STOP = object()


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
        self.batches = 0
        self.operations = 0
        self._thread.start()

    def submit(self, group: Group, *args: Any) -> Deferred[Any]:
        if self._closed is not None:
            raise StorageUnavailable("the storage is shutting down")
        d: Deferred[Any] = Deferred()
        self._queue.put(_Op(group, args, d))
        return d

    def close(self) -> Deferred[None]:
        """Fires once every operation submitted before has been committed."""
        if self._closed is None:
            self._closed = Deferred()
            self._queue.put(_STOP)
        return self._closed

    # -- the writer thread -----------------------------------------------------------------

    def _run(self) -> None:
        conn: sa.Connection | None = None
        stopping = False
        while not stopping:
            first = self._queue.get()
            batch: list[_Op] = []
            if first is _STOP:
                stopping = True
            else:
                batch.append(first)
            while len(batch) < self._max_batch:
                try:
                    item = self._queue.get_nowait()
                except queue.Empty:
                    break
                if item is _STOP:
                    stopping = True
                    break
                batch.append(item)
            if not batch:
                continue
            conn = self._connection(conn)
            outcomes = self._execute(conn, batch)
            self.batches += 1
            self.operations += len(batch)
            self._reactor.callFromThread(self._deliver, batch, outcomes)
        if conn is not None:
            conn.close()
        self._reactor.callFromThread(self._finished)

    def _connection(self, conn: sa.Connection | None) -> sa.Connection:
        if conn is not None and not conn.closed and not conn.invalidated:
            return conn
        if conn is not None:
            conn.close()
        return self._engine.connect()

    def _execute(self, conn: sa.Connection, batch: list[_Op]) -> list[Any]:
        try:
            return self._transaction(conn, batch)
        except Exception:  # noqa: BLE001 - a DB error; retried one by one below
            failure = Failure()
            self._reset(conn)
            if len(batch) == 1:
                return [self._unexpected(failure)]
        outcomes: list[Any] = []
        for op in batch:
            try:
                outcomes.extend(self._transaction(conn, [op]))
            except Exception:  # noqa: BLE001 - reported to that op's caller
                outcomes.append(self._unexpected(Failure()))
                self._reset(conn)
        return outcomes

    def _transaction(self, conn: sa.Connection, batch: list[_Op]) -> list[Any]:
        groups: dict[Group, list[int]] = {}
        for i, op in enumerate(batch):
            groups.setdefault(op.group, []).append(i)
        outcomes: list[Any] = [None] * len(batch)
        with conn.begin():
            for group, indexes in groups.items():
                results = group(conn, [batch[i].args for i in indexes])
                for i, result in zip(indexes, results, strict=True):
                    outcomes[i] = result
        return outcomes

    def _reset(self, conn: sa.Connection) -> None:
        try:
            if conn.in_transaction():
                conn.rollback()
        except Exception:  # noqa: BLE001 - the connection is gone; _connection reconnects
            conn.invalidate()

    def _unexpected(self, failure: Failure) -> Failure:
        if failure.check(sa.exc.OperationalError, sa.exc.InterfaceError):
            log.failure("database unavailable", failure)
            return Failure(StorageUnavailable(f"database unavailable: {failure.value}"))
        return failure

    # -- back on the reactor thread --------------------------------------------------------

    def _deliver(self, batch: list[_Op], outcomes: list[Any]) -> None:
        for op, outcome in zip(batch, outcomes, strict=True):
            if isinstance(outcome, Failure | QGateError):
                op.deferred.errback(outcome)
            else:
                op.deferred.callback(outcome)

    def _finished(self) -> None:
        assert self._closed is not None
        self._closed.callback(None)
