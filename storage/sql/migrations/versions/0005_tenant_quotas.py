"""Per-tenant quota overrides, key scopes, the tenant change counter, and which tenant
registered which writer schema.

Revision ID: 0005
Revises: 0004
Create Date: 2026-12-01
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0005"
down_revision = "0004"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "tenant_quotas",
        sa.Column("tenant", sa.String(128), nullable=False),
        sa.Column("quota", sa.String(32), nullable=False),
        sa.Column("value", sa.Double, nullable=False),
        sa.PrimaryKeyConstraint("tenant", "quota", name="pk_tenant_quotas"),
    )
    changes = op.create_table(
        "tenant_changes",
        sa.Column("id", sa.Integer, primary_key=True, autoincrement=False),
        sa.Column("version", sa.BigInteger, nullable=False),
    )
    op.bulk_insert(changes, [{"id": 1, "version": 0}])
    with op.batch_alter_table("api_keys") as batch:
        batch.add_column(sa.Column("queues", sa.Text, nullable=True))
        batch.add_column(sa.Column("ops", sa.Text, nullable=True))
    op.create_table(
        "tenant_schemas",
        sa.Column("tenant", sa.String(128), nullable=False),
        sa.Column("fingerprint", sa.BigInteger, nullable=False),
        sa.PrimaryKeyConstraint("tenant", "fingerprint", name="pk_tenant_schemas"),
    )
    # Schemas registered so far were every tenant's: they stay so ("" is every tenant).
    op.execute(
        "INSERT INTO tenant_schemas (tenant, fingerprint) SELECT '', fingerprint FROM schemas"
    )


def downgrade() -> None:
    op.drop_table("tenant_schemas")
    with op.batch_alter_table("api_keys") as batch:
        batch.drop_column("ops")
        batch.drop_column("queues")
    op.drop_table("tenant_changes")
    op.drop_table("tenant_quotas")
