"""Messages in SQL: publishing (with the queue's bounds), reading, deleting, expiry.

Reads run on a read thread with a connection of their own; writes are group-commit
operations that run on the writer thread inside its transaction, and raise their
QGateError before writing anything (the writer's contract). The bounds themselves are
``core.bounds``' decisions; this module counts and deletes.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import Any, NamedTuple

import sqlalchemy as sa

from qgate.core.bounds import admit, counts_fill, drops_oldest, excess, oldest_to_drop
from qgate.core.dead_letter import claim_order
from qgate.core.errors import MessageClaimed, QueueNotFound, SchemaChanged
from qgate.core.handoff import Handoff, earliest, handoff_order
from qgate.core.limits import resolve_times
from qgate.core.model import Message, NewMessage, ObserveQuery, QueueOptions
from qgate.storage.sql.schema import claims, messages, push_deliveries, push_subscriptions
from qgate.storage.sql.statements import (
    MESSAGE_COLUMNS,
    Statements,
    chunks,
    message,
    message_of,
    queue_options,
)
from qgate.storage.sql.writer import answered_before_commit, each

m = messages.c

# -- reads -----------------------------------------------------------------------------------


def get_messages(
    conn: sa.Connection,
    sql: Statements,
    tenant: str,
    name: str,
    markers: Sequence[int],
    now: float,
) -> list[Message]:
    q = sql.need_queue(conn, tenant, name)
    if not markers:
        return []
    rows = conn.execute(
        sa.select(*MESSAGE_COLUMNS).where(
            m.queue_id == q.id, m.marker.in_(list(markers)), m.expires_at > now
        )
    )
    found = {row.marker: message(row) for row in rows}
    return [found[k] for k in markers if k in found]


def observe(
    conn: sa.Connection, sql: Statements, tenant: str, name: str, query: ObserveQuery, now: float
) -> list[Message]:
    if query.include_claimed and query.include_delayed and query.exclude_producer is None:
        # A topic subscriber's read: one prebuilt statement; the queue is looked for on
        # its own only when it gave nothing.
        after = -1 if query.after is None else query.after
        params = {"tenant": tenant, "name": name, "now": now, "after": after, "n": query.limit}
        rows = conn.exec_driver_sql(sql.observe_all_sql, params).fetchall()
        if not rows:
            sql.need_queue(conn, tenant, name)
        return [message_of(row) for row in rows]
    q = sql.need_queue(conn, tenant, name)
    select = sa.select(*MESSAGE_COLUMNS).where(m.queue_id == q.id, m.expires_at > now)
    if query.after is not None:
        select = select.where(m.marker > query.after)
    claimed = sa.and_(m.claim_id.is_not(None), m.visible_at > now)
    if query.include_claimed and not query.include_delayed:
        select = select.where(sa.or_(m.visible_at <= now, claimed))
    elif query.include_delayed and not query.include_claimed:
        select = select.where(sa.not_(claimed))
    elif not query.include_claimed and not query.include_delayed:
        select = select.where(m.visible_at <= now)
    if query.exclude_producer is not None:
        select = select.where(sa.or_(m.producer.is_(None), m.producer != query.exclude_producer))
    return [message(row) for row in conn.execute(select.order_by(m.marker).limit(query.limit))]


def next_wake(
    conn: sa.Connection, sql: Statements, tenant: str, name: str, now: float, after: int | None
) -> float | None:
    q = sql.need_queue(conn, tenant, name)
    query = sa.select(sa.func.min(m.visible_at)).where(m.queue_id == q.id, m.visible_at > now)
    if after is not None:
        query = query.where(m.marker > after)
    return conn.execute(query).scalar()


# -- publishing ------------------------------------------------------------------------------

#: One publish: (statements, tenant, queue, its messages, now, the schema it was checked
#: against, the parked claim or pop it is offered to).
Publish = tuple[Statements, str, str, Sequence[NewMessage], float, int | None, Handoff | None]


def publish_group(conn: sa.Connection, batch: Sequence[Publish]) -> list[Any]:
    """Every publish of a transaction: per queue ONE marker UPDATE (which also finds the
    queue and its options and, when a publish is offered to a waiter, whether the queue
    holds a claimable message), then ONE INSERT for all their rows, at the driver level
    (the hottest statements skip SQLAlchemy's per-row parameter processing), and ONE
    INSERT of the claims that hand-offs made."""
    sql = batch[0][0]  # one writer serves one store: every publish names the same
    out: list[Any] = [None] * len(batch)
    by_queue: dict[tuple[str, str], list[int]] = {}
    for i, (_, tenant, name, *_rest) in enumerate(batch):
        by_queue.setdefault((tenant, name), []).append(i)
    rows: list[tuple[Any, ...]] = []
    records: list[dict[str, Any]] = []
    trims: list[tuple[int, QueueOptions]] = []
    for (tenant, name), indexes in by_queue.items():
        requested = sum(len(batch[i][3]) for i in indexes)
        offered = [batch[i][6] for i in indexes if batch[i][6] is not None]
        params: tuple[Any, ...] = (requested, tenant, name)
        if sql.pg:  # the NOTIFY rides on the UPDATE: one round trip for both
            params = (*params, sql.notify_payload(tenant, name))
        if offered:
            when = batch[indexes[0]][4]
            probe = (*params, when, when, when, when, when)
            found = conn.exec_driver_sql(sql.allocate_probe_sql, probe).first()
        else:
            found = conn.exec_driver_sql(sql.allocate_sql, params).first()
        if found is None:
            for i in indexes:
                out[i] = QueueNotFound(name)
            continue
        next_wake: float | None = None
        if offered:
            queue_id, last, options_json, claimable, next_wake = found[-5:]
        else:
            (queue_id, last, options_json), claimable = found[-3:], True
        options = queue_options(options_json)
        marker = int(last) - requested + 1
        # The schema check happens here, under the queue row's lock: exact even when
        # another process changes the schema between a publisher's check and now.
        checked = []
        for i in indexes:
            if batch[i][5] == options.schema:
                checked.append(i)
            else:
                out[i] = SchemaChanged(name, options.schema)
        count, size = fill(conn, queue_id) if counts_fill(options) else (0, 0)
        refusals = admit(name, options, count, size, [batch[i][3] for i in checked])
        accepted = set()
        for i, refused in zip(checked, refusals, strict=True):
            if refused is None:
                accepted.add(i)
            else:
                out[i] = refused
        # A waiter gets a message only while nothing earlier is claimable: not what the
        # queue held, nor what an earlier publish of this batch left claimable.
        blocked = bool(claimable)
        wake_at = next_wake
        for i in indexes:
            new = batch[i][3]
            if i not in accepted:
                marker += len(new)  # a refused publish leaves a gap; markers only grow
                continue
            now, handoff = batch[i][4], batch[i][6]
            out[i] = list(range(marker, marker + len(new)))
            if not offered:  # the common case: plain rows, nothing to work out
                rows.extend(_plain_rows(queue_id, marker, new, options, now))
                marker += len(new)
                continue
            times = [resolve_times(msg, options, now) for msg in new]
            handed: list[int] = []
            if handoff is not None and not blocked:
                handed = handoff_order(new, times, now, handoff.limit)
                if handed and not handoff.take():
                    handed = []
            stored = _publish_rows(queue_id, marker, new, times, now, handoff, handed)
            rows.extend(stored.rows)
            blocked = blocked or stored.claimable
            wake_at = earliest(wake_at, stored.wake_at)
            if stored.record is not None:
                records.append(stored.record)
            if handoff is not None:
                handoff.handed(stored.handed, False, None)
            marker += len(new)
        for handoff in offered:
            assert handoff is not None
            handoff.handed(handoff.messages, not blocked, wake_at)
        if drops_oldest(options):
            trims.append((queue_id, options))
    if rows:
        sql.insert_rows(conn, rows)
    if records:
        conn.execute(claims.insert(), records)
    for queue_id, options in trims:
        trim(conn, queue_id, options)
    return out


def _plain_rows(
    queue_id: int, first: int, new: Sequence[NewMessage], options: QueueOptions, now: float
) -> list[tuple[Any, ...]]:
    """The rows of a publish no waiter was offered (columns as in ``_insert_sql``)."""
    rows = []
    for marker, msg in enumerate(new, first):
        expires_at, available_at = resolve_times(msg, options, now)
        rows.append(
            (
                queue_id,
                marker,
                msg.priority,
                msg.body,
                len(msg.body),
                msg.content_type,
                json.dumps(dict(msg.headers)) if msg.headers else None,
                msg.producer,
                now,
                expires_at,
                available_at,
                available_at,
                None,
                None,
                0,
            )
        )
    return rows


class _Stored(NamedTuple):
    """The rows of one publish, and what its hand-off took."""

    rows: list[tuple[Any, ...]]
    handed: list[Message]
    record: dict[str, Any] | None
    claimable: bool
    wake_at: float | None


def _publish_rows(
    queue_id: int,
    first: int,
    new: Sequence[NewMessage],
    times: list[tuple[float, float]],
    now: float,
    handoff: Handoff | None,
    handed: list[int],
) -> _Stored:
    """The rows of one publish (columns as in ``Statements._insert_sql``): handed
    messages leased to the hand-off's claim, or not stored when it is a pop."""
    rows: list[tuple[Any, ...]] = []
    out: dict[int, Message] = {}
    claimable = False
    wake_at: float | None = None
    taken = set(handed)
    claim_id = None if handoff is None else handoff.claim_id
    for i, msg in enumerate(new):
        expires_at, available_at = times[i]
        marker = first + i
        headers = json.dumps(dict(msg.headers)) if msg.headers else None
        lease: tuple[Any, ...] = (None, None, 0)
        visible_at = available_at
        if i in taken:
            assert handoff is not None
            if claim_id is not None:
                visible_at = now + handoff.ttl
                expires_at = max(expires_at, visible_at + handoff.grace)
                lease = (claim_id, visible_at, 1)
            out[i] = Message(
                marker,
                msg.body,
                msg.content_type,
                dict(msg.headers),
                msg.producer,
                msg.priority,
                now,
                expires_at,
                available_at,
                *lease,
            )
            if claim_id is None:
                continue  # popped: handed over, never stored
        if visible_at > now:
            wake_at = earliest(wake_at, visible_at)
        elif expires_at > now:
            claimable = True
        rows.append(
            (
                queue_id,
                marker,
                msg.priority,
                msg.body,
                len(msg.body),
                msg.content_type,
                headers,
                msg.producer,
                now,
                expires_at,
                available_at,
                visible_at,
                *lease,
            )
        )
    record = None
    if handed and handoff is not None and claim_id is not None:
        record = {
            "id": claim_id,
            "queue_id": queue_id,
            "ttl": handoff.ttl,
            "grace": handoff.grace,
            "created_at": now,
            "expires_at": now + handoff.ttl,
            "markers": json.dumps([first + i for i in handed]),
        }
    return _Stored(rows, [out[i] for i in handed], record, claimable, wake_at)


def fill(conn: sa.Connection, queue_id: int) -> tuple[int, int]:
    """How many messages and bytes the queue holds (expired ones not reaped included)."""
    row = conn.execute(
        sa.select(sa.func.count(), sa.func.coalesce(sa.func.sum(m.size), 0)).where(
            m.queue_id == queue_id
        )
    ).one()
    return int(row[0]), int(row[1])


def trim(conn: sa.Connection, queue_id: int, options: QueueOptions) -> None:
    """Drop the oldest messages until the queue is within its bounds (drop_oldest)."""
    over = excess(options, *fill(conn, queue_id))
    if not any(over):
        return
    oldest = conn.execute(
        sa.select(m.marker, m.size).where(m.queue_id == queue_id).order_by(m.marker)
    )
    doomed = oldest_to_drop(over, ((marker, size) for marker, size in oldest))
    oldest.close()
    for chunk in chunks(doomed, 500):
        conn.execute(sa.delete(messages).where(m.queue_id == queue_id, m.marker.in_(chunk)))


# -- deleting --------------------------------------------------------------------------------


@each
def delete_messages(
    conn: sa.Connection,
    sql: Statements,
    tenant: str,
    name: str,
    markers: list[int],
    claim_id: str | None,
    now: float,
) -> list[int]:
    q = sql.need_queue(conn, tenant, name)
    if not markers:
        return []
    where = [m.queue_id == q.id, m.marker.in_(markers)]
    if claim_id is None:
        held = conn.execute(
            sa.select(m.marker).where(*where, m.claim_id.is_not(None), m.visible_at > now).limit(1)
        ).scalar()
        if held is not None:
            raise MessageClaimed(str(held))
    else:
        where.append(m.claim_id == claim_id)
    rows = conn.execute(sa.delete(messages).where(*where).returning(m.marker))
    return sorted(row.marker for row in rows)


def _pop(
    conn: sa.Connection,
    sql: Statements,
    tenant: str,
    name: str,
    limit: int,
    now: float,
    handoff: Handoff | None = None,
) -> list[Message]:
    """Claim and delete the next ``limit`` claimable messages in ONE statement at the
    driver level; the queue is looked for on its own only when it gave nothing.
    ``pop_messages_promptly`` answers its caller once the statement ran, before the
    commit: a pop that then does not commit (a crash, a failed COMMIT) leaves the
    messages stored, and they are delivered again."""
    if handoff is not None and handoff.taken:
        return []  # a publish of this transaction or an earlier one handed it messages
    params = {"tenant": tenant, "name": name, "now": now, "n": limit}
    rows = conn.exec_driver_sql(sql.pop_sql, params).fetchall()
    if not rows:
        if conn.exec_driver_sql(sql.queue_exists_sql, params).first() is None:
            raise QueueNotFound(name)
        return []
    found = sorted(map(message_of, rows), key=_claim_key)
    if handoff is not None:
        handoff.spend()
    return found


def _claim_key(msg: Message) -> tuple[int, int]:
    return claim_order(msg.priority, msg.marker)


pop_messages = each(_pop)
#: ``IQueueStorage.pop_messages(..., prompt=True)``: answered before the commit.
pop_messages_promptly = answered_before_commit(each(_pop))


@each
def reap(conn: sa.Connection, now: float, limit: int) -> int:
    doomed = sa.select(m.queue_id, m.marker).where(m.expires_at <= now).limit(limit).subquery()
    count = conn.execute(
        sa.delete(messages).where(
            sa.tuple_(m.queue_id, m.marker).in_(sa.select(doomed.c.queue_id, doomed.c.marker))
        )
    ).rowcount
    # Claims and push subscriptions too at most ``limit`` per transaction: the reaper's
    # writes share the writer with every tenant's, so none of them is one long write.
    c = claims.c
    expired = sa.select(c.id).where(c.expires_at <= now).limit(limit)
    conn.execute(sa.delete(claims).where(c.id.in_(expired)))
    ps = push_subscriptions.c
    expired = sa.select(ps.id).where(ps.expires_at <= now).limit(limit)
    conn.execute(sa.delete(push_subscriptions).where(ps.id.in_(expired)))
    pd = push_deliveries.c
    conn.execute(  # the deliveries of subscriptions that are gone
        sa.delete(push_deliveries).where(
            ~sa.exists().where(push_subscriptions.c.id == pd.subscription_id)
        )
    )
    return int(count)
