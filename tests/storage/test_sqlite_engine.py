"""SQLite engine set-up: what a first open of a database file does."""

from __future__ import annotations

import sqlite3
import threading
from pathlib import Path

from qgate.storage.sql.engine import make_engine


def test_a_new_connection_waits_for_a_lock_instead_of_failing_the_switch_to_wal(
    tmp_path: Path,
) -> None:
    """Two connections opening a rollback-journal file together (the writer and a reader
    of a store just opened) both end in WAL: the one that finds the file locked waits."""
    path = tmp_path / "q.db"
    holder = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
    holder.execute("CREATE TABLE t (x)")
    # The writer's BEGIN IMMEDIATE: with it held SQLite refuses a journal-mode change at
    # once, without calling the busy handler.
    holder.execute("BEGIN IMMEDIATE")
    release = threading.Timer(0.2, lambda: holder.execute("COMMIT"))
    release.start()
    engine = make_engine(f"sqlite:///{path}", busy_timeout=5.0)
    try:
        with engine.connect() as conn:
            mode = conn.exec_driver_sql("PRAGMA journal_mode").scalar()
        assert mode == "wal"
    finally:
        release.join()
        holder.close()
        engine.dispose()
