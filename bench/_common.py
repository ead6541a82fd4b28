"""What the benchmarks share: free ports, a ``qgate serve`` subprocess (or an already
running qgate given by address), wrk, CPU per process, a fresh PostgreSQL database."""

from __future__ import annotations

import json
import os
import re
import shlex
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import textwrap
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

if TYPE_CHECKING:
    import psutil

ROOT = Path(__file__).resolve().parents[1]
PG_URL = os.environ.get("QGATE_BENCH_PG_URL", "postgresql://postgres@127.0.0.1:5432/test")
CLIENT_ID = "3381af92-2b9e-11e3-b191-71861300734c"
PROJECT = "bench"
HEADERS = {"Client-ID": CLIENT_ID, "X-Project-Id": PROJECT, "Content-Type": "application/json"}


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def port_open(host: str, port: int) -> bool:
    try:
        with socket.create_connection((host, port), timeout=1):
            return True
    except OSError:
        return False


def split_address(address: str, default_port: int) -> tuple[str, int]:
    """``host:port``, ``:port``, ``port`` or ``http://host:port`` as (host, port)."""
    if "//" in address:
        parts = urlsplit(address)
        return parts.hostname or "127.0.0.1", parts.port or default_port
    host, _, port = address.rpartition(":")
    return host or "127.0.0.1", int(port or default_port)


# -- the server ---------------------------------------------------------------------------------


@dataclass
class Target:
    """Where a benchmark sends its load, and the processes whose CPU it counts."""

    http: tuple[str, int] | None = None
    stomp: tuple[str, int] | None = None
    pids: list[int] = field(default_factory=list)
    label: str = "qgate"

    def processes(self) -> list[psutil.Process]:
        """The server processes and all their children (workers), alive now."""
        psutil = need_psutil()

        found: dict[int, psutil.Process] = {}
        for pid in self.pids:
            try:
                proc = psutil.Process(pid)
                found[pid] = proc
                for child in proc.children(recursive=True):
                    found[child.pid] = child
            except psutil.Error:
                continue
        return list(found.values())


def need_psutil() -> Any:
    """psutil (the ``bench`` extra), imported late so that ``--help`` works without it."""
    try:
        import psutil
    except ImportError:
        raise SystemExit("the benchmarks need psutil: pip install -e '.[bench]'") from None
    return psutil


def listening_pids(port: int) -> list[int]:
    """Processes listening on ``port`` (needs the right to see them; [] when not)."""
    psutil = need_psutil()

    conns = []
    for _ in range(5):  # a process that ends while the table is read makes psutil fail
        try:
            conns = psutil.net_connections("tcp")
            break
        except psutil.Error:
            time.sleep(0.1)
    return sorted(
        {c.pid for c in conns if c.status == psutil.CONN_LISTEN and c.laddr.port == port and c.pid}
    )


def external_target(url: str | None, stomp: str | None) -> Target:
    """An already-running qgate (e.g. ``qgate serve --workers 2``) at these addresses."""
    target = Target(label="qgate (given)")
    if url:
        target.http = split_address(url, 8888)
        target.pids += listening_pids(target.http[1])
    if stomp:
        target.stomp = split_address(stomp, 61613)
        target.pids += [p for p in listening_pids(target.stomp[1]) if p not in target.pids]
    return target


class QgateServer:
    """``qgate serve`` in a subprocess on free ports with its own config; ``serve_args``
    are passed through to ``qgate serve`` (e.g. ``--workers 2``)."""

    def __init__(
        self,
        storage_url: str,
        *,
        http: bool = True,
        stomp: bool = False,
        serve_args: str = "",
        extra_config: str = "",
        workdir: Path | None = None,
        module: str = "qgate.gateway.cli",
        env: dict[str, str] | None = None,
    ) -> None:
        self._own_workdir = workdir is None
        self.workdir = workdir or Path(tempfile.mkdtemp(prefix="qgate-bench-"))
        self.http_port = free_port() if http else None
        self.stomp_port = free_port() if stomp else None
        listeners = ""
        if self.http_port:
            listeners += (
                '[[listeners]]\nprotocol = "http"\n'
                f'endpoint = "tcp:{self.http_port}:interface=127.0.0.1"\n'
            )
        if self.stomp_port:
            listeners += (
                '[[listeners]]\nprotocol = "stomp"\n'
                f'endpoint = "tcp:{self.stomp_port}:interface=127.0.0.1"\n'
            )
        name = f"qgate-{uuid.uuid4().hex[:6]}"
        self.config = self.workdir / f"{name}.toml"
        self.config.write_text(
            textwrap.dedent(
                f"""
                [storage]
                url = "{storage_url}"
                synchronous = "FULL"
                """
            )
            + textwrap.dedent(extra_config)
            + listeners
        )
        self.log_path = self.workdir / f"{name}.log"
        self.log = open(self.log_path, "ab")  # noqa: SIM115 - closed in stop()
        self.command = [
            sys.executable,
            "-m",
            module,
            "--log-level",
            "warn",
            "serve",
            "-c",
            str(self.config),
            *shlex.split(serve_args),
        ]
        self.proc = subprocess.Popen(
            self.command,
            cwd=self.workdir,
            stdout=self.log,
            stderr=subprocess.STDOUT,
            env={**os.environ, "PYTHONPATH": str(ROOT), **(env or {})},
        )
        self._wait_ready()

    def _wait_ready(self, timeout: float = 60) -> None:
        deadline = time.monotonic() + timeout
        ports = [p for p in (self.http_port, self.stomp_port) if p]
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                output = self.output()
                self.stop()
                raise RuntimeError(
                    f"{shlex.join(self.command)} exited {self.proc.returncode}:\n{output}"
                )
            if all(port_open("127.0.0.1", p) for p in ports):
                return
            time.sleep(0.1)
        output = self.output()
        self.stop()
        raise RuntimeError(f"qgate serve did not answer:\n{output}")

    def target(self, label: str = "qgate") -> Target:
        return Target(
            http=("127.0.0.1", self.http_port) if self.http_port else None,
            stomp=("127.0.0.1", self.stomp_port) if self.stomp_port else None,
            pids=[self.proc.pid],
            label=label,
        )

    def output(self) -> str:
        return self.log_path.read_text(errors="replace")[-4000:]

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        if not self.log.closed:
            self.log.close()
        if self._own_workdir:
            shutil.rmtree(self.workdir, ignore_errors=True)

    def __enter__(self) -> QgateServer:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()


# -- CPU ----------------------------------------------------------------------------------------


class CpuMeter:
    """CPU of each process of a target between ``start()`` and ``stop()``, as a fraction of
    one core per process (1.0 = one core busy)."""

    def __init__(self, target: Target) -> None:
        self.target = target
        self.before: dict[int, float] = {}
        self.started = 0.0
        self.per_process: dict[int, float] = {}

    @staticmethod
    def _seconds(proc: psutil.Process) -> float | None:
        import psutil

        try:
            t = proc.cpu_times()
        except psutil.Error:
            return None
        return float(t.user + t.system)

    def start(self) -> None:
        self.before = {}
        for proc in self.target.processes():
            seconds = self._seconds(proc)
            if seconds is not None:
                self.before[proc.pid] = seconds
        self.started = time.perf_counter()

    def stop(self) -> dict[int, float]:
        elapsed = time.perf_counter() - self.started
        self.per_process = {}
        for proc in self.target.processes():
            seconds = self._seconds(proc)
            if seconds is not None:
                used = seconds - self.before.get(proc.pid, 0.0)
                self.per_process[proc.pid] = used / elapsed
        return self.per_process

    def summary(self) -> str:
        """``97%`` for one process, ``12% + 95% + 93%`` for several (the parent first)."""
        if not self.per_process:
            return "-"
        return " + ".join(f"{100 * v:.0f}%" for _, v in sorted(self.per_process.items()))


# -- wrk ----------------------------------------------------------------------------------------


@dataclass(frozen=True)
class WrkResult:
    rate: float
    p50_ms: float
    p99_ms: float


_UNITS = {"us": 1e-3, "ms": 1.0, "s": 1e3}


def wrk_post(
    host: str, port: int, path: str, body: str, *, seconds: float, connections: int, threads: int
) -> WrkResult:
    """Requests/s of wrk POSTing ``body`` over ``connections`` keep-alive connections; every
    answer must be 2xx (wrk counts the others, and they fail the run)."""
    if subprocess.run(["which", "wrk"], capture_output=True).returncode:
        raise SystemExit("this benchmark needs wrk: apt-get install -y wrk")
    headers = "".join(
        f"wrk.headers[{json.dumps(k)}] = {json.dumps(v)}\n" for k, v in HEADERS.items()
    )
    with tempfile.NamedTemporaryFile("w", suffix=".lua", delete=False) as script:
        script.write(f'wrk.method = "POST"\nwrk.body = {json.dumps(body)}\n{headers}')
    try:
        out = subprocess.run(
            [
                "wrk",
                f"-t{min(threads, connections)}",
                f"-c{connections}",
                f"-d{max(1, round(seconds))}s",
                "--latency",
                "-s",
                script.name,
                f"http://{host}:{port}{path}",
            ],
            capture_output=True,
            text=True,
            check=True,
        ).stdout
    finally:
        os.unlink(script.name)
    errors = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
    if errors:
        raise RuntimeError(f"wrk saw {errors.group(1)} error responses:\n{out}")
    socket_errors = re.search(r"Socket errors: .*", out)
    if socket_errors:
        print(f"  wrk: {socket_errors.group(0)}", file=sys.stderr)
    rate = re.search(r"Requests/sec:\s+([\d.]+)", out)
    assert rate, out

    def percentile(p: str) -> float:
        found = re.search(rf"^\s+{p}%\s+([\d.]+)(us|ms|s)\s*$", out, re.M)
        return float(found.group(1)) * _UNITS[found.group(2)] if found else float("nan")

    return WrkResult(float(rate.group(1)), percentile("50"), percentile("99"))


# -- PostgreSQL ---------------------------------------------------------------------------------


class TemporaryDatabase:
    """A fresh PostgreSQL database for one run, dropped at the end (``url`` is a
    SQLAlchemy URL qgate's config takes; ``dsn`` what psycopg2 takes)."""

    def __init__(self, prefix: str = "qgate_bench") -> None:
        import sqlalchemy as sa

        from qgate.storage.sql.store import normalize_url

        self._sa = sa
        self._admin_url = normalize_url(PG_URL)
        self.name = f"{prefix}_{uuid.uuid4().hex[:8]}"
        admin = sa.create_engine(self._admin_url, isolation_level="AUTOCOMMIT")
        with admin.connect() as conn:
            conn.exec_driver_sql(f'CREATE DATABASE "{self.name}"')
        admin.dispose()
        url = self._admin_url.set(database=self.name)
        self.url = url.render_as_string(hide_password=False)
        self.dsn = url.set(drivername="postgresql").render_as_string(hide_password=False)

    def drop(self) -> None:
        admin = self._sa.create_engine(self._admin_url, isolation_level="AUTOCOMMIT")
        with admin.connect() as conn:
            conn.exec_driver_sql(f'DROP DATABASE IF EXISTS "{self.name}" WITH (FORCE)')
        admin.dispose()

    def __enter__(self) -> TemporaryDatabase:
        return self

    def __exit__(self, *exc: object) -> None:
        self.drop()


def print_table(title: str, header: list[str], rows: list[list[str]]) -> None:
    """A Markdown table, right-aligned numbers, ready for docs/benchmarks.md."""
    widths = [max(len(str(r[i])) for r in [header, *rows]) for i in range(len(header))]
    print(f"\n### {title}\n")
    print("| " + " | ".join(h.ljust(w) for h, w in zip(header, widths, strict=True)) + " |")
    print("|" + "|".join("-" * (w + 2) for w in widths) + "|")
    for r in rows:
        cells = [r[0].ljust(widths[0])] + [
            c.rjust(w) for c, w in zip(r[1:], widths[1:], strict=True)
        ]
        print("| " + " | ".join(cells) + " |")
    sys.stdout.flush()
