"""SQL writer CPU per message: the group functions the STOMP scenarios drive, run on one
connection in a loop, timed by the thread's own CPU clock (``time.thread_time``), beside raw
sqlite3 doing the same rows in the same run.

    python -m bench.writer [--rounds 300]

SQLite with ``synchronous = OFF``: no fsync, so what is left is Python and SQLite's own
work, and the figures hardly move with the machine's load or its disk (``bench.core`` and
``bench.stomp`` measure with the fsyncs). Each round is one transaction, as a group commit
of the STOMP load makes it, on a backlog of 5,000 messages of 1 KiB:

- publish + pop: 100 publishes of one message, and one pop of 100 (``ack:auto``);
- publish + claim + ack: the same publishes, a claim of 100, and an ack per message
  (``ack:client-individual``);
- observe: a read of 100 messages after a marker (a ``/topic/`` subscriber), per message read;
- raw: sqlite3 alone, the same 100-row INSERT and a DELETE ... RETURNING of the 100 oldest.
"""

from __future__ import annotations

import argparse
import sqlite3
import tempfile
import time
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

from qgate.core.model import NewMessage, ObserveQuery, QueueOptions
from qgate.storage.sql import claims, messages, queues
from qgate.storage.sql.engine import make_engine
from qgate.storage.sql.migrate import upgrade
from qgate.storage.sql.statements import Statements

BODY = b"x" * 1024
PER_ROUND = 100
BACKLOG = 50  # rounds of publishes only, before measuring
T = "bench"


def cpu_per_message(rounds: int, messages_per_round: int, one: Callable[[], None]) -> float:
    """Microseconds of this thread's CPU per message over ``rounds`` calls of ``one``."""
    for _ in range(10):
        one()
    start = time.thread_time()
    for _ in range(rounds):
        one()
    return (time.thread_time() - start) / (rounds * messages_per_round) * 1e6


def qgate_rounds(directory: Path, rounds: int) -> dict[str, float]:
    url = f"sqlite:///{directory}/qgate.db"
    upgrade(url)
    engine = make_engine(url, writer=True, synchronous="OFF")
    sql = Statements("sqlite", uuid.uuid4().hex[:12])
    conn = engine.connect()
    now = time.time()
    out: dict[str, float] = {}
    try:
        for kind in ("pop", "claim"):
            name = f"q-{kind}"
            with conn.begin():
                queues.create_queue(conn, [(sql, T, name, QueueOptions(), {}, now)])
            publishes = [(sql, T, name, [NewMessage(BODY)], now, None, None)] * PER_ROUND

            def publish_only(publishes: list[Any] = publishes) -> None:
                with conn.begin():
                    messages.publish_group(conn, publishes)

            def publish_pop(publishes: list[Any] = publishes, name: str = name) -> None:
                with conn.begin():
                    messages.publish_group(conn, publishes)
                    messages.pop_messages(conn, [(sql, T, name, PER_ROUND, now, None)])

            def publish_claim_ack(publishes: list[Any] = publishes, name: str = name) -> None:
                claim_id = uuid.uuid4().hex
                with conn.begin():
                    messages.publish_group(conn, publishes)
                    [done] = claims.claim_group(
                        conn, [(sql, T, name, claim_id, PER_ROUND, 60.0, 60.0, now, None)]
                    )
                    claims.ack_group(conn, [(T, name, claim_id, [m.marker]) for m in done.messages])

            for _ in range(BACKLOG):
                publish_only()
            one = publish_pop if kind == "pop" else publish_claim_ack
            out[kind] = cpu_per_message(rounds, PER_ROUND, one)

        after = [0]

        def observe() -> None:
            query = ObserveQuery(
                PER_ROUND, after=after[0], include_claimed=True, include_delayed=True
            )
            found = messages.observe(conn, sql, T, "q-pop", query, now)
            after[0] = found[-1].marker if len(found) == PER_ROUND else 0

        with conn.begin():
            first = messages.observe(conn, sql, T, "q-pop", ObserveQuery(1), now)
        after[0] = first[0].marker - 1
        with conn.begin():
            out["observe"] = cpu_per_message(min(rounds, 40), PER_ROUND, observe)
    finally:
        conn.close()
        engine.dispose()
    return out


def raw_rounds(directory: Path, rounds: int) -> float:
    """sqlite3 alone: the same rows inserted and popped, 100 per transaction."""
    db = sqlite3.connect(directory / "raw.db", isolation_level=None)
    db.execute("PRAGMA journal_mode=WAL")
    db.execute("PRAGMA synchronous=OFF")
    db.execute(
        "CREATE TABLE m (q INTEGER, marker INTEGER, priority INTEGER, body BLOB, "
        "visible_at REAL, expires_at REAL, PRIMARY KEY (q, marker))"
    )
    db.execute("CREATE INDEX ix ON m (q, priority DESC, marker)")
    now = time.time()
    marker = [0]

    def one(pop: bool = True) -> None:
        db.execute("BEGIN IMMEDIATE")
        first = marker[0]
        marker[0] += PER_ROUND
        rows = [(1, first + i, 0, BODY, now, now + 3600) for i in range(PER_ROUND)]
        db.executemany("INSERT INTO m VALUES (?, ?, ?, ?, ?, ?)", rows)
        if pop:
            db.execute(
                "DELETE FROM m WHERE q = 1 AND marker IN (SELECT marker FROM m WHERE q = 1 "
                "AND visible_at <= ? AND expires_at > ? ORDER BY priority DESC, marker "
                "LIMIT ?) RETURNING marker, body",
                (now, now, PER_ROUND),
            ).fetchall()
        db.execute("COMMIT")

    for _ in range(BACKLOG):
        one(pop=False)
    try:
        return cpu_per_message(rounds, PER_ROUND, one)
    finally:
        db.close()


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=300)
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="qgate-bench-writer-") as directory:
        found = qgate_rounds(Path(directory), args.rounds)
        raw = raw_rounds(Path(directory), args.rounds)
    print("# SQL writer CPU per message (SQLite, synchronous OFF, 1 KiB bodies, backlog 5,000)\n")
    print("| scenario | µs of CPU per message | x raw sqlite3 publish + pop |")
    print("|---|---|---|")
    rows = [
        ("publish 1 x100 + pop 100 (ack auto)", found["pop"]),
        ("publish 1 x100 + claim 100 + 100 acks (client-individual)", found["claim"]),
        ("observe 100 after a marker (topic), per message read", found["observe"]),
        ("raw sqlite3: INSERT 100 + DELETE ... RETURNING 100", raw),
    ]
    for title, value in rows:
        print(f"| {title} | {value:.1f} | {value / raw:.1f}x |")


if __name__ == "__main__":
    main()
