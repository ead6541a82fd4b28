"""Engines: which driver a URL means, SQLite's pragmas and transactions, pool settings."""

from __future__ import annotations

import os
import sqlite3
import time
from typing import Any

import sqlalchemy as sa

#: Seconds a PostgreSQL connect may take before it fails (libpq's ``connect_timeout``;
#: a ``?connect_timeout=`` in the URL wins). Without it a host that drops packets holds a
#: connect, and every caller behind it, for minutes.
PG_CONNECT_TIMEOUT = 5
#: Seconds a SQLite write waits for another process's lock before it fails (503).
DEFAULT_BUSY_TIMEOUT = 5.0


def normalize_url(url: str | sa.URL) -> sa.URL:
    """``postgresql://`` means psycopg2 here (SQLAlchemy 2.1 would pick psycopg 3)."""
    parsed = sa.make_url(url)
    if parsed.drivername in ("postgresql", "postgres"):
        parsed = parsed.set(drivername="postgresql+psycopg2")
    return parsed


def pg_connect_args(url: sa.URL) -> dict[str, Any]:
    """The driver arguments of a PostgreSQL connection to ``url`` (its connect timeout)."""
    return {} if "connect_timeout" in url.query else {"connect_timeout": PG_CONNECT_TIMEOUT}


def make_engine(
    url: str,
    *,
    writer: bool = False,
    synchronous: str = "FULL",
    pool_size: int = 5,
    busy_timeout: float = DEFAULT_BUSY_TIMEOUT,
) -> sa.Engine:
    """An engine for ``url``.

    SQLite files get WAL, a busy timeout and transactions we begin ourselves (the pysqlite
    driver's implicit ones are off): ``BEGIN IMMEDIATE`` for the writer, so it never has to
    upgrade a read lock, and a plain deferred ``BEGIN`` (a consistent snapshot) for readers.
    PostgreSQL readers run in AUTOCOMMIT: one round trip per statement. PostgreSQL pools
    test a connection before lending it (``pool_pre_ping``, measured ~20 us a read on
    localhost): after a server restart every pooled connection is dead, and the first read
    on each would fail otherwise. (A SQLite connection is a file: it does not go stale.)
    """
    parsed = normalize_url(url)
    if parsed.get_backend_name() == "sqlite":
        if parsed.database and parsed.database != ":memory:":
            directory = os.path.dirname(os.path.abspath(parsed.database))
            os.makedirs(directory, exist_ok=True)
        engine = sa.create_engine(
            parsed,
            connect_args={"timeout": busy_timeout, "check_same_thread": False},
            pool_size=pool_size,
            max_overflow=pool_size,
        )
        begin = "BEGIN IMMEDIATE" if writer else "BEGIN"

        @sa.event.listens_for(engine, "connect")
        def on_connect(dbapi_conn: Any, _record: Any) -> None:
            dbapi_conn.isolation_level = None  # we say BEGIN ourselves
            cursor = dbapi_conn.cursor()
            cursor.execute(f"PRAGMA busy_timeout={int(busy_timeout * 1000)}")
            _enter_wal(cursor, busy_timeout)
            cursor.execute(f"PRAGMA synchronous={synchronous}")
            cursor.close()

        @sa.event.listens_for(engine, "begin")
        def on_begin(conn: sa.Connection) -> None:
            conn.exec_driver_sql(begin)

        return engine
    connect_args = pg_connect_args(parsed)
    if writer:
        return sa.create_engine(
            parsed, pool_size=1, max_overflow=1, pool_pre_ping=True, connect_args=connect_args
        )
    return sa.create_engine(
        parsed,
        pool_size=pool_size,
        max_overflow=pool_size,
        isolation_level="AUTOCOMMIT",
        pool_pre_ping=True,
        connect_args=connect_args,
    )


def _enter_wal(cursor: Any, busy_timeout: float) -> None:
    """Switch a SQLite file to WAL (a no-op once it is in WAL: the mode is persistent).

    Leaving rollback-journal mode needs the file to itself, and SQLite answers
    "database is locked" at once there instead of calling the busy handler; so when the
    writer and a reader open a new file together, one of them retries here (on its pool
    thread, never the reactor's) for up to the busy timeout."""
    deadline = time.monotonic() + busy_timeout
    while True:
        try:
            cursor.execute("PRAGMA journal_mode=WAL")
            return
        except sqlite3.OperationalError as e:
            if "locked" not in str(e) or time.monotonic() >= deadline:
                raise
            time.sleep(0.005)
