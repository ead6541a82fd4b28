"""Queues, their schemas and their durable-subscription cursors in SQL.

Reads run on a read thread with a connection of their own; writes are group-commit
operations (``writer.each``) that run on the writer thread inside its transaction, and
raise their QGateError before writing anything (the writer's contract).
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import replace
from typing import Any

import sqlalchemy as sa

from qgate.core.admin import DepthReport, QueueDepth
from qgate.core.avro_bodies import avro_writer
from qgate.core.errors import QueueExists, UncheckedWriters
from qgate.core.model import Queue, QueueOptions, QueueStats
from qgate.storage.sql.schema import (
    claims,
    deleted_queues,
    messages,
    push_deliveries,
    push_subscriptions,
    queues,
    schemas,
    subscriptions,
    tenant_schemas,
)
from qgate.storage.sql.statements import MESSAGE_COLUMNS, QueueRow, Statements, message
from qgate.storage.sql.writer import each

m = messages.c

# -- reads -----------------------------------------------------------------------------------


def get_queue(conn: sa.Connection, sql: Statements, tenant: str, name: str) -> Queue | None:
    q = sql.queue_row(conn, tenant, name)
    return None if q is None else q.queue


def list_queues(
    conn: sa.Connection, sql: Statements, tenant: str, marker: str | None, limit: int
) -> list[Queue]:
    name_ = sql.bytewise(queues.c.name)
    query = sa.select(queues).where(queues.c.tenant == tenant)
    if marker is not None:
        query = query.where(name_ > marker)
    rows = conn.execute(query.order_by(name_).limit(limit))
    return [QueueRow(row).queue for row in rows]


def queue_stats(
    conn: sa.Connection, sql: Statements, tenant: str, name: str, now: float
) -> QueueStats:
    q = sql.need_queue(conn, tenant, name)
    live = sa.and_(m.queue_id == q.id, m.expires_at > now)
    claimed = sa.and_(m.claim_id.is_not(None), m.visible_at > now)
    delayed = sa.and_(m.claim_id.is_(None), m.visible_at > now)
    row = conn.execute(
        sa.select(
            sa.func.count(),
            sa.func.coalesce(sa.func.sum(sa.case((claimed, 1), else_=0)), 0),
            sa.func.coalesce(sa.func.sum(sa.case((delayed, 1), else_=0)), 0),
        ).where(live)
    ).one()
    total, n_claimed, n_delayed = int(row[0]), int(row[1]), int(row[2])
    oldest = newest = None
    if total:
        first = sa.select(*MESSAGE_COLUMNS).where(live)
        oldest = message(conn.execute(first.order_by(m.marker).limit(1)).one())
        newest = message(conn.execute(first.order_by(m.marker.desc()).limit(1)).one())
    return QueueStats(
        total=total,
        available=total - n_claimed - n_delayed,
        claimed=n_claimed,
        delayed=n_delayed,
        oldest=oldest,
        newest=newest,
    )


def queue_depths(conn: sa.Connection, sql: Statements, now: float, limit: int) -> DepthReport:
    """The deepest ``limit`` queues of every tenant, and the rest summed: one grouped
    read over live messages (an index scan of ``messages`` per call, done off the reactor
    by the admin sampler every few seconds, not per scrape)."""
    q = queues.c
    claimed = sa.and_(m.claim_id.is_not(None), m.visible_at > now)
    delayed = sa.and_(m.claim_id.is_(None), m.visible_at > now)
    total = sa.func.count(m.marker)
    n_claimed = sa.func.coalesce(sa.func.sum(sa.case((claimed, 1), else_=0)), 0)
    n_delayed = sa.func.coalesce(sa.func.sum(sa.case((delayed, 1), else_=0)), 0)
    joined = queues.outerjoin(messages, sa.and_(m.queue_id == q.id, m.expires_at > now))
    query = (
        sa.select(q.id, q.tenant, q.name, total, n_claimed, n_delayed, sa.func.min(m.created_at))
        .select_from(joined)
        .group_by(q.id, q.tenant, q.name)
        .order_by(total.desc(), sql.bytewise(q.tenant), sql.bytewise(q.name))
        .limit(limit)
    )
    top, ids = [], []
    for row in conn.execute(query):
        ids.append(row[0])
        n, c, d = int(row[3]), int(row[4]), int(row[5])
        top.append(QueueDepth(row[1], row[2], n - c - d, c, d, row[6]))
    rest = (  # joined: a deleted queue's messages not yet swept are no queue's
        sa.select(total, n_claimed, n_delayed, sa.func.min(m.created_at))
        .select_from(messages.join(queues, m.queue_id == q.id))
        .where(m.expires_at > now)
    )
    if ids:
        rest = rest.where(m.queue_id.not_in(ids))
    row = conn.execute(rest).one()
    n, c, d = int(row[0]), int(row[1]), int(row[2])
    count = int(conn.execute(sa.select(sa.func.count()).select_from(queues)).scalar_one())
    return DepthReport(tuple(top), QueueDepth("", "", n - c - d, c, d, row[3]), count)


def writers(conn: sa.Connection, queue_id: int, now: float) -> list[int]:
    """The writer fingerprints named by the content types of a queue's live messages."""
    query = (
        sa.select(m.content_type)
        .distinct()
        .where(
            m.queue_id == queue_id,
            m.expires_at > now,
            sa.func.lower(m.content_type).like("avro/binary%"),
        )
    )
    found = {avro_writer(row.content_type, b"") for row in conn.execute(query)}
    return sorted(w[0] for w in found if w is not None)


def schema_writers(
    conn: sa.Connection, sql: Statements, tenant: str, name: str, now: float
) -> list[int]:
    return writers(conn, sql.need_queue(conn, tenant, name).id, now)


def get_schema(conn: sa.Connection, fingerprint: int) -> str | None:
    return conn.execute(
        sa.select(schemas.c.text).where(schemas.c.fingerprint == fingerprint)
    ).scalar()


def get_cursor(
    conn: sa.Connection, sql: Statements, tenant: str, name: str, subscription: str
) -> int | None:
    q = sql.need_queue(conn, tenant, name)
    return conn.execute(
        sa.select(subscriptions.c.marker).where(
            subscriptions.c.queue_id == q.id, subscriptions.c.name == subscription
        )
    ).scalar()


# -- writes ----------------------------------------------------------------------------------


def insert_queue(
    conn: sa.Connection,
    tenant: str,
    name: str,
    options: QueueOptions,
    metadata: Mapping[str, Any],
    now: float,
) -> None:
    conn.execute(
        queues.insert().values(
            tenant=tenant,
            name=name,
            options=json.dumps(options.to_dict()),
            metadata=json.dumps(dict(metadata)),
            created_at=now,
            last_marker=0,
        )
    )


@each
def create_queue(
    conn: sa.Connection,
    sql: Statements,
    tenant: str,
    name: str,
    options: QueueOptions,
    metadata: Mapping[str, Any],
    now: float,
) -> Queue:
    if sql.queue_row(conn, tenant, name) is not None:
        raise QueueExists(name)
    try:
        with conn.begin_nested():
            insert_queue(conn, tenant, name, options, metadata, now)
    except sa.exc.IntegrityError:
        raise QueueExists(name) from None  # created meanwhile by another process
    return sql.need_queue(conn, tenant, name).queue


@each
def update_queue(
    conn: sa.Connection,
    sql: Statements,
    tenant: str,
    name: str,
    options: QueueOptions,
    metadata: Mapping[str, Any],
) -> Queue:
    q = sql.need_queue(conn, tenant, name, lock=True)
    old = q.queue.options
    options = replace(options, schema=old.schema, schema_text=old.schema_text)
    conn.execute(
        sa.update(queues)
        .where(queues.c.id == q.id)
        .values(options=json.dumps(options.to_dict()), metadata=json.dumps(dict(metadata)))
    )
    sql.notify(conn, tenant, name)
    return Queue(tenant, name, options, dict(metadata), q.queue.created_at)


@each
def set_queue_schema(
    conn: sa.Connection,
    sql: Statements,
    tenant: str,
    name: str,
    fingerprint: int | None,
    text: str | None,
    writer_fingerprints: list[int],
    now: float,
) -> Queue:
    # The queue row is locked first: a publish elsewhere either committed before (its
    # messages are in the scan below) or waits and then sees the new schema.
    q = sql.need_queue(conn, tenant, name, lock=True)
    if fingerprint is not None:
        unchecked = set(writers(conn, q.id, now)) - set(writer_fingerprints) - {fingerprint}
        if unchecked:
            raise UncheckedWriters(name, sorted(unchecked))
    options = replace(q.queue.options, schema=fingerprint, schema_text=text)
    conn.execute(
        sa.update(queues).where(queues.c.id == q.id).values(options=json.dumps(options.to_dict()))
    )
    sql.notify(conn, tenant, name)
    return Queue(tenant, name, options, q.queue.metadata, q.queue.created_at)


@each
def put_schema(conn: sa.Connection, sql: Statements, fingerprint: int, text: str) -> None:
    stmt = sql.upsert(schemas).values(fingerprint=fingerprint, text=text)
    conn.execute(stmt.on_conflict_do_nothing(index_elements=[schemas.c.fingerprint]))


@each
def own_schema(conn: sa.Connection, sql: Statements, tenant: str, fingerprint: int) -> None:
    stmt = sql.upsert(tenant_schemas).values(tenant=tenant, fingerprint=fingerprint)
    conn.execute(
        stmt.on_conflict_do_nothing(
            index_elements=[tenant_schemas.c.tenant, tenant_schemas.c.fingerprint]
        )
    )


def owns_schema(conn: sa.Connection, tenant: str, fingerprint: int) -> bool:
    row = conn.execute(
        sa.select(tenant_schemas.c.fingerprint).where(
            tenant_schemas.c.tenant.in_([tenant, ""]),
            tenant_schemas.c.fingerprint == fingerprint,
        )
    ).first()
    return row is not None


@each
def delete_queue(conn: sa.Connection, sql: Statements, tenant: str, name: str) -> int | None:
    """The queue's row and its small state (claims, cursors, push subscriptions and their
    deliveries) in one short transaction: the queue is gone for every reader at once.
    Its messages stay, orphaned, for ``sweep_slice``: the queue's id is recorded in
    ``deleted_queues``, and ids are never reused, so a queue made again under the name
    never sees them. -> the deleted queue's id, None when there was none."""
    q = sql.queue_row(conn, tenant, name)
    if q is None:
        return None
    conn.execute(sa.delete(claims).where(claims.c.queue_id == q.id))
    conn.execute(sa.delete(subscriptions).where(subscriptions.c.queue_id == q.id))
    doomed = sa.select(push_subscriptions.c.id).where(push_subscriptions.c.queue_id == q.id)
    conn.execute(sa.delete(push_deliveries).where(push_deliveries.c.subscription_id.in_(doomed)))
    conn.execute(sa.delete(push_subscriptions).where(push_subscriptions.c.queue_id == q.id))
    stmt = sql.upsert(deleted_queues).values(queue_id=q.id)
    conn.execute(stmt.on_conflict_do_nothing(index_elements=[deleted_queues.c.queue_id]))
    conn.execute(sa.delete(queues).where(queues.c.id == q.id))
    return q.id


def _delete_slice(
    conn: sa.Connection, queue_id: int, upto: int | None, limit: int | None
) -> tuple[int, bool]:
    """Delete the first ``limit`` (None: every) messages of ``queue_id``, by marker, of
    those at or below ``upto`` (None: all). -> (how many, whether any are left)."""
    where = [m.queue_id == queue_id]
    if upto is not None:
        where.append(m.marker <= upto)
    if limit is None:
        count = int(conn.execute(sa.delete(messages).where(*where)).rowcount)
    else:
        first = sa.select(m.marker).where(*where).order_by(m.marker).limit(limit)
        # The bound only in the subquery: repeated outside, SQLite scans the whole range.
        doomed = sa.delete(messages).where(m.queue_id == queue_id, m.marker.in_(first))
        count = int(conn.execute(doomed).rowcount)
        if count >= limit:
            return count, True
    # Fewer than asked for is the end, unless another process (PostgreSQL) deleted some of
    # the slice after this statement's snapshot: then more may be left. One indexed look.
    return count, conn.execute(sa.select(m.marker).where(*where).limit(1)).first() is not None


@each
def sweep_slice(conn: sa.Connection, limit: int | None) -> tuple[int, bool]:
    """Delete up to ``limit`` (None: every) orphaned messages of one deleted queue, and
    forget the queue once none are left. -> (messages deleted, whether there was a deleted
    queue to sweep). On PostgreSQL, processes sweeping at once take different queues."""
    dq = deleted_queues.c
    first = sa.select(dq.queue_id).order_by(dq.queue_id).limit(1)
    queue_id = conn.execute(first.with_for_update(skip_locked=True)).scalar()
    if queue_id is None:
        return 0, False
    count, left = _delete_slice(conn, queue_id, None, limit)
    if not left:
        conn.execute(sa.delete(deleted_queues).where(dq.queue_id == queue_id))
    return count, True


@each
def purge_start(
    conn: sa.Connection, sql: Statements, tenant: str, name: str, limit: int | None
) -> tuple[int, int, int, bool]:
    """The first slice of a purge: the queue's claims, and up to ``limit`` (None: every)
    of its messages. The purge deletes what the queue holds now, up to its last marker;
    messages published later stay. -> (queue id, that last marker, messages deleted,
    whether any of them are left)."""
    q = sql.need_queue(conn, tenant, name)
    upto = conn.execute(sa.select(queues.c.last_marker).where(queues.c.id == q.id)).scalar_one()
    conn.execute(sa.delete(claims).where(claims.c.queue_id == q.id))
    return (q.id, int(upto), *_delete_slice(conn, q.id, upto, limit))


@each
def purge_slice(conn: sa.Connection, queue_id: int, upto: int, limit: int) -> tuple[int, bool]:
    """A further slice of a purge (``purge_start``): -> (deleted, whether any are left)."""
    return _delete_slice(conn, queue_id, upto, limit)


@each
def set_cursor(
    conn: sa.Connection,
    sql: Statements,
    tenant: str,
    name: str,
    subscription: str,
    marker: int | None,
) -> None:
    q = sql.need_queue(conn, tenant, name)
    if marker is None:
        conn.execute(
            sa.delete(subscriptions).where(
                subscriptions.c.queue_id == q.id, subscriptions.c.name == subscription
            )
        )
        return
    stmt = sql.upsert(subscriptions).values(queue_id=q.id, name=subscription, marker=marker)
    conn.execute(
        stmt.on_conflict_do_update(
            index_elements=[subscriptions.c.queue_id, subscriptions.c.name],
            set_={"marker": stmt.excluded.marker},
        )
    )
