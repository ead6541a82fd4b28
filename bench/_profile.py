"""A summary of a py-spy ``--format raw`` profile: samples per thread, the heaviest
functions by self time and including callees (qgate's own code)."""

from __future__ import annotations

import subprocess
import sys
from collections import Counter
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def spy_on(
    pid: int,
    seconds: float,
    output: Path,
    *,
    subprocesses: bool = True,
    threads: bool = True,
    rate: int = 250,
) -> subprocess.Popen[bytes]:
    """py-spy (the bench extra) recording ``pid`` (and its children with
    ``subprocesses``) for ``seconds`` into ``output``, raw collapsed stacks, without
    stopping it (``--nonblocking``). Wait for the returned process before reading."""
    command = [str(Path(sys.executable).parent / "py-spy"), "record", "--pid", str(pid)]
    command += ["--subprocesses"] if subprocesses else []
    command += ["--threads"] if threads else []
    command += ["--format", "raw", "--rate", str(rate), "--duration"]
    command += [str(max(1, round(seconds))), "--output", str(output), "--nonblocking"]
    return subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)


def summarize_profile(path: Path, top: int = 12) -> None:
    """Where the server spent its samples: per thread, then the functions with the most
    samples by self time and including callees (qgate's own code)."""
    if not path.exists():
        print(f"  (no profile at {path})")
        return
    threads: Counter[str] = Counter()
    own: Counter[str] = Counter()
    total: Counter[str] = Counter()
    samples = 0
    for line in path.read_text().splitlines():
        stack, _, n = line.rpartition(" ")
        if not stack or not n.isdigit():
            continue
        count = int(n)
        samples += count
        frames = stack.split(";")
        if frames[0].startswith("thread ("):
            threads[frames[0].partition(": ")[2] or frames[0]] += count
            frames = frames[1:]
        names = [_short(f) for f in frames] or ["?"]
        own[names[-1]] += count
        for f in set(names):
            total[f] += count
    if not samples:
        return
    print(f"\n  {path.name}: {samples} samples")
    for thread, count in threads.most_common():
        print(f"    {100 * count / samples:5.1f}%  thread {thread}")
    print("  self time")
    for f, count in own.most_common(top):
        print(f"    {100 * count / samples:5.1f}%  {f}")
    print("  including callees (qgate code only)")
    mine = [(f, count) for f, count in total.most_common() if _ours(f)]
    for f, count in mine[:top]:
        print(f"    {100 * count / samples:5.1f}%  {f}")


def _short(frame: str) -> str:
    # py-spy raw frames: "function (path/to/file.py:line)"
    fn, _, where = frame.partition(" (")
    where = where.rstrip(")")
    path, _, _line = where.rpartition(":")
    for marker in (str(ROOT) + "/", "site-packages/", "lib/python3"):
        if marker in path:
            path = path.split(marker, 1)[1]
            break
    return f"{fn} ({path})"


def _ours(frame: str) -> bool:
    return any(f"({p}/" in frame for p in ("protocols", "core", "storage", "gateway"))
