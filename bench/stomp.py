"""STOMP benchmark: qgate's default (durable) and transient queues beside RabbitMQ's STOMP
plugin, one load client, one machine, one run.

    python -m bench.stomp [--seconds 5] [--connections 5000] [--brokers qgate,transient,rabbitmq]
                          [--serve-args "--workers 2"] [--stomp 127.0.0.1:61613]
                          [--profile DIR]

Columns (each scenario runs against each in turn):

- qgate default: ``qgate serve`` as configured out of the box (a subprocess on a free port,
  SQLite with ``synchronous = "FULL"``, queues created durable on first use) and frames
  with no qgate-specific header: SEND has no ``persistent`` header unless the scenario says;
- qgate transient: the same server, ``persistent:false`` on SUBSCRIBE and SEND (the queue
  created on first use is transient: memory);
- RabbitMQ: its STOMP plugin on ``--rabbit-port`` (61623; ``bench/rabbitmq-stomp.sh`` sets
  it up), its defaults for ``/queue/`` (a durable queue; messages persistent only with
  ``persistent:true``) with ``auto-delete:true`` so the runs leave nothing behind.

Scenarios (1 KiB bodies, one producer): 1 -> 1 consumer with ``ack:auto``; the same with
``ack:client-individual`` (an ACK per message, ``prefetch-count:1000``); the same as the
first with ``persistent:true`` on every SEND; 1 -> 4 subscribers of a ``/topic/``. The
producer asks for a RECEIPT on every 100th SEND and keeps at most ``WINDOW`` messages ahead
of the slowest consumer, so the rate is what goes through end to end, not what piles up.
msgs/s counts messages received by every consumer (a topic message counts once, though 4
copies go out). Then: the memory one idle STOMP connection costs qgate (RSS growth of its
processes with ``--connections`` connected clients, divided by their number; target
<= 50 KiB), and RabbitMQ's for comparison.

``--stomp HOST:PORT`` measures an already-running qgate (e.g. ``qgate serve --workers 2``)
instead of starting one; ``--serve-args`` is passed to the one it starts. With
``--profile DIR`` py-spy samples the qgate server through each scenario's measured window
(``DIR/<scenario>-<column>.txt``, collapsed stacks) and the heaviest functions are printed.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import resource
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from bench._common import (
    CpuMeter,
    QgateServer,
    Target,
    external_target,
    need_psutil,
    port_open,
)
from bench._common import print_table as print_table_md
from bench._profile import spy_on, summarize_profile
from bench._stomp_client import Conn, StompError, header

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
RabbitMQ's STOMP plugin is not answering on 127.0.0.1:{port}. To enable it (idempotent, no
restart, never on qgate's 61613): sudo bench/rabbitmq-stomp.sh (see docs/stomp.md).
Or run with --brokers qgate,transient."""


# -- brokers ----------------------------------------------------------------------------------


@dataclass
class Broker:
    """A column of the table: where to connect, which headers its frames carry, and the
    server processes whose CPU and memory count."""

    name: str
    port: int
    vhost: str
    target: Target
    login: str = ""
    passcode: str = ""
    host: str = "127.0.0.1"
    #: Extra headers (SUBSCRIBE, SEND) per destination kind (queue, topic).
    headers: dict[str, tuple[str, str]] = field(default_factory=dict)
    #: Profile this column's server with py-spy when --profile is given.
    profile: bool = False

    async def connect(self) -> Conn:
        return await Conn.open(self.port, self.vhost, self.login, self.passcode, self.host)


def qgate_broker(host: str, port: int, target: Target, transient: bool) -> Broker:
    if transient:
        # persistent:false on first use makes the queue transient (memory).
        flags = ("persistent:false\n", "persistent:false\n")
        return Broker(
            "qgate transient",
            port,
            "bench",
            target,
            host=host,
            headers={"queue": flags, "topic": flags},
            profile=True,
        )
    return Broker(
        "qgate default", port, "bench", target, host=host, headers={"queue": ("", "")}, profile=True
    )


def rabbit_broker(port: int) -> Broker:
    # The queue's properties on every frame that may declare it (they must agree): RabbitMQ's
    # /queue/ defaults (durable, not exclusive) but auto-deleted when the consumer leaves.
    props = "durable:true\nauto-delete:true\nexclusive:false\n"
    pid = _find_pid("beam.smp")
    return Broker(
        "RabbitMQ",
        port,
        "/",
        Target(pids=[pid] if pid else [], label="RabbitMQ"),
        "guest",
        "guest",
        headers={"queue": (props, props)},
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


# -- process statistics -----------------------------------------------------------------------


def rss_kib(target: Target) -> int:
    """Resident memory of all the target's processes, KiB."""
    total = 0
    psutil = need_psutil()
    for proc in target.processes():
        try:
            total += proc.memory_info().rss // 1024
        except psutil.Error:
            continue
    return total


# -- scenarios --------------------------------------------------------------------------------


@dataclass(frozen=True)
class Scenario:
    key: str
    title: str
    kind: str  # queue or topic
    ack: str
    consumers: int = 1
    #: Extra SEND headers of the scenario itself (every column gets them).
    send: str = ""


SCENARIOS = (
    Scenario("auto", "1 -> 1 queue, ack auto", "queue", "auto"),
    Scenario("ci", "1 -> 1 queue, ack client-individual", "queue", "client-individual"),
    Scenario(
        "persistent",
        "1 -> 1 queue, ack auto, persistent:true",
        "queue",
        "auto",
        send="persistent:true\n",
    ),
    # expiration: topic copies nobody reads must not pile up.
    Scenario(
        "topic",
        "1 -> 4 /topic/ subscribers, ack auto",
        "topic",
        "auto",
        4,
        send="expiration:60000\n",
    ),
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
            self.conn.out.append(b"ACK\nid:" + header(head, b"ack") + b"\n\n\x00")
        if self.received % 500 == 0:
            self.wake()


async def run_scenario(
    broker: Broker, sc: Scenario, seconds: float, warmup: float, profile: Path | None
) -> Result:
    subheaders, sendheaders = broker.headers.get(sc.kind, ("", ""))
    sendheaders += sc.send
    if "persistent:false" in sendheaders and "persistent:true" in sendheaders:
        sendheaders = sendheaders.replace("persistent:false\n", "")
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
            f"{subheaders}\n\x00",
            f"sub{i}",
        )
    producer = await broker.connect()
    head = (
        f"SEND\ndestination:{destination}\ncontent-type:application/octet-stream\n"
        f"{sendheaders}content-length:{len(BODY)}\n"
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
    meter = CpuMeter(broker.target)
    meter.start()
    start_client = time.process_time()
    start = time.perf_counter()
    spy = None
    if profile is not None and broker.profile and broker.target.pids:
        spy = spy_on(broker.target.pids[0], seconds, profile / profile_name(sc, broker))
    await asyncio.sleep(seconds)
    count = slowest() - start_count
    elapsed = time.perf_counter() - start
    server_cpu = sum(meter.stop().values())
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
    warm = [await broker.connect() for _ in range(20)]
    for c in warm:
        await c.close()
    await asyncio.sleep(0.5)
    before = rss_kib(broker.target)
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
    after = rss_kib(broker.target)
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


# -- main -------------------------------------------------------------------------------------


def raise_fd_limit(want: int) -> None:
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < want:
        target = want if hard == resource.RLIM_INFINITY else min(want, hard)
        resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
        if target < want:
            print(f"  fd limit {target} < {want}: fewer connections will open", file=sys.stderr)


async def stomp_ready(host: str, port: int, timeout: float = 30) -> None:
    """Wait until a STOMP CONNECT is answered (a listening port may not serve yet)."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            conn = await Conn.open(port, "bench", host=host)
            await conn.close()
            return
        except (OSError, StompError, TimeoutError):
            if time.monotonic() > deadline:
                raise
            await asyncio.sleep(0.2)


def profile_name(sc: Scenario, broker: Broker) -> str:
    return f"{sc.key}-{broker.name.replace(' ', '-')}.txt"


async def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    names = set(args.brokers.split(","))
    scenarios = [s for s in SCENARIOS if s.key in args.scenarios.split(",")]
    # 2 fds per connection here and one in the server, plus slack (the server inherits it).
    raise_fd_limit(2 * args.connections + 1024)
    if args.profile is not None:
        args.profile.mkdir(parents=True, exist_ok=True)

    brokers: list[Broker] = []
    server = None
    try:
        if names & {"qgate", "transient"}:
            if args.stomp:
                target = external_target(None, args.stomp)
                assert target.stomp is not None
                host, port = target.stomp
            else:
                server = QgateServer(
                    "sqlite:///qgate.db", http=False, stomp=True, serve_args=args.serve_args
                )
                target = server.target()
                host, port = "127.0.0.1", server.stomp_port or 0
            await stomp_ready(host, port)
            if "qgate" in names:
                brokers.append(qgate_broker(host, port, target, transient=False))
            if "transient" in names:
                brokers.append(qgate_broker(host, port, target, transient=True))
        if "rabbitmq" in names:
            if port_open("127.0.0.1", args.rabbit_port):
                brokers.append(rabbit_broker(args.rabbit_port))
            else:
                print(RABBIT_SETUP.format(port=args.rabbit_port), file=sys.stderr)
                if not brokers:
                    return 2
        where = args.stomp or f"qgate serve {args.serve_args}".strip()
        print(
            f"# STOMP benchmark: {args.seconds:g} s per scenario after {args.warmup:g} s warm-up,"
            f" {len(BODY)} B bodies, {os.cpu_count()} CPUs; {where}"
        )
        results: dict[tuple[str, str], Result] = {}
        for sc in scenarios:
            for broker in brokers:
                r = await run_scenario(broker, sc, args.seconds, args.warmup, args.profile)
                results[(sc.key, broker.name)] = r
                print(
                    f"  {sc.title:<42} {broker.name:<15} {r.rate:>10,.0f} msgs/s"
                    f"  server CPU {100 * r.server_cpu:4.0f}%  client CPU"
                    f" {100 * r.client_cpu:4.0f}%" + (f"  ERRORS {r.errors}" if r.errors else ""),
                    flush=True,
                )
        memory: dict[str, tuple[float, int]] = {}
        if args.connections:
            seen: set[tuple[int, ...]] = set()
            for broker in brokers:
                pids = tuple(broker.target.pids)
                if pids and pids not in seen:  # qgate's two columns are one server
                    seen.add(pids)
                    name = "qgate" if broker.name.startswith("qgate") else broker.name
                    memory[name] = await idle_memory(broker, args.connections)

        print_table(scenarios, brokers, results, memory)
        if args.profile is not None:
            for sc in scenarios:
                for broker in brokers:
                    if broker.profile:
                        summarize_profile(args.profile / profile_name(sc, broker))
        if any(r.errors for r in results.values()):
            if server is not None:
                print("\nqgate serve's log:\n" + server.output(), file=sys.stderr)
            return 1
        return 0
    finally:
        if server is not None:
            server.stop()


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--seconds", type=float, default=5.0, help="measured time per scenario")
    parser.add_argument("--warmup", type=float, default=1.0, help="unmeasured start per scenario")
    parser.add_argument("--connections", type=int, default=5000, help="idle connections (0: skip)")
    parser.add_argument(
        "--brokers", default="qgate,transient,rabbitmq", help="columns, comma-separated"
    )
    parser.add_argument("--rabbit-port", type=int, default=61623)
    parser.add_argument("--scenarios", default=",".join(s.key for s in SCENARIOS))
    parser.add_argument("--serve-args", default="", help="extra arguments of qgate serve")
    parser.add_argument("--stomp", help="an already-running qgate's STOMP address (host:port)")
    parser.add_argument("--profile", type=Path, help="py-spy profiles of qgate go here")
    return parser.parse_args(argv)


def print_table(
    scenarios: list[Scenario],
    brokers: list[Broker],
    results: dict[tuple[str, str], Result],
    memory: dict[str, tuple[float, int]],
) -> None:
    names = [b.name for b in brokers]
    header = ["scenario"] + [f"{n} msgs/s" for n in names]
    ratio = "qgate default" in names and "RabbitMQ" in names
    if ratio:
        header.append("durable/RabbitMQ")
    rows = []
    for sc in scenarios:
        rates = {n: results[(sc.key, n)].rate for n in names}
        row = [sc.title] + [f"{rates[n]:,.0f}" for n in names]
        if ratio:
            rabbit = rates["RabbitMQ"]
            row.append(f"{rates['qgate default'] / rabbit:.2f}x" if rabbit else "-")
        rows.append(row)
    print_table_md(f"STOMP, {len(BODY)} B bodies", header, rows)
    print()
    for name, (kib, opened) in memory.items():
        target = " (target <= 50 KiB)" if name == "qgate" else ""
        print(f"{name}: {kib:.1f} KiB RSS per idle STOMP connection ({opened} open){target}")


if __name__ == "__main__":
    sys.exit(asyncio.run(main()))
