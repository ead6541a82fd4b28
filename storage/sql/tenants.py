"""Tenants and their API keys in SQL (reads on a read thread; writes on the writer's)."""

from __future__ import annotations

import sqlalchemy as sa

from qgate.core.model import Tenant
from qgate.storage.sql.schema import api_keys, tenants
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


# -- writes ----------------------------------------------------------------------------------


@each
def create_tenant(conn: sa.Connection, name: str, now: float) -> tuple[Tenant, bool]:
    row = conn.execute(sa.select(tenants).where(tenants.c.name == name)).first()
    if row is not None:
        return Tenant(row.name, row.created_at), False
    conn.execute(tenants.insert().values(name=name, created_at=now))
    return Tenant(name, now), True


@each
def add_key(conn: sa.Connection, tenant: str, key_id: str, secret_hash: str, now: float) -> None:
    conn.execute(
        api_keys.insert().values(
            id=key_id, tenant=tenant, secret_hash=secret_hash, created_at=now, revoked_at=None
        )
    )


@each
def revoke_key(conn: sa.Connection, key_id: str, now: float) -> bool:
    count = conn.execute(
        sa.update(api_keys)
        .where(api_keys.c.id == key_id, api_keys.c.revoked_at.is_(None))
        .values(revoked_at=now)
    ).rowcount
    return bool(count)
