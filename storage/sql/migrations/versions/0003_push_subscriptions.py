"""Push subscriptions (Zaqar's subscriptions API), beside the durable cursors of
``subscriptions``.

Revision ID: 0003
Revises: 0002
Create Date: 2026-12-10
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "push_subscriptions",
        sa.Column("id", sa.String(32), primary_key=True),
        sa.Column("queue_id", sa.Integer, nullable=False),
        sa.Column("subscriber", sa.Text, nullable=False),
        sa.Column("ttl", sa.BigInteger, nullable=False),
        sa.Column("options", sa.Text, nullable=False),
        sa.Column("created_at", sa.Double, nullable=False),
        sa.Column("expires_at", sa.Double, nullable=False),
        sa.Column("confirmed", sa.Boolean, nullable=False, server_default=sa.false()),
        sa.Column("marker", sa.BigInteger, nullable=False, server_default="0"),
    )
    op.create_index("ix_push_subscriptions_queue", "push_subscriptions", ["queue_id", "id"])
    op.create_index("ix_push_subscriptions_expires", "push_subscriptions", ["expires_at"])


def downgrade() -> None:
    op.drop_table("push_subscriptions")
