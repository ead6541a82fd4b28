"""Queue ids never reused, and ``deleted_queues``: a deleted queue's messages are swept in
bounded slices after its row is gone.

On SQLite an INTEGER PRIMARY KEY without AUTOINCREMENT hands out the highest id again once
that row is deleted; the table is rebuilt with AUTOINCREMENT (SQLite then keeps the highest
id ever used in ``sqlite_sequence``, set from the copied rows). PostgreSQL's sequence never
hands out an id twice: nothing to change there.

Revision ID: 0006
Revises: 0005
Create Date: 2026-12-01
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0006"
down_revision = "0005"
branch_labels = None
depends_on = None


def upgrade() -> None:
    if op.get_bind().dialect.name == "sqlite":
        with op.batch_alter_table(
            "queues", recreate="always", table_kwargs={"sqlite_autoincrement": True}
        ):
            pass
    op.create_table(
        "deleted_queues",
        sa.Column("queue_id", sa.Integer, primary_key=True, autoincrement=False),
    )


def downgrade() -> None:
    op.drop_table("deleted_queues")
    if op.get_bind().dialect.name == "sqlite":
        with op.batch_alter_table(
            "queues", recreate="always", table_kwargs={"sqlite_autoincrement": False}
        ):
            pass
