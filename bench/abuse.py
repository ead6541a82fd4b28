"""Connection abuse against a real ``qgate serve``: what each attack holds, and whether a
well-behaved client is still served meanwhile.

    python -m bench.abuse [--connections 700] [--slow 400] [--storage sqlite]

Starts qgate in a subprocess with a descriptor limit of 1024 (so the total cap is 768),
then, one after the other:

* idle STOMP: connections that never send CONNECT; how many the server closed after
  ``connect_timeout`` (10 s);
* slowloris: HTTP connections sending one header byte a second; how many are still open
  after ``head_timeout`` (20 s) plus a second;
* descriptor exhaustion: idle connections from 127.0.0.1 until refused, with a victim
  pinging from 127.0.0.2 (``max_per_ip`` keeps the attacker to its share) and then with
  the per-address cap off (the total cap refuses with 503 instead of the kernel resetting);
* a SUBSCRIBE flood on one connection that then leaves: server CPU seconds spent after;
* a transaction never committed: SENDs of 250 kB until the server refuses; its RSS.

Prints one line per measurement. Times on shared machines are noisy; counts are not.
"""

from __future__ import annotations

import argparse
import os
import resource
import select
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager

HTTP_PORT = 18888
STOMP_PORT = 16613
LOCAL = "interface=127.0.0.1"
CLIENT = b"3381af92-2b9e-11e3-b191-71861300734c"
PING = b"GET /v2/ping HTTP/1.1\r\nHost: x\r\nClient-ID: " + CLIENT + b"\r\n\r\n"


def _config(path: str, storage: str, per_ip: int, extra: str = "") -> None:
    url = "memory://" if storage == "memory" else f"sqlite:///{os.path.dirname(path)}/q.db"
    with open(path, "w") as f:
        f.write(
            f'[storage]\nurl = "{url}"\n[connections]\nmax_per_ip = {per_ip}\n{extra}\n'
            f'[[listeners]]\nprotocol = "http"\nendpoint = "tcp:{HTTP_PORT}:{LOCAL}"\n'
            f'[[listeners]]\nprotocol = "stomp"\nendpoint = "tcp:{STOMP_PORT}:{LOCAL}"\n'
        )


def _limit_fds() -> None:
    resource.setrlimit(resource.RLIMIT_NOFILE, (1024, 1024))


@contextmanager
def server(storage: str, per_ip: int, extra: str = "") -> Iterator[subprocess.Popen[bytes]]:
    with tempfile.TemporaryDirectory() as tmp:
        path = os.path.join(tmp, "q.toml")
        _config(path, storage, per_ip, extra)
        proc = subprocess.Popen(
            [sys.executable, "-m", "qgate.gateway.cli", "serve", "-c", path],
            preexec_fn=_limit_fds,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        try:
            for _ in range(200):
                if ping() == 204:
                    break
                time.sleep(0.05)
            yield proc
        finally:
            proc.terminate()
            proc.wait(10)


def ping(source: str = "127.0.0.1") -> int:
    """A victim's request from ``source``: its status, 0 when refused or reset."""
    try:
        with socket.create_connection(
            ("127.0.0.1", HTTP_PORT), timeout=5, source_address=(source, 0)
        ) as s:
            s.sendall(PING)
            data = s.recv(4096)
            return int(data.split(b" ", 2)[1]) if data.startswith(b"HTTP/1.1") else 0
    except (OSError, ValueError, IndexError):
        return 0


def connect_many(port: int, n: int, source: str = "127.0.0.1") -> list[socket.socket]:
    out = []
    for _ in range(n):
        try:
            s = socket.create_connection(("127.0.0.1", port), timeout=5, source_address=(source, 0))
        except OSError:
            continue
        out.append(s)
    return out


def closed_by_server(socks: list[socket.socket], timeout: float = 1.0) -> int:
    """How many of ``socks`` the server closes within ``timeout`` s (EOF or reset, after
    any answer), all watched at once."""
    poller = select.poll()
    by_fd = {}
    for s in socks:
        s.setblocking(False)
        poller.register(s, select.POLLIN)
        by_fd[s.fileno()] = s
    closed = 0
    deadline = time.monotonic() + timeout
    while by_fd and (left := deadline - time.monotonic()) > 0:
        for fd, _ in poller.poll(left * 1000):
            s = by_fd[fd]
            try:
                if s.recv(65536):
                    continue
            except OSError:
                pass
            closed += 1
            poller.unregister(fd)
            del by_fd[fd]
    return closed


def _close(socks: list[socket.socket]) -> None:
    for s in socks:
        s.close()


def proc_stats(pid: int) -> tuple[float, float]:
    """(CPU seconds, RSS MB) of a process."""
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    cpu = (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
    with open(f"/proc/{pid}/statm") as f:
        rss = int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / (1024 * 1024)
    return cpu, rss


def idle_stomp(n: int) -> None:
    socks = connect_many(STOMP_PORT, n)
    time.sleep(11)
    print(
        f"idle STOMP, no CONNECT: {len(socks)} open; closed by the server after 11 s: "
        f"{closed_by_server(socks)}; victim ping: {ping()}"
    )
    _close(socks)


def slowloris(n: int) -> None:
    socks = connect_many(HTTP_PORT, n)
    head = PING[:-2] + b"X-Slow: " + b"a" * 100
    start = time.monotonic()
    i = 0
    while time.monotonic() - start < 21:
        for s in socks:
            try:
                s.send(head[i : i + 1])
            except OSError:
                pass
        i = min(i + 1, len(head) - 1)
        time.sleep(1)
    print(
        f"slowloris, a header byte a second: {len(socks)} open; closed by the server after "
        f"21 s: {closed_by_server(socks)}; victim ping: {ping()}"
    )
    _close(socks)


def exhaustion(limit: int) -> None:
    socks = connect_many(HTTP_PORT, limit)
    time.sleep(0.5)
    admitted = len(socks) - closed_by_server(socks, 0.2)
    pings = [ping("127.0.0.2") for _ in range(50)]
    print(
        f"{len(socks)} idle HTTP connections from 127.0.0.1: {admitted} admitted; victim from "
        f"127.0.0.2: {pings.count(204)}/50 served, {pings.count(503)} 503, {pings.count(0)} reset"
    )
    _close(socks)


def subscribe_flood(pid: int, count: int) -> None:
    s = socket.create_connection(("127.0.0.1", STOMP_PORT))
    s.sendall(b"CONNECT\naccept-version:1.2\nhost:/\n\n\x00")
    s.recv(4096)
    frames = b"".join(
        b"SUBSCRIBE\ndestination:/queue/flood%d\nid:%d\n\n\x00" % (i, i) for i in range(count)
    )
    s.setblocking(False)
    sent = 0
    try:
        while sent < len(frames):
            _, w, _ = select.select([], [s], [], 2)
            if not w:
                break
            sent += s.send(frames[sent : sent + 65536])
    except OSError:
        pass
    s.close()
    cpu = []
    last, _ = proc_stats(pid)
    for _ in range(10):
        time.sleep(1)
        now, _ = proc_stats(pid)
        cpu.append(now - last)
        last = now
    print(
        f"SUBSCRIBE flood ({count} frames, {sent} of {len(frames)} bytes taken), then gone: "
        f"server CPU s in each of the next 10 s: {' '.join(f'{c:.1f}' for c in cpu)}; "
        f"victim ping: {ping()}"
    )


def open_transaction(pid: int) -> None:
    _, before = proc_stats(pid)
    s = socket.create_connection(("127.0.0.1", STOMP_PORT))
    s.sendall(b"CONNECT\naccept-version:1.2\nhost:/\n\n\x00")
    s.recv(4096)
    s.sendall(b"BEGIN\ntransaction:t\n\n\x00")
    body = b"x" * 250_000
    frame = b"SEND\ndestination:/queue/tx\ntransaction:t\ncontent-length:%d\n\n" % len(body)
    sent = 0
    reply = b""
    s.settimeout(5)
    try:
        for _ in range(4000):
            s.sendall(frame + body + b"\x00")
            sent += 1
            r, _, _ = select.select([s], [], [], 0)
            if r:
                reply = s.recv(4096)
                break
    except OSError:
        pass  # the server closed: its ERROR waits to be read
    _, held = proc_stats(pid)
    if not reply:
        try:
            reply = s.recv(4096)
        except OSError:
            pass
    s.close()
    message = reply.split(b"\n")[1].decode(errors="replace") if reply else "none"
    print(
        f"open transaction: {sent} SENDs of 250 kB sent; server answered {message!r}; "
        f"RSS {before:.0f} -> {held:.0f} MB"
    )


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--connections", type=int, default=700)
    parser.add_argument("--slow", type=int, default=400)
    parser.add_argument("--subscribes", type=int, default=20_000)
    parser.add_argument("--storage", default="sqlite", choices=("sqlite", "memory"))
    args = parser.parse_args()
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    with server(args.storage, per_ip=0) as proc:
        idle_stomp(args.connections)
        slowloris(args.slow)
        subscribe_flood(proc.pid, args.subscribes)
        open_transaction(proc.pid)
        print("per-address cap off (max_per_ip = 0), descriptor limit 1024:")
        exhaustion(1500)
    with server(args.storage, per_ip=256) as proc:
        print("max_per_ip = 256, descriptor limit 1024:")
        exhaustion(1500)


if __name__ == "__main__":
    main()
