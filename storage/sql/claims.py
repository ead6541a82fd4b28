"""Claims in SQL: leasing (with the queue's dead-letter policy), renewing, releasing,
acknowledging.

Reads run on a read thread with a connection of their own; writes are group-commit
operations that run on the writer thread inside its transaction, and raise their
QGateError before writing anything (the writer's contract). Which messages are dead and
how they arrive in the dead-letter queue are ``core.dead_letter``'s decisions; this
module selects, moves and leases.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import Any, NamedTuple

import sqlalchemy as sa

from qgate.core.dead_letter import claim_order, dead_letter_expiry, dead_letter_options, is_dead
from qgate.core.errors import QueueNotFound
from qgate.core.handoff import Handoff
from qgate.core.model import Claim, Message
from qgate.storage.sql.queues import insert_queue
from qgate.storage.sql.schema import claims, messages, queues
from qgate.storage.sql.statements import (
    MESSAGE_COLUMNS,
    QueueRow,
    Statements,
    ack_statements,
    in_claim_order,
    message,
)
from qgate.storage.sql.writer import each

m = messages.c

# -- reads -----------------------------------------------------------------------------------


def get_claim(
    conn: sa.Connection, sql: Statements, tenant: str, name: str, claim_id: str, now: float
) -> Claim | None:
    q = sql.need_queue(conn, tenant, name)
    row = conn.execute(
        sa.select(claims).where(
            claims.c.id == claim_id,
            claims.c.queue_id == q.id,
            claims.c.expires_at > now,
        )
    ).first()
    if row is None:
        return None
    held = conn.execute(
        sa.select(*MESSAGE_COLUMNS).where(
            m.queue_id == q.id,
            m.marker.in_(json.loads(row.markers)),
            m.claim_id == claim_id,
            m.expires_at > now,
        )
    )
    return Claim(
        id=claim_id,
        queue=name,
        ttl=row.ttl,
        grace=row.grace,
        created_at=row.created_at,
        expires_at=row.expires_at,
        messages=tuple(in_claim_order([message(r) for r in held])),
    )


# -- writes ----------------------------------------------------------------------------------


class Claimed(NamedTuple):
    """What one claim of a group did: the messages it leased, in claim order, and the
    queues it moved dead messages into (the store wakes their waiters after the commit)."""

    messages: list[Message]
    dead_letter_queues: frozenset[str]
    #: How many messages it moved there.
    dead_lettered: int = 0


def claim_group(
    conn: sa.Connection,
    batch: Sequence[tuple[Statements, str, str, str, int, float, float, float, Handoff | None]],
) -> list[Any]:
    """Every claim of a transaction: each queue is read once, each claim is one UPDATE
    (more for dead-lettering queues), and all claim records are ONE INSERT. Each claim's
    slot is a ``Claimed``."""
    out: list[Any] = []
    found_queues: dict[tuple[str, str], QueueRow] = {}
    records: list[dict[str, Any]] = []
    for sql, tenant, name, claim_id, limit, ttl, grace, now, handoff in batch:
        if handoff is not None and handoff.taken:
            # A publish of this transaction or an earlier one handed this waiter messages.
            out.append(Claimed([], frozenset()))
            continue
        q = found_queues.get((tenant, name))
        if q is None:
            q = sql.queue_row(conn, tenant, name)
            if q is None:
                out.append(QueueNotFound(name))
                continue
            found_queues[(tenant, name)] = q
        found, moved_into, moved = _claim(conn, sql, q, claim_id, limit, ttl, grace, now)
        if found and handoff is not None:
            handoff.spend()
        if found:
            records.append(
                {
                    "id": claim_id,
                    "queue_id": q.id,
                    "ttl": ttl,
                    "grace": grace,
                    "created_at": now,
                    "expires_at": now + ttl,
                    "markers": json.dumps([msg.marker for msg in found]),
                }
            )
        out.append(Claimed(found, moved_into, moved))
    if records:
        conn.execute(claims.insert(), records)
    return out


def _claim(
    conn: sa.Connection,
    sql: Statements,
    q: QueueRow,
    claim_id: str,
    limit: int,
    ttl: float,
    grace: float,
    now: float,
) -> tuple[list[Message], frozenset[str], int]:
    options = q.queue.options
    moved_into: frozenset[str] = frozenset()
    moved = 0
    if options.max_claim_count is None:
        found = sql.lease(conn, q.id, limit, claim_id, ttl, grace, now)
    else:
        found = []
        while len(found) < limit:
            want = limit - len(found)
            candidates = conn.execute(
                sql.claimable(q.id, want, now).add_columns(m.claim_count)
            ).all()
            dead = [c.marker for c in candidates if is_dead(options, c.claim_count)]
            live = [c.marker for c in candidates if not is_dead(options, c.claim_count)]
            if dead:
                dead_letter(conn, sql, q, dead, now)
                if options.dead_letter_queue is not None:
                    moved_into = frozenset([options.dead_letter_queue])
                    moved += len(dead)
            if live:
                found += sql.lease(conn, q.id, live, claim_id, ttl, grace, now)
            if len(candidates) < want or not dead:
                break
    return in_claim_order(found), moved_into, moved


def dead_letter(
    conn: sa.Connection, sql: Statements, q: QueueRow, markers: list[int], now: float
) -> None:
    """Move messages to the queue's dead-letter queue (created on demand), or drop them."""
    options = q.queue.options
    dlq_name = options.dead_letter_queue
    if dlq_name is not None:
        dlq = sql.queue_row(conn, q.queue.tenant, dlq_name)
        if dlq is None:
            insert_queue(conn, q.queue.tenant, dlq_name, dead_letter_options(options), {}, now)
            dlq = sql.need_queue(conn, q.queue.tenant, dlq_name)
        found = conn.execute(
            sa.select(messages).where(m.queue_id == q.id, m.marker.in_(markers))
        ).mappings()
        # In the order the claim met them (memory's order), not whatever the plan gives.
        moved = sorted(found, key=lambda row: claim_order(row["priority"], row["marker"]))
        first = sql.allocate(conn, dlq.id, len(moved))
        rows = []
        for offset, row in enumerate(moved):
            copy = dict(row)
            copy.update(
                queue_id=dlq.id,
                marker=first + offset,
                expires_at=dead_letter_expiry(options, row["expires_at"], now),
                available_at=now,
                visible_at=now,
                claim_id=None,
                claim_expires=None,
            )
            rows.append(copy)
        if rows:
            conn.execute(messages.insert(), rows)
            sql.notify(conn, q.queue.tenant, dlq_name)
    conn.execute(sa.delete(messages).where(m.queue_id == q.id, m.marker.in_(markers)))


def _live_claim(conn: sa.Connection, queue_id: int, claim_id: str, now: float | None) -> Any:
    query = sa.select(claims).where(claims.c.id == claim_id, claims.c.queue_id == queue_id)
    if now is not None:
        query = query.where(claims.c.expires_at > now)
    return conn.execute(query).first()


@each
def renew_claim(
    conn: sa.Connection,
    sql: Statements,
    tenant: str,
    name: str,
    claim_id: str,
    ttl: float,
    grace: float,
    now: float,
) -> bool:
    q = sql.need_queue(conn, tenant, name)
    row = _live_claim(conn, q.id, claim_id, now)
    if row is None:
        return False
    expires = now + ttl
    keep_until = now + ttl + grace
    conn.execute(
        sa.update(claims)
        .where(claims.c.id == claim_id)
        .values(ttl=ttl, grace=grace, expires_at=expires)
    )
    conn.execute(
        sa.update(messages)
        .where(
            m.queue_id == q.id,
            m.marker.in_(json.loads(row.markers)),
            m.claim_id == claim_id,
        )
        .values(
            claim_expires=expires,
            visible_at=expires,
            expires_at=sa.case((m.expires_at < keep_until, keep_until), else_=m.expires_at),
        )
    )
    return True


@each
def release(
    conn: sa.Connection,
    sql: Statements,
    tenant: str,
    name: str,
    claim_id: str,
    wanted: list[int] | None,
    delay: float,
    now: float,
    undelivered: bool = False,
) -> int:
    q = sql.need_queue(conn, tenant, name)
    row = _live_claim(conn, q.id, claim_id, None)
    if row is None:
        return 0
    markers = json.loads(row.markers)
    if wanted is not None:
        markers = sorted(set(markers) & set(wanted))
    count = 0
    if markers:
        count = conn.execute(
            sa.update(messages)
            .where(m.queue_id == q.id, m.marker.in_(markers), m.claim_id == claim_id)
            .values(
                claim_id=None,
                claim_expires=None,
                visible_at=now + delay,
                # Never delivered: this claim does not count toward dead-lettering.
                claim_count=(
                    sa.case((m.claim_count > 0, m.claim_count - 1), else_=0)
                    if undelivered
                    else m.claim_count
                ),
            )
        ).rowcount
    still_held = (
        wanted is not None
        and conn.execute(
            sa.select(m.marker)
            .where(
                m.queue_id == q.id, m.claim_id == claim_id, m.marker.in_(json.loads(row.markers))
            )
            .limit(1)
        ).first()
    )
    if not still_held:
        conn.execute(sa.delete(claims).where(claims.c.id == claim_id))
    if count:
        sql.notify(conn, tenant, name)
    return int(count)


def ack_group(conn: sa.Connection, batch: Sequence[tuple[str, str, str, list[int]]]) -> list[Any]:
    """Every ack of a transaction, of every queue, in ONE statement.

    ``DELETE ... WHERE (queue = ? AND claim_id = ? AND marker IN (...)) OR ... RETURNING
    claim_id, marker``: each term deletes only rows its claim still holds, so a row that
    a later claim took over is never deleted by an earlier claim's late ack. Claim ids
    are unique, so the claim id and marker of a deleted row name the ack that deleted it
    (the first one, when one claim's ack comes twice); a batch naming one claim id on two
    queues goes queue by queue instead."""
    out: list[Any] = [[] for _ in batch]
    queues_of: dict[str, set[tuple[str, str]]] = {}
    for tenant, name, claim_id, markers in batch:
        if markers:
            queues_of.setdefault(claim_id, set()).add((tenant, name))
    if any(len(named) > 1 for named in queues_of.values()):
        by_queue: dict[tuple[str, str], list[int]] = {}
        for i, (tenant, name, _, _) in enumerate(batch):
            by_queue.setdefault((tenant, name), []).append(i)
        for indexes in by_queue.values():
            for i, result in zip(indexes, _ack_all(conn, [batch[i] for i in indexes])):
                out[i] = result
        return out
    return _ack_all(conn, batch)


def _ack_all(conn: sa.Connection, batch: Sequence[tuple[str, str, str, list[int]]]) -> list[Any]:
    out: list[Any] = [[] for _ in batch]
    # One term per claim: the acks of one claim (one per message under STOMP's
    # client-individual) share it.
    terms: dict[tuple[str, str, str], set[int]] = {}
    for tenant, name, claim_id, markers in batch:
        if markers:
            terms.setdefault((tenant, name, claim_id), set()).update(markers)
    deleted: dict[str, set[int]] = {}
    pg = conn.dialect.name == "postgresql"
    for text, params in ack_statements(pg, [(*key, sorted(held)) for key, held in terms.items()]):
        for claim_id, marker in conn.exec_driver_sql(text, params).fetchall():
            deleted.setdefault(claim_id, set()).add(marker)
    missing: dict[tuple[str, str], list[int]] = {}
    for i, (tenant, name, claim_id, markers) in enumerate(batch):
        mine = deleted.get(claim_id)
        if mine:
            out[i] = sorted(k for k in set(markers) if k in mine)
            mine.difference_update(out[i])
        if not out[i]:
            missing.setdefault((tenant, name), []).append(i)
    for (tenant, name), indexes in missing.items():
        _fail_if_missing(conn, tenant, name, out, indexes)
    return out


def _fail_if_missing(
    conn: sa.Connection, tenant: str, name: str, out: list[Any], indexes: list[int]
) -> None:
    """After an ack that deleted nothing: QueueNotFound when the queue does not exist
    (checked only then, so the common ack costs no extra statement)."""
    found = conn.execute(
        sa.select(queues.c.id).where(queues.c.tenant == tenant, queues.c.name == name)
    ).first()
    if found is None:
        for i in indexes:
            out[i] = QueueNotFound(name)
