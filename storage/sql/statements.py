"""What every SQL operation shares: rows mapped to the core's values, and ``Statements``,
the statements of one store's database dialect, built once.

The operations (``queues``, ``messages``, ``claims``, ``tenants``) are functions that get
a connection and a ``Statements`` and touch nothing else of the store.
"""

from __future__ import annotations

import functools
import json
from collections.abc import Sequence
from typing import Any

import sqlalchemy as sa
from sqlalchemy.dialects import postgresql as pg_dialect
from sqlalchemy.dialects import sqlite as sqlite_dialect

from qgate.core.dead_letter import claim_order
from qgate.core.errors import QueueNotFound
from qgate.core.model import Message, Queue, QueueOptions
from qgate.storage.sql.notify import NOTIFY_CHANNEL, payload
from qgate.storage.sql.schema import messages, queues
from qgate.storage.sql.writer import sent_directly

m = messages.c
#: Rows per INSERT statement on PostgreSQL (psycopg2's execute_values pages).
INSERT_PAGE = 1000
#: ``MESSAGE_COLUMNS`` in the driver-level statements (``message_of`` reads them).
MESSAGE_SQL = (
    "marker, body, content_type, headers, producer, priority, created_at, expires_at, "
    "available_at, claim_id, claim_expires, claim_count"
)
#: Bound parameters per driver-level statement on SQLite (its oldest default limit).
SQLITE_PARAMETERS = 999
MESSAGE_COLUMNS = (
    m.marker,
    m.body,
    m.content_type,
    m.headers,
    m.producer,
    m.priority,
    m.created_at,
    m.expires_at,
    m.available_at,
    m.claim_id,
    m.claim_expires,
    m.claim_count,
)


def message(row: Any) -> Message:
    """The message of a row whose first columns are ``MESSAGE_COLUMNS``, in that order
    (by position: a SQLAlchemy row's attributes cost more than the rest of the mapping)."""
    return message_of(row)


def message_of(row: Sequence[Any]) -> Message:
    """The message of a row of ``MESSAGE_SQL`` or ``MESSAGE_COLUMNS`` (PostgreSQL gives
    the body as a memoryview)."""
    headers = row[3]
    return Message(
        row[0],
        bytes(row[1]),
        row[2],
        json.loads(headers) if headers else {},
        *row[4:],
    )


def in_claim_order(found: list[Message]) -> list[Message]:
    return sorted(found, key=lambda msg: claim_order(msg.priority, msg.marker))


@functools.lru_cache(maxsize=4096)
def queue_options(text: str) -> QueueOptions:
    """The options of a queue row's ``options`` column (parsed once per distinct text)."""
    return QueueOptions.from_dict(json.loads(text))


class QueueRow:
    """A queue as its row says: its id and the core's ``Queue``."""

    __slots__ = ("id", "queue")

    def __init__(self, row: Any) -> None:
        self.id: int = row.id
        self.queue = Queue(
            tenant=row.tenant,
            name=row.name,
            options=queue_options(row.options),
            metadata=json.loads(row.metadata),
            created_at=row.created_at,
        )


def chunks(items: list[int], size: int) -> list[list[int]]:
    return [items[i : i + size] for i in range(0, len(items), size)]


def ack_statements(
    pg: bool, terms: Sequence[tuple[str, str, str, Sequence[int]]]
) -> list[tuple[str, tuple[Any, ...]]]:
    """``DELETE ... RETURNING claim_id, marker`` of the rows that each (tenant, queue,
    claim id, markers) term's claim still holds, as few statements as SQLite's bound
    parameter limit allows (PostgreSQL: one, with an array per term)."""
    out: list[tuple[str, tuple[Any, ...]]] = []
    where: list[str] = []
    params: list[Any] = []
    head = "DELETE FROM messages WHERE "
    tail = " RETURNING claim_id, marker"
    if pg:
        term = (
            "(queue_id = (SELECT id FROM queues WHERE tenant = %s AND name = %s) "
            "AND claim_id = %s AND marker = ANY(%s))"
        )
        for tenant, name, claim_id, markers in terms:
            where.append(term)
            params += (tenant, name, claim_id, list(markers))
        return [(head + " OR ".join(where) + tail, tuple(params))] if where else []
    room = SQLITE_PARAMETERS - 3
    for tenant, name, claim_id, markers in terms:
        for start in range(0, len(markers), room):
            part = markers[start : start + room]
            if len(params) + 3 + len(part) > SQLITE_PARAMETERS:
                out.append((head + " OR ".join(where) + tail, tuple(params)))
                where, params = [], []
            where.append(
                "(queue_id = (SELECT id FROM queues WHERE tenant = ? AND name = ?) "
                f"AND claim_id = ? AND marker IN ({', '.join('?' * len(part))}))"
            )
            params += (tenant, name, claim_id, *part)
    if where:
        out.append((head + " OR ".join(where) + tail, tuple(params)))
    return out


class Statements:
    """The statements of one store on one dialect (SQLite or PostgreSQL), and the token
    its NOTIFYs carry. Its methods run on the connection they are given."""

    def __init__(self, dialect: str, token: str) -> None:
        self.pg = dialect == "postgresql"
        self.token = token
        ph = "%s" if self.pg else "?"
        notify = f"pg_notify('{NOTIFY_CHANNEL}', %s), " if self.pg else ""
        #: Reserve markers, find the queue and its options, (PostgreSQL) NOTIFY: one
        #: driver-level statement (parameters: count, tenant, name[, payload]).
        self.allocate_sql = (
            f"UPDATE queues SET last_marker = last_marker + {ph} "
            f"WHERE tenant = {ph} AND name = {ph} RETURNING {notify}id, last_marker, options"
        )
        #: The same, and (parameters: ..., now five times) whether the queue holds a
        #: claimable message (a publish offered to a waiter hands off only when it does
        #: not), and if not, when its next message becomes claimable (``next_wake``).
        claimable = (
            "EXISTS (SELECT 1 FROM messages WHERE messages.queue_id = queues.id "
            f"AND messages.visible_at <= {ph} AND messages.expires_at > {ph})"
        )
        self.allocate_probe_sql = (
            f"{self.allocate_sql}, {claimable}, CASE WHEN {claimable} THEN NULL ELSE "
            "(SELECT MIN(messages.visible_at) FROM messages WHERE messages.queue_id = "
            f"queues.id AND messages.visible_at > {ph}) END"
        )
        columns = (
            "queue_id, marker, priority, body, size, content_type, headers, producer, "
            "created_at, expires_at, available_at, visible_at, claim_id, claim_expires, "
            "claim_count"
        )
        values = "%s" if self.pg else "(" + ", ".join("?" * 15) + ")"
        self._insert_sql = f"INSERT INTO messages ({columns}) VALUES {values}"
        self._hot_statements()
        self._queue_by_name = sa.select(queues).where(
            queues.c.tenant == sa.bindparam("tenant"), queues.c.name == sa.bindparam("name")
        )
        self._queue_locked = self._queue_by_name.with_for_update()

    def _hot_statements(self) -> None:
        """The claim, pop and ack as driver-level text, built once: SQLAlchemy's
        expression building, caching and row processing cost more per message than
        SQLite's own work (measured: 3/4 of the writer's time on a batch of acks)."""

        def p(name: str) -> str:
            return f"%({name})s" if self.pg else f":{name}"

        queue_id = f"(SELECT id FROM queues WHERE tenant = {p('tenant')} AND name = {p('name')})"

        def chosen(queue: str) -> str:
            """``marker`` is one of the next ``n`` claimable markers of ``queue``, locked
            (skipping those another transaction holds), evaluated once.

            PostgreSQL gets ``marker = ANY(ARRAY(<the chosen markers>))``: an InitPlan run
            once, then primary-key lookups. ``marker IN (<the chosen subquery>)`` lets its
            planner pick a semi-join that walks the whole queue when its statistics are
            off (measured: 110 ms per claim at 50,000 messages, against 0.1 ms this way).
            """
            select = (
                f"SELECT marker FROM messages WHERE queue_id = {queue} "
                f"AND visible_at <= {p('now')} AND expires_at > {p('now')} "
                f"ORDER BY priority DESC, marker LIMIT {p('n')}"
            )
            if self.pg:
                return f"marker = ANY(ARRAY({select} FOR UPDATE SKIP LOCKED))"
            return f"marker IN ({select})"

        lease = (
            f"UPDATE messages SET claim_id = {p('claim_id')}, claim_expires = {p('expires')}, "
            f"visible_at = {p('expires')}, claim_count = claim_count + 1, "
            f"expires_at = CASE WHEN expires_at < {p('keep_until')} THEN {p('keep_until')} "
            f"ELSE expires_at END WHERE queue_id = {p('qid')} AND "
        )
        #: Lease the next ``n`` claimable messages (parameters: qid, claim_id, expires,
        #: keep_until, now, n).
        self.lease_next_sql = f"{lease}{chosen(p('qid'))} RETURNING {MESSAGE_SQL}"
        #: Pop (claim and delete in one statement) the next ``n`` claimable messages of
        #: the queue ``tenant``/``name`` (parameters: tenant, name, now, n).
        self.pop_sql = (
            f"DELETE FROM messages WHERE queue_id = {queue_id} AND {chosen(queue_id)} "
            f"RETURNING {MESSAGE_SQL}"
        )
        #: What an observer that sees claimed and delayed messages reads (a topic
        #: subscriber; parameters: tenant, name, now, after, n).
        self.observe_all_sql = (
            f"SELECT {MESSAGE_SQL} FROM messages WHERE queue_id = {queue_id} "
            f"AND expires_at > {p('now')} AND marker > {p('after')} ORDER BY marker "
            f"LIMIT {p('n')}"
        )
        self.queue_exists_sql = (
            f"SELECT 1 FROM queues WHERE tenant = {p('tenant')} AND name = {p('name')}"
        )

    # -- queues ----------------------------------------------------------------------------

    def queue_row(
        self, conn: sa.Connection, tenant: str, name: str, *, lock: bool = False
    ) -> QueueRow | None:
        """The queue's row; with ``lock``, locked until the transaction ends (PostgreSQL's
        FOR UPDATE; SQLite's writer holds the whole database already)."""
        query = self._queue_locked if lock else self._queue_by_name
        row = conn.execute(query, {"tenant": tenant, "name": name}).first()
        return None if row is None else QueueRow(row)

    def need_queue(
        self, conn: sa.Connection, tenant: str, name: str, *, lock: bool = False
    ) -> QueueRow:
        """``queue_row``, or QueueNotFound."""
        q = self.queue_row(conn, tenant, name, lock=lock)
        if q is None:
            raise QueueNotFound(name)
        return q

    def allocate(self, conn: sa.Connection, queue_id: int, count: int) -> int:
        """Reserve ``count`` markers in a queue; returns the first."""
        last = conn.execute(
            sa.update(queues)
            .where(queues.c.id == queue_id)
            .values(last_marker=queues.c.last_marker + count)
            .returning(queues.c.last_marker)
        ).scalar_one()
        return int(last) - count + 1

    def notify_payload(self, tenant: str, name: str) -> str:
        return payload(self.token, tenant, name)

    def notify(self, conn: sa.Connection, tenant: str, name: str) -> None:
        """Tell other qgate processes (PostgreSQL LISTEN) on commit that a queue changed."""
        if self.pg:
            note = self.notify_payload(tenant, name)
            conn.execute(sa.select(sa.func.pg_notify(NOTIFY_CHANNEL, note)))

    def bytewise(self, column: sa.Column[str]) -> sa.ColumnElement[str]:
        """``column`` compared and sorted in byte order, as memory and Python sort names.

        SQLite's default collation is that already; PostgreSQL's is the database's locale
        (en_US on most installations: "a-c" after "ab"), which would page listings in
        another order than memory's, and the service merges the two."""
        return column.collate("C") if self.pg else column

    def upsert(self, table: sa.Table) -> Any:
        """An INSERT of ``table`` that takes ``on_conflict_do_...``."""
        return (pg_dialect if self.pg else sqlite_dialect).insert(table)

    # -- messages --------------------------------------------------------------------------

    def insert_rows(self, conn: sa.Connection, rows: list[tuple[Any, ...]]) -> None:
        """New messages' rows (columns as in ``_insert_sql``) in ONE statement at the
        driver level: the hottest statement skips SQLAlchemy's per-row processing."""
        if self.pg:
            from psycopg2.extras import execute_values

            dbapi = conn.connection.dbapi_connection
            assert dbapi is not None
            cursor = dbapi.cursor()
            try:
                execute_values(cursor, self._insert_sql, rows, page_size=INSERT_PAGE)
            finally:
                cursor.close()
            sent_directly(conn, -(-len(rows) // INSERT_PAGE))
        else:
            conn.exec_driver_sql(self._insert_sql, rows)

    def claimable(
        self, queue_id: int | sa.ScalarSelect[Any], limit: int, now: float
    ) -> sa.Select[Any]:
        """The markers of the next ``limit`` claimable messages, locked (skipping those
        another transaction holds)."""
        return (
            sa.select(m.marker)
            .where(m.queue_id == queue_id, m.visible_at <= now, m.expires_at > now)
            .order_by(m.priority.desc(), m.marker)
            .limit(limit)
            .with_for_update(skip_locked=True)
        )

    # -- leases ----------------------------------------------------------------------------

    def lease(
        self,
        conn: sa.Connection,
        queue_id: int,
        limit_or_markers: int | list[int],
        claim_id: str,
        ttl: float,
        grace: float,
        now: float,
    ) -> list[Message]:
        """Lease the next ``limit`` claimable messages, or these markers, in ONE statement."""
        params: dict[str, Any] = {
            "qid": queue_id,
            "claim_id": claim_id,
            "expires": now + ttl,
            "keep_until": now + ttl + grace,
        }
        if isinstance(limit_or_markers, int):
            params.update(now=now, n=limit_or_markers)
            rows = conn.exec_driver_sql(self.lease_next_sql, params).fetchall()
            return [message_of(row) for row in rows]
        params["markers"] = limit_or_markers
        return [message(row) for row in conn.execute(self._claim_these, params)]

    def _lease_statement(self, where: sa.ColumnElement[bool]) -> sa.Update:
        """UPDATE ... RETURNING that leases the messages ``where`` selects (bound
        parameters: qid, claim_id, expires, keep_until)."""
        keep_until = sa.bindparam("keep_until", type_=sa.Double)
        return (
            sa.update(messages)
            .where(m.queue_id == sa.bindparam("qid"), where)
            .values(
                claim_id=sa.bindparam("claim_id"),
                claim_expires=sa.bindparam("expires", type_=sa.Double),
                visible_at=sa.bindparam("expires", type_=sa.Double),
                claim_count=m.claim_count + 1,
                expires_at=sa.case((m.expires_at < keep_until, keep_until), else_=m.expires_at),
            )
            .returning(*MESSAGE_COLUMNS)
        )

    @functools.cached_property
    def _claim_these(self) -> sa.Update:
        return self._lease_statement(m.marker.in_(sa.bindparam("markers", expanding=True)))
