"""Push delivery state in SQL (``IPushStore``): leases and counters on
``push_subscriptions`` rows, pending deliveries in ``push_deliveries``.

A lease is taken by one UPDATE whose WHERE says "free, over, or mine": on PostgreSQL the
candidate rows are locked with FOR UPDATE SKIP LOCKED and READ COMMITTED re-checks the
WHERE of a row another transaction changed meanwhile, so two processes never both get
one subscription; SQLite's one writer serializes them anyway. Taking deliveries records
them and moves the subscription's position in one transaction, only for the lease holder.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import sqlalchemy as sa

from qgate.core.model import Delivery, PushLease, PushStats, Settlement
from qgate.storage.sql.schema import messages, push_deliveries, push_subscriptions, queues
from qgate.storage.sql.statements import Statements
from qgate.storage.sql.subscriptions import subscription_of
from qgate.storage.sql.writer import each

s = push_subscriptions.c
d = push_deliveries.c
m = messages.c


def _delivery(row: Any) -> Delivery:
    return Delivery(int(row.marker), int(row.attempts), float(row.next_at), float(row.taken_at))


def _held(conn: sa.Connection, queue_id: int, sid: str, owner: str, now: float) -> Any:
    return conn.execute(
        sa.select(s.marker).where(
            s.queue_id == queue_id,
            s.id == sid,
            s.expires_at > now,
            s.lease_owner == owner,
            s.lease_expires > now,
        )
    ).first()


def _live_row(conn: sa.Connection, queue_id: int, sid: str, now: float) -> Any:
    return conn.execute(
        sa.select(push_subscriptions).where(s.queue_id == queue_id, s.id == sid, s.expires_at > now)
    ).first()


# -- writes ----------------------------------------------------------------------------------


@each
def lease_push(
    conn: sa.Connection, sql: Statements, owner: str, lease: float, limit: int, now: float
) -> list[PushLease]:
    takeable = sa.and_(s.expires_at > now, sa.or_(s.lease_owner == owner, s.lease_expires <= now))
    candidates = sa.select(s.id).where(takeable).order_by(s.id).limit(limit)
    if sql.pg:
        candidates = candidates.with_for_update(skip_locked=True)
    rows = conn.execute(
        sa.update(push_subscriptions)
        .where(s.id.in_(candidates.scalar_subquery()), takeable)
        .values(lease_owner=owner, lease_expires=now + lease)
        .returning(*push_subscriptions.c)
    ).all()
    if not rows:
        return []
    names = {
        row.id: (row.tenant, row.name)
        for row in conn.execute(
            sa.select(queues.c.id, queues.c.tenant, queues.c.name).where(
                queues.c.id.in_({row.queue_id for row in rows})
            )
        )
    }
    held = []
    for row in sorted(rows, key=lambda r: r.id):
        tenant, name = names[row.queue_id]
        held.append(PushLease(tenant, subscription_of(row, name), now + lease))
    return held


@each
def release_push(
    conn: sa.Connection, sql: Statements, owner: str, subscription_ids: Sequence[str]
) -> int:
    if not subscription_ids:
        return 0
    return int(
        conn.execute(
            sa.update(push_subscriptions)
            .where(s.id.in_(list(subscription_ids)), s.lease_owner == owner)
            .values(lease_owner=None, lease_expires=0.0)
        ).rowcount
    )


@each
def take_deliveries(
    conn: sa.Connection,
    sql: Statements,
    tenant: str,
    name: str,
    sid: str,
    owner: str,
    limit: int,
    now: float,
) -> list[Delivery]:
    q = sql.need_queue(conn, tenant, name)
    held = _held(conn, q.id, sid, owner, now)
    if held is None or limit <= 0:
        return []
    found = conn.execute(
        sa.select(m.marker, m.available_at)
        .where(m.queue_id == q.id, m.marker > held.marker, m.expires_at > now)
        .order_by(m.marker)
        .limit(limit)
    ).all()
    if not found:
        return []
    taken = [Delivery(int(r.marker), 0, max(now, float(r.available_at)), now) for r in found]
    conn.execute(
        push_deliveries.insert(),
        [
            dict(subscription_id=sid, marker=t.marker, attempts=0, next_at=t.next_at, taken_at=now)
            for t in taken
        ],
    )
    conn.execute(sa.update(push_subscriptions).where(s.id == sid).values(marker=taken[-1].marker))
    return taken


def settle_deliveries(conn: sa.Connection, batch: Sequence[tuple[Any, ...]]) -> list[bool]:
    """The settlements of one commit together (a group of the writer, not ``each``): one
    DELETE for every delivered or given-up delivery, an UPDATE per retry, and one UPDATE
    of counters per subscription. A delivery that is not pending (settled already, or its
    subscription gone with its rows) changes nothing and answers False.

    Each op: (sql, tenant, name, sid, marker, settlement, next_at, error, now)."""
    out = [False] * len(batch)
    finals = [(i, op) for i, op in enumerate(batch) if op[5] is not Settlement.RETRY]
    gone: set[tuple[str, int]] = set()
    if finals:
        keys = list({(op[3], int(op[4])) for _, op in finals})
        for page in range(0, len(keys), 500):
            rows = conn.execute(
                sa.delete(push_deliveries)
                .where(sa.tuple_(d.subscription_id, d.marker).in_(keys[page : page + 500]))
                .returning(d.subscription_id, d.marker)
            )
            gone |= {(row.subscription_id, int(row.marker)) for row in rows}
    counts: dict[str, dict[str, Any]] = {}
    for i, op in enumerate(batch):
        _sql, _tenant, _name, sid, marker, how, next_at, error, _now = op
        if how is Settlement.RETRY:
            changed = conn.execute(
                sa.update(push_deliveries)
                .where(d.subscription_id == sid, d.marker == marker)
                .values(attempts=d.attempts + 1, next_at=next_at)
            ).rowcount
            if not changed:
                continue
        elif (sid, int(marker)) in gone:
            gone.discard((sid, int(marker)))  # a second settlement of it in this batch: False
        else:
            continue
        out[i] = True
        c = counts.setdefault(sid, {"delivered": 0, "failed": 0, "given_up": 0})
        if how is Settlement.DELIVERED:
            c["delivered"] += 1
        else:
            c["failed"] += 1
            c["last_error"] = error
            if how is Settlement.GIVEN_UP:
                c["given_up"] += 1
    for sid, c in counts.items():
        values: dict[str, Any] = {
            "delivered": s.delivered + c["delivered"],
            "failed": s.failed + c["failed"],
            "given_up": s.given_up + c["given_up"],
        }
        if "last_error" in c:
            values["last_error"] = c["last_error"]
        conn.execute(sa.update(push_subscriptions).where(s.id == sid).values(**values))
    return out


# -- reads -----------------------------------------------------------------------------------


def pending_deliveries(
    conn: sa.Connection, sql: Statements, tenant: str, name: str, sid: str, now: float
) -> list[Delivery]:
    q = sql.need_queue(conn, tenant, name)
    if _live_row(conn, q.id, sid, now) is None:
        return []
    rows = conn.execute(
        sa.select(push_deliveries).where(d.subscription_id == sid).order_by(d.marker)
    )
    return [_delivery(row) for row in rows]


def push_stats(
    conn: sa.Connection, sql: Statements, tenant: str, name: str, sid: str, now: float
) -> PushStats | None:
    q = sql.need_queue(conn, tenant, name)
    row = _live_row(conn, q.id, sid, now)
    if row is None:
        return None
    pending = conn.execute(
        sa.select(sa.func.count()).select_from(push_deliveries).where(d.subscription_id == sid)
    ).scalar_one()
    lag = conn.execute(
        sa.select(sa.func.count())
        .select_from(messages)
        .where(m.queue_id == q.id, m.marker > row.marker, m.expires_at > now)
    ).scalar_one()
    return PushStats(
        delivered=int(row.delivered),
        failed=int(row.failed),
        given_up=int(row.given_up),
        pending=int(pending),
        lag=int(lag),
        last_error=row.last_error,
    )
