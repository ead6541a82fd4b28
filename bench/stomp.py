"""STOMP benchmark: qgate against RabbitMQ's STOMP plugin, one client, one machine, one run.

    python -m bench.stomp [--seconds 5] [--connections 5000] [--brokers qgate,rabbitmq]
                          [--profile DIR]

qgate runs as a ``qgate serve`` subprocess on free ports with a temporary config (SQLite,
``synchronous = "FULL"`` for durable queues). RabbitMQ must already run with its STOMP
plugin on ``--rabbit-port`` (61623; setup in docs/stomp.md, and printed when it is not
there). Both are driven by the same lean asyncio STOMP 1.2 client in this process.

Scenarios (1 KiB bodies): 1 producer -> 1 consumer on a queue with ``ack:auto`` and with
``ack:client-individual`` (an ACK per message), on a transient queue (qgate:
``persistent:false`` on first use; RabbitMQ: a non-durable queue and non-persistent
messages) and a durable one (qgate: SQLite; RabbitMQ: a durable queue, persistent
messages); and 1 producer -> 4 subscribers of a topic. The producer asks for a RECEIPT on
every 100th SEND and keeps at most ``WINDOW`` messages ahead of the slowest consumer, so
the rate is what goes through end to end, not what piles up. msgs/s counts messages
received by every consumer (a topic message counts once, though 4 copies go out).

Then: the memory one idle STOMP connection costs (RSS growth of the server process with
``--connections`` connected clients, divided by their number).

With ``--profile DIR`` py-spy samples the qgate server through each scenario's measured
window (``DIR/<scenario>.txt``, collapsed stacks) and the heaviest functions are printed.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import resource
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
BODY = b"x" * 1024
#: Messages the producer may be ahead of the slowest consumer.
WINDOW = 5000
#: A SEND in this many asks for a RECEIPT; at most MAX_RECEIPTS of them are outstanding.
RECEIPT_EVERY = 100
MAX_RECEIPTS = 20
#: prefetch-count of client-individual subscriptions (both brokers).
PREFETCH = 1000
#: SENDs written to the socket in one go.
BURST = 50

RABBIT_SETUP = """\
RabbitMQ's STOMP plugin is not answering on 127.0.0.1:{port}. To enable it:
  rabbitmq-plugins enable rabbitmq_stomp
  echo 'stomp.listeners.tcp.1 = 127.0.0.1:{port}' >> /etc/rabbitmq/rabbitmq.conf
  rabbitmqctl stop; rabbitmq-server -detached
(see docs/stomp.md). Or run with --brokers qgate."""


# -- a lean STOMP 1.2 client ------------------------------------------------------------------


class StompError(Exception):
    pass


class Conn(asyncio.Protocol):
    """One STOMP connection: frames are parsed from ``data_received`` without copies of
    the whole buffer, and what it writes in one callback goes out in one write."""

    def __init__(self) -> None:
        self.transport: asyncio.Transport | None = None
        self.buf = bytearray()
        self.connected: asyncio.Future[bytes] = asyncio.get_running_loop().create_future()
        self.receipts: dict[bytes, asyncio.Future[None]] = {}
        self.on_message: Callable[[bytes, bytes], None] | None = None
        self.on_receipt: Callable[[bytes], None] | None = None
        self.closed: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self.out: list[bytes] = []
        self.errors: list[bytes] = []

    @classmethod
    async def open(
        cls, port: int, vhost: str, login: str = "", passcode: str = "", host: str = "127.0.0.1"
    ) -> Conn:
        loop = asyncio.get_running_loop()
        _, conn = await loop.create_connection(cls, host, port)
        headers = f"accept-version:1.2\nhost:{vhost}\nheart-beat:0,0\n"
        if login:
            headers += f"login:{login}\npasscode:{passcode}\n"
        conn.write(f"CONNECT\n{headers}\n\x00".encode())
        await asyncio.wait_for(conn.connected, 30)
        return conn

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self.transport = transport
        sock = transport.get_extra_info("socket")
        if sock is not None:
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)

    def connection_lost(self, exc: Exception | None) -> None:
        error = StompError(f"connection lost: {exc or 'closed'} {self.errors[-1:]!r}")
        futures: list[asyncio.Future[Any]] = [self.connected, *self.receipts.values()]
        for fut in futures:
            if not fut.done():
                fut.set_exception(error)
        if not self.closed.done():
            self.closed.set_result(None)

    def write(self, data: bytes) -> None:
        assert self.transport is not None
        self.transport.write(data)

    def data_received(self, data: bytes) -> None:
        buf = self.buf
        buf += data
        pos = 0
        n = len(buf)
        while True:
            while pos < n and buf[pos] in (10, 13):  # heart-beat EOLs
                pos += 1
            hend = buf.find(b"\n\n", pos)
            if hend < 0:
                break
            head = bytes(buf[pos:hend])
            i = head.find(b"\ncontent-length:")
            if i >= 0:
                j = head.find(b"\n", i + 1)
                end = hend + 2 + int(head[i + 16 : j if j >= 0 else len(head)])
                if n <= end:
                    break
            else:
                end = buf.find(b"\x00", hend + 2)
                if end < 0:
                    break
            body = bytes(buf[hend + 2 : end])
            pos = end + 1
            self.frame(head, body)
        if pos:
            del buf[:pos]
        if self.out:
            self.write(b"".join(self.out))
            self.out.clear()

    def frame(self, head: bytes, body: bytes) -> None:
        if head.startswith(b"MESSAGE\n"):
            assert self.on_message is not None
            self.on_message(head, body)
        elif head.startswith(b"RECEIPT\n"):
            rid = _header(head, b"receipt-id")
            fut = self.receipts.pop(rid, None)
            if fut is not None and not fut.done():
                fut.set_result(None)
            if self.on_receipt is not None:
                self.on_receipt(rid)
        elif head.startswith(b"CONNECTED\n"):
            if not self.connected.done():
                self.connected.set_result(head)
        elif head.startswith(b"ERROR\n"):
            self.errors.append(head + b"\n" + body)
            print(f"  ERROR from the broker: {head!r} {body[:200]!r}", file=sys.stderr)

    def receipt(self, rid: bytes) -> asyncio.Future[None]:
        fut: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self.receipts[rid] = fut
        return fut

    async def request(self, frame: str, rid: str) -> None:
        fut = self.receipt(rid.encode())
        self.write(frame.replace("\n\n", f"\nreceipt:{rid}\n\n", 1).encode())
        await asyncio.wait_for(fut, 30)

    async def close(self) -> None:
        if self.transport is None or self.transport.is_closing():
            return
        try:
            await self.request("DISCONNECT\n\n\x00", "bye")
        except (StompError, TimeoutError):
            pass
        self.transport.close()


def _header(head: bytes, name: bytes) -> bytes:
    i = head.find(b"\n" + name + b":")
    if i < 0:
        return b""
    start = i + len(name) + 2
    j = head.find(b"\n", start)
    return head[start : j if j >= 0 else len(head)]


# -- brokers ----------------------------------------------------------------------------------


@dataclass
class Broker:
    name: str
    port: int
    vhost: str
    login: str = ""
    passcode: str = ""
    pid: int | None = None
    #: Extra headers (SUBSCRIBE, SEND) per destination flavour.
    headers: dict[str, tuple[str, str]] = field(default_factory=dict)

    async def connect(self) -> Conn:
        return await Conn.open(self.port, self.vhost, self.login, self.passcode)


def qgate_broker(port: int, pid: int) -> Broker:
    return Broker(
        "qgate",
        port,
        "bench",
        pid=pid,
        headers={
            # persistent:false on first use makes the queue transient (memory).
            "transient": ("persistent:false\n", "persistent:false\n"),
            "durable": ("", ""),
            "topic": ("persistent:false\n", "persistent:false\nexpiration:60000\n"),
        },
    )


def rabbit_broker(port: int) -> Broker:
    return Broker(
        "RabbitMQ",
        port,
        "/",
        "guest",
        "guest",
        pid=_find_pid("beam.smp"),
        headers={
            # The queue's properties on every frame that may declare it (they must agree).
            "transient": (
                "durable:false\nauto-delete:true\nexclusive:false\n",
                "durable:false\nauto-delete:true\nexclusive:false\npersistent:false\n",
            ),
            "durable": (
                "durable:true\nauto-delete:true\nexclusive:false\n",
                "durable:true\nauto-delete:true\nexclusive:false\npersistent:true\n",
            ),
            "topic": ("", "expiration:60000\n"),
        },
    )


def _find_pid(comm: str) -> int | None:
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                if (entry / "comm").read_text().strip() == comm:
                    return int(entry.name)
            except OSError:
                continue
    return None


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def port_open(port: int) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=1):
            return True
    except OSError:
        return False


class QGateServer:
    """``qgate serve`` on a free port with a temporary SQLite database."""

    def __init__(self, workdir: Path, workers: int = 1) -> None:
        self.workdir = workdir
        self.port = free_port()
        self.config = workdir / "qgate.toml"
        self.config.write_text(
            f"""
[server]
workers = {workers}
[storage]
url = "sqlite:///{workdir}/qgate.db"
synchronous = "FULL"
[[listeners]]
protocol = "stomp"
endpoint = "tcp:{self.port}:interface=127.0.0.1:backlog=1024"
"""
        )
        self.log = open(workdir / "serve.log", "ab")  # noqa: SIM115 - closed in stop()
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "qgate.gateway.cli", "--log-level", "warn", "serve"]
            + ["-c", str(self.config)],
            cwd=workdir,
            stdout=self.log,
            stderr=subprocess.STDOUT,
            env={**os.environ, "PYTHONPATH": str(ROOT)},
        )

    async def ready(self) -> None:
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError("qgate serve exited:\n" + self.output())
            try:
                conn = await Conn.open(self.port, "bench")
                await conn.close()
                return
            except OSError:
                await asyncio.sleep(0.1)
        raise RuntimeError("qgate serve did not answer:\n" + self.output())

    def output(self) -> str:
        return (self.workdir / "serve.log").read_text(errors="replace")

    def stop(self) -> None:
        self.proc.send_signal(signal.SIGTERM)
        try:
            self.proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
        self.log.close()


# -- process statistics -----------------------------------------------------------------------


def cpu_seconds(pid: int | None) -> float:
    """User + system CPU seconds of a process (all its threads) and of its live children
    (the workers of a qgate hub)."""
    if pid is None:
        return 0.0
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        children = Path(f"/proc/{pid}/task/{pid}/children").read_text().split()
    except OSError:
        return 0.0
    own = (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
    return own + sum(cpu_seconds(int(child)) for child in children)


def rss_kib(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    raise RuntimeError(f"no VmRSS for {pid}")


# -- scenarios --------------------------------------------------------------------------------


@dataclass(frozen=True)
class Scenario:
    key: str
    title: str
    kind: str  # queue or topic
    flavour: str  # transient, durable or topic
    ack: str
    consumers: int = 1


SCENARIOS = (
    Scenario("q-transient-auto", "queue transient, ack auto", "queue", "transient", "auto"),
    Scenario(
        "q-transient-ci",
        "queue transient, client-individual",
        "queue",
        "transient",
        "client-individual",
    ),
    Scenario("q-durable-auto", "queue durable, ack auto", "queue", "durable", "auto"),
    Scenario(
        "q-durable-ci", "queue durable, client-individual", "queue", "durable", "client-individual"
    ),
    Scenario("topic-4", "topic, 1 -> 4 subscribers, ack auto", "topic", "topic", "auto", 4),
)


@dataclass
class Result:
    rate: float
    server_cpu: float
    client_cpu: float
    errors: int


class Consumer:
    def __init__(self, conn: Conn, ack: str, wake: Callable[[], None]) -> None:
        self.conn = conn
        self.received = 0
        self.ack = ack
        self.wake = wake
        conn.on_message = self.message

    def message(self, head: bytes, body: bytes) -> None:
        self.received += 1
        if self.ack != "auto":
            self.conn.out.append(b"ACK\nid:" + _header(head, b"ack") + b"\n\n\x00")
        if self.received % 500 == 0:
            self.wake()


async def run_scenario(
    broker: Broker, sc: Scenario, seconds: float, warmup: float, profile: Path | None
) -> Result:
    sub_headers, send_headers = broker.headers[sc.flavour]
    name = f"bench.{sc.key}.{os.urandom(3).hex()}"
    destination = f"/{sc.kind}/{name}"
    wake_event = asyncio.Event()
    consumers: list[Consumer] = []
    for i in range(sc.consumers):
        conn = await broker.connect()
        consumers.append(Consumer(conn, sc.ack, wake_event.set))
        prefetch = f"prefetch-count:{PREFETCH}\n" if sc.ack != "auto" else ""
        await conn.request(
            f"SUBSCRIBE\ndestination:{destination}\nid:s{i}\nack:{sc.ack}\n{prefetch}"
            f"{sub_headers}\n\x00",
            f"sub{i}",
        )
    producer = await broker.connect()
    head = (
        f"SEND\ndestination:{destination}\ncontent-type:application/octet-stream\n"
        f"{send_headers}content-length:{len(BODY)}\n"
    ).encode()
    plain = head + b"\n" + BODY + b"\x00"
    outstanding: set[bytes] = set()

    def receipt_done(rid: bytes) -> None:
        outstanding.discard(rid)
        wake_event.set()

    producer.on_receipt = receipt_done
    sent = 0
    running = True

    def slowest() -> int:
        return min(c.received for c in consumers)

    async def produce() -> None:
        nonlocal sent
        while running:
            if sent - slowest() >= WINDOW or len(outstanding) >= MAX_RECEIPTS:
                wake_event.clear()
                if sent - slowest() >= WINDOW or len(outstanding) >= MAX_RECEIPTS:
                    try:
                        await asyncio.wait_for(wake_event.wait(), 0.05)
                    except TimeoutError:
                        pass
                continue
            frames = []
            for _ in range(BURST):
                sent += 1
                if sent % RECEIPT_EVERY == 0:
                    rid = str(sent).encode()
                    outstanding.add(rid)
                    frames.append(head + b"receipt:" + rid + b"\n\n" + BODY + b"\x00")
                else:
                    frames.append(plain)
            producer.write(b"".join(frames))
            await asyncio.sleep(0)

    task = asyncio.create_task(produce())
    await asyncio.sleep(warmup)
    start_count = slowest()
    start_cpu = cpu_seconds(broker.pid)
    start_client = time.process_time()
    start = time.perf_counter()
    spy = None
    if profile is not None and broker.name == "qgate":
        spy = subprocess.Popen(
            [
                str(Path(sys.executable).parent / "py-spy"),
                "record",
                "--pid",
                str(broker.pid),
                "--format",
                "raw",
                "--threads",
                "--rate",
                "250",
                "--duration",
                str(max(1, round(seconds))),
                "--output",
                str(profile / f"{sc.key}.txt"),
                "--nonblocking",
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
    await asyncio.sleep(seconds)
    count = slowest() - start_count
    elapsed = time.perf_counter() - start
    server_cpu = (cpu_seconds(broker.pid) - start_cpu) / elapsed
    client_cpu = (time.process_time() - start_client) / elapsed
    running = False
    await task
    # Drain: every consumer gets every message sent before the next scenario starts.
    deadline = time.monotonic() + 60
    while slowest() < sent and time.monotonic() < deadline:
        await asyncio.sleep(0.05)
    if spy is not None:
        spy.wait(timeout=60)
    errors = sum(len(c.conn.errors) for c in consumers) + len(producer.errors)
    if slowest() < sent:
        print(f"  {broker.name}: {sent - slowest()} messages not delivered", file=sys.stderr)
        errors += 1
    for c in consumers:
        await c.conn.close()
    await producer.close()
    return Result(count / elapsed, server_cpu, client_cpu, errors)


async def idle_memory(broker: Broker, count: int) -> tuple[float, int]:
    """(KiB of server RSS per idle connection, connections opened): CONNECTed clients
    without heart-beats that do nothing else. Stops early when the broker refuses more."""
    assert broker.pid is not None
    warm = [await broker.connect() for _ in range(20)]
    for c in warm:
        await c.close()
    await asyncio.sleep(0.5)
    before = rss_kib(broker.pid)
    conns: list[Conn] = []
    sem = asyncio.Semaphore(64)
    refused: list[BaseException] = []

    async def one() -> None:
        async with sem:
            if refused:
                return
            try:
                conns.append(await asyncio.wait_for(broker.connect(), 10))
            except (OSError, StompError, TimeoutError) as e:
                refused.append(e)

    await asyncio.gather(*(one() for _ in range(count)))
    await asyncio.sleep(1.0)
    after = rss_kib(broker.pid)
    if refused:
        print(
            f"  {broker.name} took {len(conns)} of {count} connections ({refused[0]!r})",
            file=sys.stderr,
        )
    print(
        f"  {broker.name}: RSS {before} KiB -> {after} KiB with {len(conns)} idle connections",
        flush=True,
    )
    for c in conns:
        assert c.transport is not None
        c.transport.close()
    await asyncio.sleep(0.5)
    return (after - before) / max(1, len(conns)), len(conns)


# -- profile summary --------------------------------------------------------------------------


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


# -- main -------------------------------------------------------------------------------------


def raise_fd_limit(want: int) -> None:
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < want:
        target = want if hard == resource.RLIM_INFINITY else min(want, hard)
        resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
        if target < want:
            print(f"  fd limit {target} < {want}: fewer connections will open", file=sys.stderr)


async def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--seconds", type=float, default=5.0, help="measured time per scenario")
    parser.add_argument("--warmup", type=float, default=1.0, help="unmeasured start per scenario")
    parser.add_argument("--connections", type=int, default=5000, help="idle connections (0: skip)")
    parser.add_argument("--brokers", default="qgate,rabbitmq")
    parser.add_argument("--rabbit-port", type=int, default=61623)
    parser.add_argument("--scenarios", default=",".join(s.key for s in SCENARIOS))
    parser.add_argument("--profile", type=Path, help="py-spy profiles of qgate go here")
    parser.add_argument("--workers", type=int, default=1, help="[server] workers of qgate")
    args = parser.parse_args(argv)
    names = set(args.brokers.split(","))
    scenarios = [s for s in SCENARIOS if s.key in args.scenarios.split(",")]
    # 2 fds per connection here and one in the server, plus slack (the server inherits it).
    raise_fd_limit(2 * args.connections + 1024)
    if args.profile is not None:
        args.profile.mkdir(parents=True, exist_ok=True)

    brokers: list[Broker] = []
    workdir = Path(tempfile.mkdtemp(prefix="qgate-bench-"))
    server = None
    try:
        if "qgate" in names:
            server = QGateServer(workdir, args.workers)
            await server.ready()
            brokers.append(qgate_broker(server.port, server.proc.pid))
        if "rabbitmq" in names:
            if port_open(args.rabbit_port):
                brokers.append(rabbit_broker(args.rabbit_port))
            else:
                print(RABBIT_SETUP.format(port=args.rabbit_port), file=sys.stderr)
                if len(names) == 1:
                    return 2
        print(
            f"# STOMP benchmark: {args.seconds:g} s per scenario after {args.warmup:g} s warm-up,"
            f" {len(BODY)} B bodies, {os.cpu_count()} CPUs"
        )
        results: dict[tuple[str, str], Result] = {}
        for sc in scenarios:
            for broker in brokers:
                r = await run_scenario(broker, sc, args.seconds, args.warmup, args.profile)
                results[(sc.key, broker.name)] = r
                print(
                    f"  {sc.title:<38} {broker.name:<9} {r.rate:>10,.0f} msgs/s"
                    f"  server CPU {100 * r.server_cpu:4.0f}%  client CPU"
                    f" {100 * r.client_cpu:4.0f}%" + (f"  ERRORS {r.errors}" if r.errors else ""),
                    flush=True,
                )
        memory: dict[str, tuple[float, int]] = {}
        if args.connections:
            for broker in brokers:
                if broker.pid is not None:
                    memory[broker.name] = await idle_memory(broker, args.connections)

        print_table(scenarios, brokers, results, memory)
        if args.profile is not None:
            for sc in scenarios:
                summarize_profile(args.profile / f"{sc.key}.txt")
        if any(r.errors for r in results.values()):
            if server is not None:
                print("\nqgate serve's log:\n" + server.output()[-4000:], file=sys.stderr)
            return 1
        return 0
    finally:
        if server is not None:
            server.stop()
        shutil.rmtree(workdir, ignore_errors=True)


def print_table(
    scenarios: list[Scenario],
    brokers: list[Broker],
    results: dict[tuple[str, str], Result],
    memory: dict[str, tuple[float, int]],
) -> None:
    names = [b.name for b in brokers]
    print()
    header = f"| {'scenario':<38} |" + "".join(f" {n + ' msgs/s':>16} |" for n in names)
    if len(names) == 2:
        header += " qgate/RabbitMQ |"
    print(header)
    rule = "|" + "-" * 40 + "|" + "".join("-" * 18 + "|" for _ in names)
    print(rule + ("-" * 16 + "|" if len(names) == 2 else ""))
    for sc in scenarios:
        row = f"| {sc.title:<38} |"
        rates = [results[(sc.key, n)].rate for n in names]
        row += "".join(f" {r:>16,.0f} |" for r in rates)
        if len(names) == 2:
            row += f" {rates[0] / rates[1]:>13.2f}x |" if rates[1] else f" {'-':>14} |"
        print(row)
    print()
    for name, (kib, opened) in memory.items():
        print(f"{name}: {kib:.1f} KiB RSS per idle STOMP connection ({opened} open)")


if __name__ == "__main__":
    sys.exit(asyncio.run(main()))
