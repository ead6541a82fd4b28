"""``qgate serve`` that also writes its SQL writers' counters, for bench.http
``--writer-stats``: the same entry point (``qgate.gateway.cli.main``), plus a thread that
every ``INTERVAL`` seconds appends the summed ``GroupCommitWriter.stats()`` of the process
as a JSON line to ``$QGATE_BENCH_WRITER_STATS``. The writers are found once among the live
objects (bench-only: the gateway has no endpoint for these counters)."""

from __future__ import annotations

import gc
import json
import os
import sys
import threading
import time

from qgate.gateway.cli import main
from qgate.storage.sql.writer import GroupCommitWriter

INTERVAL = 0.25


def _report(path: str) -> None:
    writers: list[GroupCommitWriter] = []
    while True:
        time.sleep(INTERVAL)
        if not writers:
            writers = [o for o in gc.get_objects() if isinstance(o, GroupCommitWriter)]
        totals = [0.0, 0.0, 0.0, 0.0]
        for w in writers:
            s = w.stats()
            for i, v in enumerate((s.batches, s.operations, s.statements, s.busy_seconds)):
                totals[i] += v
        with open(path, "a") as out:
            out.write(json.dumps([time.time(), *totals]) + "\n")


if __name__ == "__main__":
    threading.Thread(
        target=_report, args=(os.environ["QGATE_BENCH_WRITER_STATS"],), daemon=True
    ).start()
    sys.exit(main(sys.argv[1:]))
