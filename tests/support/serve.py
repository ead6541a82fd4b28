"""``qgate serve`` in a subprocess on free ports, as a user runs it (shared by the
gateway and browser tests)."""

from __future__ import annotations

import http.client
import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from tests.support.http import CLIENT

QGATE = [sys.executable, "-m", "qgate.gateway.cli"]
ROOT = Path(__file__).resolve().parents[2]
CLIENT_ID = CLIENT


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def run_qgate(cwd: Path, *args: str) -> subprocess.CompletedProcess[str]:
    """``qgate <args>`` in ``cwd`` to its end (at most a minute), its output as text."""
    return subprocess.run(
        [*QGATE, *args],
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=60,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
    )


class Server:
    """``extra`` is TOML appended to the config (more listeners); ``tenant`` the
    X-Project-Id its requests send; ``storage`` the storage URL (SQLite in ``workdir``
    by default); ``workers`` the ``[server] workers`` (None: the default, one a core)."""

    def __init__(
        self,
        workdir: Path,
        auth: str = "none",
        tenant: str = "proj-1",
        extra: str = "",
        storage: str | None = None,
        workers: int | None = None,
    ) -> None:
        self.workdir = workdir
        self.tenant = tenant
        self.http = free_port()
        self.stomp = free_port()
        self.config = workdir / "qgate.toml"
        url = storage or f"sqlite:///{workdir}/data/qgate.db"
        server = "" if workers is None else f"[server]\nworkers = {workers}\n"
        self.config.write_text(
            f"""{server}
[storage]
url = "{url}"
synchronous = "NORMAL"
[auth]
mode = "{auth}"
[[listeners]]
protocol = "http"
endpoint = "tcp:{self.http}:interface=127.0.0.1"
[[listeners]]
protocol = "stomp"
endpoint = "tcp:{self.stomp}:interface=127.0.0.1"
{extra}"""
        )
        self.proc: subprocess.Popen[bytes] | None = None

    def cli(self, *args: str) -> subprocess.CompletedProcess[str]:
        return run_qgate(self.workdir, *args, "-c", str(self.config))

    def start(self, *args: str) -> None:
        """``qgate serve`` with ``args`` added, once it answers /v2/ping."""
        self.log = open(self.workdir / "serve.log", "ab")  # noqa: SIM115
        self.proc = subprocess.Popen(
            [*QGATE, "serve", "-c", str(self.config), *args],
            cwd=self.workdir,
            stdout=self.log,
            stderr=subprocess.STDOUT,
            env={**os.environ, "PYTHONPATH": str(ROOT)},
        )
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise AssertionError("qgate ended: " + self.output())
            try:
                if self.request("GET", "/v2/ping")[0] == 204:
                    return
            except OSError:
                time.sleep(0.1)
        # A server that never answered is not left behind (holding ports, restarting
        # workers) for the rest of the run: SIGTERM stops the hub and its workers.
        self.proc.terminate()
        try:
            self.proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            self.proc.kill()
        raise AssertionError("qgate did not answer /v2/ping: " + self.output())

    def worker_pids(self) -> list[int]:
        """The pids of the hub's worker processes, now (Linux: the kernel's child list)."""
        assert self.proc is not None
        pid = self.proc.pid
        try:
            children = Path(f"/proc/{pid}/task/{pid}/children").read_text().split()
        except OSError:
            return []
        return sorted(int(c) for c in children)

    def output(self) -> str:
        return (self.workdir / "serve.log").read_text(errors="replace")

    def stop(self) -> int:
        assert self.proc is not None
        self.proc.send_signal(signal.SIGTERM)
        code = self.proc.wait(timeout=30)
        self.log.close()
        return code

    def request(self, method: str, path: str, *args: Any, **kw: Any) -> tuple[int, dict]:
        """``exchange`` without the response headers."""
        status, _headers, document = self.exchange(method, path, *args, **kw)
        return status, document

    def exchange(
        self,
        method: str,
        path: str,
        body: object = None,
        headers: dict[str, str] | None = None,
        timeout: float = 10,
    ) -> tuple[int, http.client.HTTPMessage, dict]:
        """One request with the Client-ID and project headers (``body`` sent as JSON):
        the status, the response headers and the JSON document answered ({} if none)."""
        conn = http.client.HTTPConnection("127.0.0.1", self.http, timeout=timeout)
        try:
            hdrs = {"Client-ID": CLIENT_ID, "X-Project-Id": self.tenant, **(headers or {})}
            data = None
            if body is not None:
                data = json.dumps(body).encode()
                hdrs["Content-Type"] = "application/json"
            conn.request(method, path, data, hdrs)
            response = conn.getresponse()
            raw = response.read()
            return response.status, response.headers, (json.loads(raw) if raw else {})
        finally:
            conn.close()
