"""Alembic environment: runs on the connection qgate hands over (or the configured URL)."""

from __future__ import annotations

import sqlalchemy as sa
from alembic import context

from qgate.storage.sql.migrate import hold_migration_lock
from qgate.storage.sql.schema import metadata
from qgate.storage.sql.store import make_engine

config = context.config


def migrate(conn: sa.Connection) -> None:
    """Run the migrations on ``conn``, one process at a time: the lock comes before
    Alembic reads the database's revision, so a process that waited reads the revision
    the one before it committed."""
    context.configure(connection=conn, target_metadata=metadata)
    with context.begin_transaction():
        hold_migration_lock(conn)
        context.run_migrations()


def run() -> None:
    connection = config.attributes.get("connection")
    if connection is not None:
        migrate(connection)
        return
    # The writer's engine (SQLite: BEGIN IMMEDIATE), as ``migrate.upgrade`` uses.
    engine = make_engine(config.get_main_option("sqlalchemy.url") or "", writer=True)
    try:
        with engine.begin() as conn:
            migrate(conn)
    finally:
        engine.dispose()


run()
