"""Opening the storage backends the suites run on: memory, SQLite in a file, and the
session's PostgreSQL database (see the ``pg_database`` fixture)."""

from __future__ import annotations

import atexit
import contextlib
import functools
import os
import shutil
import sqlite3
import tempfile
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import sqlalchemy as sa

from qgate.storage.memory import MemoryStorage
from qgate.storage.sql.migrate import upgrade
from qgate.storage.sql.store import SQLStorage, normalize_url

PG_URL = os.environ.get("QGATE_TEST_PG_URL", "postgresql://postgres@127.0.0.1:5432/test")

TABLES = (
    "queues",
    "messages",
    "claims",
    "subscriptions",
    "push_subscriptions",
    "push_deliveries",
    "tenants",
    "api_keys",
    "schemas",
    "tenant_quotas",
    "tenant_changes",
    "tenant_schemas",
    "deleted_queues",
)


def sqlite_url(directory: Path | str, name: str = "qgate.db") -> str:
    """A migrated SQLite database file in ``directory`` (kept if it is there already).

    A new one is a copy of a database migrated once per test run: faster than migrating."""
    path = Path(directory) / name
    if not path.exists():
        shutil.copyfile(_migrated_template(), path)
    return f"sqlite:///{path}"


@functools.cache
def _migrated_template() -> Path:
    directory = tempfile.mkdtemp(prefix="qgate-test-")
    atexit.register(shutil.rmtree, directory, True)
    path = Path(directory) / "template.db"
    upgrade(f"sqlite:///{path}")
    conn = sqlite3.connect(path)
    conn.execute("PRAGMA journal_mode=DELETE")  # one self-contained file: no WAL beside it
    conn.close()
    return path


@contextlib.contextmanager
def temporary_database(options: str = "", migrate: bool = True) -> Iterator[str]:
    """A new PostgreSQL database on the server at PG_URL (created with the ``CREATE
    DATABASE`` ``options``), migrated unless ``migrate`` is false, dropped afterwards; its
    URL."""
    admin = sa.create_engine(normalize_url(PG_URL), isolation_level="AUTOCOMMIT")
    name = f"qgate_test_{uuid.uuid4().hex[:10]}"
    with admin.connect() as conn:
        conn.exec_driver_sql(f'CREATE DATABASE "{name}" {options}')
    try:
        url = normalize_url(PG_URL).set(database=name).render_as_string(hide_password=False)
        if migrate:
            upgrade(url)
        yield url
    finally:
        with admin.connect() as conn:
            conn.exec_driver_sql(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        admin.dispose()


def clean_pg(url: str) -> None:
    """Empty every table of the PostgreSQL database at ``url`` (between tests)."""
    engine = sa.create_engine(normalize_url(url))
    with engine.begin() as conn:
        # DELETE, not TRUNCATE: on tables this small it is four times faster.
        for table in TABLES:
            conn.exec_driver_sql(f"DELETE FROM {table}")
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
