"""Push delivery: a lease and counters on each push subscription, and its pending
deliveries.

Revision ID: 0004
Revises: 0003
Create Date: 2026-12-01
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None

_COUNTERS = ("delivered", "failed", "given_up")


def upgrade() -> None:
    op.add_column("push_subscriptions", sa.Column("lease_owner", sa.String(64), nullable=True))
    op.add_column(
        "push_subscriptions",
        sa.Column("lease_expires", sa.Double, nullable=False, server_default="0"),
    )
    for name in _COUNTERS:
        op.add_column(
            "push_subscriptions",
            sa.Column(name, sa.BigInteger, nullable=False, server_default="0"),
        )
    op.add_column("push_subscriptions", sa.Column("last_error", sa.Text, nullable=True))
    op.create_table(
        "push_deliveries",
        sa.Column("subscription_id", sa.String(32), nullable=False),
        sa.Column("marker", sa.BigInteger, nullable=False),
        sa.Column("attempts", sa.Integer, nullable=False, server_default="0"),
        sa.Column("next_at", sa.Double, nullable=False),
        sa.Column("taken_at", sa.Double, nullable=False),
        sa.PrimaryKeyConstraint("subscription_id", "marker", name="pk_push_deliveries"),
    )


def downgrade() -> None:
    op.drop_table("push_deliveries")
    with op.batch_alter_table("push_subscriptions") as batch:
        for name in ("last_error", *reversed(_COUNTERS), "lease_expires", "lease_owner"):
            batch.drop_column(name)
