"""Wake-up latency: publish over HTTP -> a waiting long poll or STOMP subscriber has it.

    python -m bench.latency [--samples 300] [--storage sqlite|postgres]
                            [--serve-args "--workers 2"]
                            [--url http://127.0.0.1:8888 --stomp 127.0.0.1:61613]

One client process: a thread parks a ``POST /v2/queues/Q/claims?wait=10&limit=1`` (or a
STOMP connection holds a ``SUBSCRIBE`` to ``/queue/Q`` with ``ack:auto``), the main thread
sends ``POST /v2/queues/Q/messages`` with one message and times how long until the waiter
has it (claim answer read / MESSAGE frame read). Both clocks are this process's
``perf_counter``. p50 and p99 over ``--samples`` per row, on a durable queue (qgate's
default: SQLite ``synchronous = "FULL"``, or a fresh PostgreSQL database) and a transient
one. Targets (issue 10): p50 <= 5 ms, p99 <= 50 ms. Beside them, the same from the moment
the publish's 201 was read: on a durable queue the first figure includes the publish's
commit (an fsync), the second is the wake-up alone (negative when the waiter was first).

With ``--url``/``--stomp`` it measures an already-running qgate (e.g. ``qgate serve
--workers 2``: the publish and the waiter may then land in different workers, which is the
point); otherwise it starts ``qgate serve`` with ``--serve-args``. The STOMP host is the
HTTP project (``bench``), so both name the same queue.
"""

from __future__ import annotations

import argparse
import http.client
import json
import socket
import statistics
import sys
import threading
import time
import uuid
from contextlib import ExitStack

from bench._common import (
    HEADERS,
    PROJECT,
    QgateServer,
    Target,
    TemporaryDatabase,
    external_target,
    print_table,
)

PUBLISH = json.dumps({"messages": [{"body": {"tick": 1}, "ttl": 300}]}).encode()
#: How long the waiter is given to park before the publish (a benchmark may sleep).
PARK = 0.01


def http_conn(target: Target) -> http.client.HTTPConnection:
    assert target.http is not None
    return http.client.HTTPConnection(*target.http, timeout=30)


def call(conn: http.client.HTTPConnection, method: str, path: str, body: bytes | None) -> int:
    conn.request(method, path, body, HEADERS)
    response = conn.getresponse()
    response.read()
    return response.status


def create_queue(target: Target, name: str, flavour: str) -> None:
    conn = http_conn(target)
    body = {"_flavor": "transient"} if flavour == "transient" else {}
    status = call(conn, "PUT", f"/v2/queues/{name}", json.dumps(body).encode())
    assert status in (201, 204), status
    conn.close()


def percentiles(latencies: list[float]) -> tuple[float, float]:
    latencies.sort()
    return statistics.median(latencies), latencies[max(0, int(len(latencies) * 0.99) - 1)]


def claim_latency(target: Target, queue: str, samples: int) -> tuple[list[float], list[float]]:
    """Seconds from sending the publish to the parked claim's answer, and from the
    publish's 201 to it (negative when the claim answered first), per sample."""
    publisher, waiter = http_conn(target), http_conn(target)
    claim = json.dumps({"ttl": 60, "grace": 60}).encode()
    out: list[float] = []
    after: list[float] = []
    for _ in range(samples):
        answered: list[float] = []

        def park(answered: list[float] = answered) -> None:
            status = call(waiter, "POST", f"/v2/queues/{queue}/claims?wait=10&limit=1", claim)
            answered.append(time.perf_counter())
            assert status == 201, status

        thread = threading.Thread(target=park)
        thread.start()
        time.sleep(PARK)
        sent = time.perf_counter()
        assert call(publisher, "POST", f"/v2/queues/{queue}/messages", PUBLISH) == 201
        created = time.perf_counter()
        thread.join()
        out.append(answered[0] - sent)
        after.append(answered[0] - created)
    return out, after


class StompWaiter:
    """A blocking STOMP 1.2 subscriber on a thread: ``received`` is set, with the time,
    when a MESSAGE frame has been read."""

    def __init__(self, address: tuple[str, int], destination: str, headers: str) -> None:
        self.sock = socket.create_connection(address, timeout=30)
        self.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.sock.sendall(
            f"CONNECT\naccept-version:1.2\nhost:{PROJECT}\nheart-beat:0,0\n\n\x00".encode()
        )
        self.buf = b""
        assert self._frame().startswith(b"CONNECTED"), "no CONNECTED"
        self.sock.sendall(
            f"SUBSCRIBE\ndestination:{destination}\nid:0\nack:auto\n{headers}"
            "receipt:sub\n\n\x00".encode()
        )
        assert self._frame().startswith(b"RECEIPT"), "no RECEIPT for SUBSCRIBE"
        self.received = threading.Event()
        self.at = 0.0
        self.thread = threading.Thread(target=self._read, daemon=True)
        self.thread.start()

    def _frame(self) -> bytes:
        while b"\x00" not in self.buf:
            chunk = self.sock.recv(65536)
            if not chunk:
                raise ConnectionError("the STOMP server closed the connection")
            self.buf += chunk
        frame, _, self.buf = self.buf.partition(b"\x00")
        return frame.lstrip(b"\r\n")

    def _read(self) -> None:
        try:
            while True:
                frame = self._frame()
                if frame.startswith(b"MESSAGE"):
                    self.at = time.perf_counter()
                    self.received.set()
                elif frame.startswith(b"ERROR"):
                    print(f"  STOMP ERROR: {frame[:300]!r}", file=sys.stderr)
        except OSError:
            return

    def close(self) -> None:
        self.sock.close()


def stomp_latency(
    target: Target, queue: str, flavour: str, samples: int
) -> tuple[list[float], list[float]]:
    """Seconds from sending the publish (HTTP) to the STOMP subscriber's MESSAGE, and from
    the publish's 201 to it."""
    assert target.stomp is not None
    headers = "persistent:false\n" if flavour == "transient" else ""
    waiter = StompWaiter(target.stomp, f"/queue/{queue}", headers)
    publisher = http_conn(target)
    out: list[float] = []
    after: list[float] = []
    try:
        for _ in range(samples):
            waiter.received.clear()
            time.sleep(PARK)
            sent = time.perf_counter()
            assert call(publisher, "POST", f"/v2/queues/{queue}/messages", PUBLISH) == 201
            created = time.perf_counter()
            if not waiter.received.wait(10):
                raise RuntimeError("the STOMP subscriber got nothing in 10 s")
            out.append(waiter.at - sent)
            after.append(waiter.at - created)
    finally:
        waiter.close()
    return out, after


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--samples", type=int, default=300, help="wake-ups per row")
    parser.add_argument("--storage", choices=("sqlite", "postgres"), default="sqlite")
    parser.add_argument("--serve-args", default="", help="extra arguments of qgate serve")
    parser.add_argument("--url", help="an already-running qgate's HTTP address")
    parser.add_argument("--stomp", help="its STOMP address (host:port); omit to skip STOMP")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    with ExitStack() as stack:
        if args.url:
            target = external_target(args.url, args.stomp)
            where = f"{args.url} {args.stomp or ''} (given)"
        else:
            url = "sqlite:///qgate.db"
            if args.storage == "postgres":
                url = stack.enter_context(TemporaryDatabase("qgate_bench_latency")).url
            server = QgateServer(url, stomp=True, serve_args=args.serve_args)
            stack.callback(server.stop)
            target = server.target()
            where = f"qgate serve {args.serve_args} on {args.storage}"
        print(f"# wake-up latency, {args.samples} samples per row; {where}", flush=True)
        rows = []
        for flavour in ("durable", "transient"):
            waiters = [("HTTP POST .../claims?wait=10", "claim")]
            if target.stomp is not None:
                waiters.append(("STOMP SUBSCRIBE ack:auto", "stomp"))
            for title, kind in waiters:
                queue = f"lat-{kind}-{flavour}-{uuid.uuid4().hex[:6]}"
                create_queue(target, queue, flavour)
                if kind == "claim":
                    latencies, after = claim_latency(target, queue, args.samples)
                else:
                    latencies, after = stomp_latency(target, queue, flavour, args.samples)
                p50, p99 = percentiles(latencies)
                a50, a99 = percentiles(after)
                rows.append(
                    [f"{title}, {flavour}"] + [f"{v * 1e3:.2f}" for v in (p50, p99, a50, a99)]
                )
                print(
                    f"  {rows[-1][0]:<45} p50 {rows[-1][1]} ms  p99 {rows[-1][2]} ms"
                    f"  (after the 201: p50 {rows[-1][3]} ms, p99 {rows[-1][4]} ms)",
                    flush=True,
                )
        print_table(
            f"publish (HTTP) -> waiter has it ({args.storage})",
            ["waiter", "p50 ms", "p99 ms", "after 201 p50", "after 201 p99"],
            rows,
        )
        print(
            "\ntargets: p50 <= 5 ms, p99 <= 50 ms (from sending the publish; on a durable queue"
            " that includes its commit). 'after 201': from the publish's answer, i.e. the"
            " wake-up alone (negative: the waiter had it first)."
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
