"""A webhook receiver for tests that run qgate in subprocesses: a threaded HTTP server in
the test process (the test itself is synchronous there), recording each push and
noticing two pushes of one message that overlap in time."""

from __future__ import annotations

import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any


class Hooked:
    def __init__(self, delay: float = 0.0) -> None:
        self.delay = delay
        self.up = True
        self.lock = threading.Lock()
        self.got: list[tuple[str, str, str]] = []  # (subscription, message id, attempt)
        self.flying: set[tuple[str, str]] = set()
        self.overlaps: list[tuple[str, str]] = []
        outer = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def do_POST(self) -> None:  # noqa: N802 - http.server's name
                self.rfile.read(int(self.headers.get("Content-Length", "0")))
                mid = self.headers.get("X-Qgate-Message-Id", "?")
                key = (self.headers.get("X-Qgate-Subscription-Id", "?"), mid)
                with outer.lock:
                    if key in outer.flying:  # one message, one subscription, twice at once
                        outer.overlaps.append(key)
                    outer.flying.add(key)
                try:
                    if outer.delay:
                        time.sleep(outer.delay)
                    ok = outer.up
                    with outer.lock:
                        if ok:
                            attempt = self.headers.get("X-Qgate-Attempt", "?")
                            outer.got.append((key[0], mid, attempt))
                finally:
                    with outer.lock:
                        outer.flying.discard(key)
                self.send_response(204 if ok else 503)
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server.server_address[1]}/hook"

    def ids(self) -> set[str]:
        with self.lock:
            return {mid for _sub, mid, _attempt in self.got}

    def ids_of(self, subscription: str) -> set[str]:
        with self.lock:
            return {mid for sub, mid, _attempt in self.got if sub == subscription}

    def wait_for(self, ids: set[str], timeout: float = 30.0) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if ids <= self.ids():
                return
            time.sleep(0.05)
        missing = sorted(ids - self.ids(), key=int)
        raise AssertionError(f"{len(missing)} never pushed, e.g. {missing[:10]}")

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()
