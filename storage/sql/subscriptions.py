"""Push subscriptions in SQL (``ISubscriptionStore``, table ``push_subscriptions``).

Reads run on a read thread with a connection of their own; writes are group-commit
operations that run on the writer thread inside its transaction, and raise their
QGateError before writing anything (the writer's contract). A subscriber is unique among
the live subscriptions of a queue: create and update lock the queue's row (PostgreSQL's
FOR UPDATE; SQLite's writer holds the database), so processes sharing one database check
and write one at a time. Locking the queue row also orders a create with the queue's
publishes: a new subscription's position is the queue's last marker, and every message
published after it has a higher one.
"""

from __future__ import annotations

import json
from typing import Any

import sqlalchemy as sa

from qgate.core.errors import SubscriptionExists, SubscriptionNotFound
from qgate.core.model import NewSubscription, Subscription, SubscriptionUpdate
from qgate.storage.sql.schema import push_deliveries, push_subscriptions, queues
from qgate.storage.sql.statements import QueueRow, Statements
from qgate.storage.sql.writer import each

s = push_subscriptions.c


def subscription_of(row: Any, name: str) -> Subscription:
    """The core's Subscription of a ``push_subscriptions`` row of queue ``name``."""
    return Subscription(
        id=row.id,
        queue=name,
        subscriber=row.subscriber,
        ttl=int(row.ttl),
        options=json.loads(row.options),
        created_at=row.created_at,
        expires_at=row.expires_at,
        confirmed=bool(row.confirmed),
        marker=int(row.marker),
    )


def _live(queue_id: int, now: float) -> sa.ColumnElement[bool]:
    return sa.and_(s.queue_id == queue_id, s.expires_at > now)


def _find(conn: sa.Connection, q: QueueRow, subscription_id: str, now: float) -> Any:
    return conn.execute(
        sa.select(push_subscriptions).where(_live(q.id, now), s.id == subscription_id)
    ).first()


def _holds(conn: sa.Connection, q: QueueRow, subscriber: str, now: float) -> Any:
    """The live subscription of the queue that has ``subscriber``, or None."""
    return conn.execute(
        sa.select(push_subscriptions).where(_live(q.id, now), s.subscriber == subscriber)
    ).first()


# -- reads -----------------------------------------------------------------------------------


def get_subscription(
    conn: sa.Connection, sql: Statements, tenant: str, name: str, subscription_id: str, now: float
) -> Subscription | None:
    q = sql.need_queue(conn, tenant, name)
    row = _find(conn, q, subscription_id, now)
    return None if row is None else subscription_of(row, name)


def list_subscriptions(
    conn: sa.Connection,
    sql: Statements,
    tenant: str,
    name: str,
    marker: str | None,
    limit: int,
    now: float,
) -> list[Subscription]:
    q = sql.need_queue(conn, tenant, name)
    id_ = sql.bytewise(s.id)  # the order memory gives, whatever the database's collation
    query = sa.select(push_subscriptions).where(_live(q.id, now))
    if marker is not None:
        query = query.where(id_ > marker)
    rows = conn.execute(query.order_by(id_).limit(limit))
    return [subscription_of(row, name) for row in rows]


# -- writes ----------------------------------------------------------------------------------


@each
def create_subscription(
    conn: sa.Connection,
    sql: Statements,
    tenant: str,
    name: str,
    new: NewSubscription,
    now: float,
) -> tuple[Subscription, bool]:
    q = sql.need_queue(conn, tenant, name, lock=True)
    existing = _holds(conn, q, new.subscriber, now)
    if existing is not None:
        return subscription_of(existing, name), False
    last = conn.execute(sa.select(queues.c.last_marker).where(queues.c.id == q.id)).scalar_one()
    # An expired subscription of that subscriber, not reaped yet, is gone: make it so.
    conn.execute(
        sa.delete(push_subscriptions).where(s.queue_id == q.id, s.subscriber == new.subscriber)
    )
    sub = new.placed(name, now, marker=int(last))
    conn.execute(
        push_subscriptions.insert().values(
            id=sub.id,
            queue_id=q.id,
            subscriber=sub.subscriber,
            ttl=sub.ttl,
            options=json.dumps(sub.options),
            created_at=now,
            expires_at=sub.expires_at,
            confirmed=False,
            marker=sub.marker,
        )
    )
    return sub, True


@each
def update_subscription(
    conn: sa.Connection,
    sql: Statements,
    tenant: str,
    name: str,
    subscription_id: str,
    changes: SubscriptionUpdate,
    now: float,
) -> Subscription:
    q = sql.need_queue(conn, tenant, name, lock=True)
    row = _find(conn, q, subscription_id, now)
    if row is None:
        raise SubscriptionNotFound(subscription_id)
    values: dict[str, Any] = {}
    subscriber = changes.subscriber
    if subscriber is not None and subscriber != row.subscriber:
        if _holds(conn, q, subscriber, now) is not None:
            raise SubscriptionExists(name, subscriber)
        values["subscriber"] = subscriber
    if changes.ttl is not None:
        values.update(ttl=changes.ttl, expires_at=now + changes.ttl)
    if changes.options is not None:
        values["options"] = json.dumps(dict(changes.options))
    if changes.confirmed is not None:
        values["confirmed"] = changes.confirmed
    if "subscriber" in values:
        conn.execute(  # an expired holder of the new subscriber, not reaped yet
            sa.delete(push_subscriptions).where(
                s.queue_id == q.id, s.subscriber == subscriber, s.id != subscription_id
            )
        )
    if values:
        conn.execute(sa.update(push_subscriptions).where(s.id == subscription_id).values(**values))
    found = _find(conn, q, subscription_id, now)
    return subscription_of(found, name)


@each
def advance_subscription(
    conn: sa.Connection,
    sql: Statements,
    tenant: str,
    name: str,
    subscription_id: str,
    marker: int,
    now: float,
) -> int | None:
    q = sql.need_queue(conn, tenant, name)
    moved = conn.execute(
        sa.update(push_subscriptions)
        .where(_live(q.id, now), s.id == subscription_id)
        .values(marker=sa.case((s.marker < marker, marker), else_=s.marker))
        .returning(s.marker)
    ).first()
    return None if moved is None else int(moved.marker)


@each
def delete_subscription(
    conn: sa.Connection, sql: Statements, tenant: str, name: str, subscription_id: str
) -> bool:
    q = sql.need_queue(conn, tenant, name)
    deleted = conn.execute(
        sa.delete(push_subscriptions).where(s.queue_id == q.id, s.id == subscription_id)
    ).rowcount
    if deleted:
        conn.execute(
            sa.delete(push_deliveries).where(push_deliveries.c.subscription_id == subscription_id)
        )
    return bool(deleted)


@each
def purge_subscriptions(conn: sa.Connection, sql: Statements, tenant: str, name: str) -> int:
    q = sql.need_queue(conn, tenant, name)
    ids = sa.select(s.id).where(s.queue_id == q.id)
    conn.execute(sa.delete(push_deliveries).where(push_deliveries.c.subscription_id.in_(ids)))
    return int(conn.execute(sa.delete(push_subscriptions).where(s.queue_id == q.id)).rowcount)
