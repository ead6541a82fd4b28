"""Schema migrations with Alembic, driven from code (``qgate db upgrade``)."""

from __future__ import annotations

from pathlib import Path

import sqlalchemy as sa
from alembic import command
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory

MIGRATIONS = Path(__file__).with_name("migrations")

#: The PostgreSQL advisory lock key a migration holds: any fixed 64-bit number that
#: nothing else locks ("qgateMIG" in ASCII).
MIGRATION_LOCK = int.from_bytes(b"qgateMIG", "big")


def hold_migration_lock(conn: sa.Connection) -> None:
    """Make migrations of this database take turns: the lock is held until ``conn``'s
    transaction ends, so processes that start together migrate one after the other, and
    the later ones find the schema at head and change nothing.

    PostgreSQL: a transaction-level advisory lock (``pg_advisory_xact_lock``), released by
    the commit or rollback that ends the migration, on any error path too. SQLite: qgate's
    writer engine begins with ``BEGIN IMMEDIATE``, the database's one write lock, held to
    the commit (others wait up to the busy timeout), so there is nothing more to take."""
    if conn.dialect.name == "postgresql":
        conn.execute(sa.text("SELECT pg_advisory_xact_lock(:key)"), {"key": MIGRATION_LOCK})


def alembic_config(url: str) -> Config:
    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS))
    config.set_main_option("sqlalchemy.url", url.replace("%", "%%"))
    return config


def upgrade(url: str, revision: str = "head") -> None:
    """Bring the database at ``url`` up to ``revision`` (blocking: call off the reactor)."""
    from qgate.storage.sql.store import make_engine

    engine = make_engine(url, writer=True)
    try:
        with engine.begin() as conn:
            config = alembic_config(url)
            config.attributes["connection"] = conn
            command.upgrade(config, revision)
    finally:
        engine.dispose()


def current_revision(url: str) -> str | None:
    from qgate.storage.sql.store import normalize_url

    engine = sa.create_engine(normalize_url(url))
    try:
        with engine.connect() as conn:
            return MigrationContext.configure(conn).get_current_revision()
    finally:
        engine.dispose()


def head_revision() -> str | None:
    return ScriptDirectory.from_config(alembic_config("sqlite://")).get_current_head()
