"""Opening the storage backends the suites run on: memory, SQLite in a file, and the
session's PostgreSQL database (see the ``pg_database`` fixture)."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import sqlalchemy as sa

from qgate.storage.memory import MemoryStorage
from qgate.storage.sql.migrate import upgrade
from qgate.storage.sql.store import SQLStorage, normalize_url

PG_URL = os.environ.get("QGATE_TEST_PG_URL", "postgresql://postgres@127.0.0.1:5432/test")

#: The backends every contract runs on, by the names the fixtures and test ids use.
BACKENDS = ("memory", "sqlite", "postgres")


def sqlite_url(directory: Path | str, name: str = "qgate.db") -> str:
    """A migrated SQLite database file in ``directory``."""
    url = f"sqlite:///{directory}/{name}"
    upgrade(url)
    return url


def clean_pg(url: str) -> None:
    """Empty every table of the PostgreSQL database at ``url`` (between tests)."""
    engine = sa.create_engine(normalize_url(url))
    with engine.begin() as conn:
        conn.exec_driver_sql(
            "TRUNCATE queues, messages, claims, subscriptions, tenants, api_keys, schemas "
            "RESTART IDENTITY"
        )
    engine.dispose()


def open_store(backend: str, reactor: Any, directory: Path | str, pg_url: str | None) -> Any:
    """A fresh, empty store of ``backend``; SQL stores must be closed by the caller.

    ``pg_url`` is the session's PostgreSQL database (needed for ``postgres`` only)."""
    if backend == "memory":
        return MemoryStorage()
    if backend == "sqlite":
        return SQLStorage(reactor, sqlite_url(directory), synchronous="NORMAL")
    if backend == "postgres":
        assert pg_url is not None, "the postgres backend needs the pg_database fixture"
        clean_pg(pg_url)
        return SQLStorage(reactor, pg_url)
    raise ValueError(f"unknown backend {backend!r}")
