"""Tenants, their API keys and quota overrides in SQL (reads on a read thread; writes on
the writer's). Revoking a key and setting a quota bump ``tenant_changes`` in the same
transaction, so every process polling it sees the change once it is committed."""

from __future__ import annotations

import sqlalchemy as sa

from qgate.core.model import Tenant
from qgate.core.usage import TenantUsage
from qgate.storage.sql.schema import (
    api_keys,
    messages,
    push_subscriptions,
    queues,
    tenant_changes,
    tenant_quotas,
    tenants,
)
from qgate.storage.sql.statements import Statements
from qgate.storage.sql.writer import each

# -- reads -----------------------------------------------------------------------------------


def get_tenant(conn: sa.Connection, name: str) -> Tenant | None:
    row = conn.execute(sa.select(tenants).where(tenants.c.name == name)).first()
    return None if row is None else Tenant(row.name, row.created_at)


def list_tenants(conn: sa.Connection, sql: Statements) -> list[Tenant]:
    rows = conn.execute(sa.select(tenants).order_by(sql.bytewise(tenants.c.name)))
    return [Tenant(row.name, row.created_at) for row in rows]


def find_key(conn: sa.Connection, key_id: str) -> tuple[str, str] | None:
    row = conn.execute(
        sa.select(api_keys.c.tenant, api_keys.c.secret_hash).where(
            api_keys.c.id == key_id, api_keys.c.revoked_at.is_(None)
        )
    ).first()
    return None if row is None else (row.tenant, row.secret_hash)


def key_ids(conn: sa.Connection) -> list[str]:
    rows = conn.execute(sa.select(api_keys.c.id).where(api_keys.c.revoked_at.is_(None)))
    return [row.id for row in rows]


def find_key_scope(conn: sa.Connection, key_id: str) -> tuple[str | None, str | None] | None:
    row = conn.execute(
        sa.select(api_keys.c.queues, api_keys.c.ops).where(
            api_keys.c.id == key_id, api_keys.c.revoked_at.is_(None)
        )
    ).first()
    return None if row is None else (row.queues, row.ops)


def quota_overrides(conn: sa.Connection) -> dict[str, dict[str, float]]:
    out: dict[str, dict[str, float]] = {}
    for row in conn.execute(sa.select(tenant_quotas)):
        out.setdefault(row.tenant, {})[row.quota] = float(row.value)
    return out


def tenant_version(conn: sa.Connection) -> int:
    version = conn.execute(
        sa.select(tenant_changes.c.version).where(tenant_changes.c.id == 1)
    ).scalar()
    return int(version or 0)


def tenant_usage(conn: sa.Connection, tenant: str, now: float) -> TenantUsage:
    """Exact counts of what ``tenant`` holds (``core.usage``: taken now and then, never
    per publish)."""
    ids = sa.select(queues.c.id).where(queues.c.tenant == tenant).scalar_subquery()
    count = conn.execute(
        sa.select(sa.func.count()).select_from(queues).where(queues.c.tenant == tenant)
    ).scalar()
    stored = conn.execute(
        sa.select(sa.func.count(), sa.func.coalesce(sa.func.sum(messages.c.size), 0)).where(
            messages.c.queue_id.in_(ids)
        )
    ).one()
    subs = conn.execute(
        sa.select(sa.func.count())
        .select_from(push_subscriptions)
        .where(push_subscriptions.c.queue_id.in_(ids), push_subscriptions.c.expires_at > now)
    ).scalar()
    return TenantUsage(int(count or 0), int(stored[0]), int(stored[1]), int(subs or 0))


# -- writes ----------------------------------------------------------------------------------


@each
def create_tenant(conn: sa.Connection, name: str, now: float) -> tuple[Tenant, bool]:
    row = conn.execute(sa.select(tenants).where(tenants.c.name == name)).first()
    if row is not None:
        return Tenant(row.name, row.created_at), False
    conn.execute(tenants.insert().values(name=name, created_at=now))
    return Tenant(name, now), True


def _bump(conn: sa.Connection) -> None:
    bumped = conn.execute(
        sa.update(tenant_changes)
        .where(tenant_changes.c.id == 1)
        .values(version=tenant_changes.c.version + 1)
    ).rowcount
    if not bumped:  # the migration's row was deleted (tests empty every table)
        conn.execute(tenant_changes.insert().values(id=1, version=1))


@each
def add_key(
    conn: sa.Connection,
    tenant: str,
    key_id: str,
    secret_hash: str,
    now: float,
    queues: str | None = None,
    ops: str | None = None,
) -> None:
    conn.execute(
        api_keys.insert().values(
            id=key_id,
            tenant=tenant,
            secret_hash=secret_hash,
            created_at=now,
            revoked_at=None,
            queues=queues,
            ops=ops,
        )
    )
    _bump(conn)  # running processes add it to the key ids they know


@each
def set_quota(conn: sa.Connection, tenant: str, quota: str, value: float | None) -> None:
    where = (tenant_quotas.c.tenant == tenant, tenant_quotas.c.quota == quota)
    conn.execute(sa.delete(tenant_quotas).where(*where))
    if value is not None:
        conn.execute(tenant_quotas.insert().values(tenant=tenant, quota=quota, value=value))
    _bump(conn)


@each
def revoke_key(conn: sa.Connection, key_id: str, now: float) -> bool:
    count = conn.execute(
        sa.update(api_keys)
        .where(api_keys.c.id == key_id, api_keys.c.revoked_at.is_(None))
        .values(revoked_at=now)
    ).rowcount
    if count:
        _bump(conn)
    return bool(count)
