"""Initial schema: queues, messages, claims, subscriptions, tenants, api keys.

Revision ID: 0001
Revises:
Create Date: 2026-11-26
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0001"
down_revision = None
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "queues",
        sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
        sa.Column("tenant", sa.String(128), nullable=False),
        sa.Column("name", sa.String(64), nullable=False),
        sa.Column("options", sa.Text, nullable=False),
        sa.Column("metadata", sa.Text, nullable=False),
        sa.Column("created_at", sa.Double, nullable=False),
        sa.Column("last_marker", sa.BigInteger, nullable=False, server_default="0"),
        sa.UniqueConstraint("tenant", "name", name="uq_queues_tenant_name"),
    )
    op.create_table(
        "messages",
        sa.Column("queue_id", sa.Integer, nullable=False),
        sa.Column("marker", sa.BigInteger, nullable=False),
        sa.Column("priority", sa.SmallInteger, nullable=False),
        sa.Column("body", sa.LargeBinary, nullable=False),
        sa.Column("size", sa.Integer, nullable=False),
        sa.Column("content_type", sa.String(255), nullable=False),
        sa.Column("headers", sa.Text, nullable=True),
        sa.Column("producer", sa.String(255), nullable=True),
        sa.Column("created_at", sa.Double, nullable=False),
        sa.Column("expires_at", sa.Double, nullable=False),
        sa.Column("available_at", sa.Double, nullable=False),
        sa.Column("visible_at", sa.Double, nullable=False),
        sa.Column("claim_id", sa.String(32), nullable=True),
        sa.Column("claim_expires", sa.Double, nullable=True),
        sa.Column("claim_count", sa.Integer, nullable=False, server_default="0"),
        sa.PrimaryKeyConstraint("queue_id", "marker", name="pk_messages"),
    )
    op.create_index(
        "ix_messages_claim", "messages", ["queue_id", sa.text("priority DESC"), "marker"]
    )
    op.create_index("ix_messages_expires", "messages", ["expires_at"])
    if op.get_bind().dialect.name == "postgresql":
        # A queue table churns: vacuum and analyze it early. Fresh statistics keep the
        # planner on the claim-order index (without them it sorts the whole backlog), and
        # vacuum keeps dead tuples from piling up at the head the claims scan.
        op.execute(
            "ALTER TABLE messages SET (autovacuum_vacuum_scale_factor = 0.01, "
            "autovacuum_analyze_scale_factor = 0.01, autovacuum_analyze_threshold = 1000)"
        )
    op.create_table(
        "claims",
        sa.Column("id", sa.String(32), primary_key=True),
        sa.Column("queue_id", sa.Integer, nullable=False),
        sa.Column("ttl", sa.Double, nullable=False),
        sa.Column("grace", sa.Double, nullable=False),
        sa.Column("created_at", sa.Double, nullable=False),
        sa.Column("expires_at", sa.Double, nullable=False),
        sa.Column("markers", sa.Text, nullable=False),
    )
    op.create_index("ix_claims_expires", "claims", ["expires_at"])
    op.create_table(
        "subscriptions",
        sa.Column("queue_id", sa.Integer, nullable=False),
        sa.Column("name", sa.String(255), nullable=False),
        sa.Column("marker", sa.BigInteger, nullable=False),
        sa.PrimaryKeyConstraint("queue_id", "name", name="pk_subscriptions"),
    )
    op.create_table(
        "tenants",
        sa.Column("name", sa.String(128), primary_key=True),
        sa.Column("created_at", sa.Double, nullable=False),
    )
    op.create_table(
        "api_keys",
        sa.Column("id", sa.String(32), primary_key=True),
        sa.Column("tenant", sa.String(128), nullable=False),
        sa.Column("secret_hash", sa.String(128), nullable=False),
        sa.Column("created_at", sa.Double, nullable=False),
        sa.Column("revoked_at", sa.Double, nullable=True),
    )
    op.create_index("ix_api_keys_tenant", "api_keys", ["tenant"])


def downgrade() -> None:
    for table in ("api_keys", "tenants", "subscriptions", "claims", "messages", "queues"):
        op.drop_table(table)
