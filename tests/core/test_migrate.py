"""Schema migrations when several qgate processes start at once on a new database: they
take turns (PostgreSQL: an advisory lock; SQLite: the database's write lock), so every
one of them starts and the schema ends at head."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import pytest
import sqlalchemy as sa

from qgate.storage.sql.migrate import current_revision, head_revision
from qgate.storage.sql.store import normalize_url
from tests.support.stores import temporary_database

ROOT = Path(__file__).resolve().parents[2]
PROCESSES = 4


def _start(url: str, n: int = PROCESSES) -> list[subprocess.Popen[str]]:
    """``n`` processes that each migrate ``url`` as qgate does at start-up, released
    together (each waits for a line on stdin once Python and qgate are imported)."""
    code = (
        "import sys\n"
        "from qgate.storage.sql.migrate import upgrade\n"
        "import qgate.storage.sql.store\n"  # what upgrade imports: loaded before the start
        "sys.stdin.readline()\n"
        f"upgrade({url!r})\n"
    )
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    procs = [
        subprocess.Popen(
            [sys.executable, "-c", code],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            env=env,
        )
        for _ in range(n)
    ]
    for proc in procs:
        assert proc.stdin is not None
        proc.stdin.write("go\n")
        proc.stdin.flush()
    return procs


def _failures(procs: list[subprocess.Popen[str]]) -> list[tuple[int, str]]:
    """Waits for every process; the exit code and error of those that failed."""
    failed = []
    for proc in procs:
        _, stderr = proc.communicate(timeout=60)
        if proc.returncode != 0:
            errors = [line for line in stderr.splitlines() if "Error" in line] or [stderr]
            failed.append((proc.returncode, errors[-1][-300:]))
    return failed


def _waiting_on_locks(conn: sa.Connection, database: str, n: int) -> None:
    """Until ``n`` other sessions of ``database`` wait on a lock."""
    deadline = time.monotonic() + 30
    query = sa.text(
        "SELECT count(*) FROM pg_stat_activity WHERE datname = :db"
        " AND wait_event_type = 'Lock' AND pid <> pg_backend_pid()"
    )
    while conn.execute(query, {"db": database}).scalar_one() < n:
        assert time.monotonic() < deadline, f"fewer than {n} migrations waiting on a lock"
        time.sleep(0.02)


@pytest.mark.postgres
def test_processes_migrating_a_new_postgresql_database_at_once_all_succeed():
    """Four processes start on a new database while a fifth migration is under way (here
    an open transaction that is creating Alembic's version table): each one waits its
    turn, none fails on the catalog's unique index ("pg_type_typname_nsp_index")."""
    with temporary_database(migrate=False) as url:
        assert current_revision(url) is None
        parsed = normalize_url(url)
        engine = sa.create_engine(parsed)
        monitor = sa.create_engine(parsed, isolation_level="AUTOCOMMIT")
        try:
            with engine.connect() as other, monitor.connect() as watch:
                under_way = other.begin()
                other.exec_driver_sql("CREATE TABLE alembic_version (version_num VARCHAR(32))")
                procs = _start(url)
                _waiting_on_locks(watch, str(parsed.database), PROCESSES)
                under_way.rollback()
        finally:
            engine.dispose()
            monitor.dispose()
        assert _failures(procs) == []
        assert current_revision(url) == head_revision()


def test_processes_migrating_a_new_sqlite_database_at_once_all_succeed(tmp_path):
    url = f"sqlite:///{tmp_path}/new.db"
    assert _failures(_start(url)) == []
    assert current_revision(url) == head_revision()
