"""Fairness between tenants: a victim tenant's latency, quiet and while another tenant attacks.

    python -m bench.tenants [--quick] [--attacks a,b,...] [--no-quotas]
                            [--storage sqlite|postgres] [--seconds 15] [--rate 10]
                            [--purge-messages 200000] [--serve-args "--workers 2"]
                            [--quota KEY=VALUE ...] [--py-spy DIR]

Starts ``qgate serve`` (the default config but for its listeners: ``auth.mode = "keys"``,
HTTP, STOMP and STOMP/TLS on free ports of 127.0.0.1; ``--no-quotas`` sets every
``[quotas]`` value and ``[auth] failure_rate`` to 0, i.e. no quotas, no rate limits and no
throttling of failed authentications; the connection caps stay), creates the tenants
``victim`` and ``attacker`` with a key each, and starts the victim in its own process
(``python -m bench.tenants victim``): three loops, each ``--rate`` times a second, each
on its own:

* publish: ``POST /v2/queues/vq/messages`` (one message), on a new connection;
* claim: ``POST /v2/queues/vq/claims?limit=1`` then ``DELETE`` of the claimed message,
  on a new connection (the latency is both together);
* STOMP send: ``SEND`` to ``/queue/vs`` (durable) with a ``receipt``, timed to the
  RECEIPT, on one connection kept open (reopened after a failure).

A failure is any answer but the expected one, a refused or reset connection, or no
answer within 10 s. The victim connects from 127.0.0.1, the attacker from 127.N.0.2 and
up, N a new number for each attack (``bench/_tenant_attacks.py``: each attack a process
of its own; 20,000 idle connections take two, the descriptor limit being 20,000 a process
here).

The quiet baseline is measured first (twice ``--seconds``) and again at the end
(``--seconds``); the two are pooled. Then each attack for ``--seconds`` (its setup, e.g.
filling the queue to purge, before the window), with a quiet settle of 5 s after it. A
row's ratio is its p99 over the quiet p99 of the same run: the machine is shared, so
ratios hold better than absolute times. Beside it: what the attacker got (its answers
by kind), its CPU seconds, the server's peak RSS (hub and workers together) and CPU, and
the load average during the window.
"""

from __future__ import annotations

import argparse
import http.client
import json
import math
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from collections import Counter
from contextlib import ExitStack
from pathlib import Path
from typing import Any

from bench._common import ROOT, QgateServer, TemporaryDatabase, need_psutil, print_table
from bench._profile import spy_on
from qgate.core.quotas import QUOTA_KEYS

CLIENT_ID = "3381af92-2b9e-11e3-b191-71861300734c"
TIMEOUT = 10.0
KINDS = ("publish", "claim", "stomp")
#: Each attack: its parameters at full size and with ``--quick``.
ATTACKS: dict[str, tuple[str, dict[str, Any], dict[str, Any]]] = {
    "idle-stomp": (
        "20,000 idle STOMP TCP connections, no CONNECT",
        {"connections": 20_000},
        {"connections": 4000},
    ),
    "slowloris": (
        "slowloris: 3,000 HTTP conns, a header byte/s",
        {"connections": 3000},
        {"connections": 600},
    ),
    "ws-tls-idle": (
        "WebSocket /stomp + STOMP/TLS, no CONNECT",
        {"connections": 2000},
        {"connections": 400},
    ),
    "transient-flood": ("transient flood, 4 STOMP producers (64 KiB)", {}, {}),
    "open-transaction": ("BEGIN + 250 kB SENDs never committed, 4 conns", {}, {}),
    "durable-flood": ("durable flood, 4 STOMP producers (1 KiB)", {}, {}),
    "purge": ("purge of its own queue", {}, {}),
    "subscriptions": (
        "20,000 STOMP subscriptions on 2 connections",
        {"subscriptions": 20_000},
        {"subscriptions": 4000},
    ),
    "long-polls": (
        "5,000 long polls re-issued (wait=5)",
        {"connections": 5000},
        {"connections": 1000},
    ),
    "unknown-keys": ("well-formed unknown API keys, 24 conns", {}, {}),
    "publish-flood": ("publish flood, 24 HTTP connections", {}, {}),
    "queues": ("20,000 queues", {"queues": 20_000}, {"queues": 4000}),
    "avro-protocols": ("fresh Avro RPC client protocols, random hashes", {}, {}),
}
#: Attacks that need two processes (file descriptors).
SPLIT = {"idle-stomp"}


# -- the victim (its own process) ---------------------------------------------------------------


class Victim:
    """The three loops; each sample is a JSON line ``[start, kind, ms, ok, note]``."""

    def __init__(self, args: dict[str, Any], out: Any) -> None:
        self.args = args
        self.out = out
        self.lock = threading.Lock()
        self.headers = {
            "Client-ID": CLIENT_ID,
            "X-Project-Id": "victim",
            "X-Auth-Token": args["token"],
            "Content-Type": "application/json",
        }

    def record(self, start: float, kind: str, seconds: float, ok: bool, note: str = "") -> None:
        with self.lock:
            self.out.write(json.dumps([start, kind, seconds * 1000, ok, note[:100]]) + "\n")
            self.out.flush()

    def http(self, method: str, path: str, body: bytes | None = None) -> tuple[int, bytes]:
        conn = http.client.HTTPConnection(
            "127.0.0.1", self.args["http"], timeout=TIMEOUT, source_address=("127.0.0.1", 0)
        )
        try:
            conn.request(method, path, body, self.headers)
            response = conn.getresponse()
            return response.status, response.read()
        finally:
            conn.close()

    def publish(self) -> tuple[bool, str]:
        body = json.dumps({"messages": [{"body": {"n": 1}, "ttl": 600}]}).encode()
        status, data = self.http("POST", "/v2/queues/vq/messages", body)
        return status == 201, f"{status} {data[:60]!r}"

    def claim(self) -> tuple[bool, str]:
        body = json.dumps({"ttl": 60, "grace": 60}).encode()
        status, data = self.http("POST", "/v2/queues/vq/claims?limit=1", body)
        if status == 204:
            return True, "empty"
        if status != 201:
            return False, f"claim {status} {data[:60]!r}"
        href = json.loads(data)["messages"][0]["href"]
        status, data = self.http("DELETE", href)
        return status == 204, f"delete {status} {data[:60]!r}"

    def loop(self, kind: str) -> None:
        interval = 1.0 / self.args["rate"]
        step = getattr(self, kind)
        due = time.monotonic()
        while True:
            due += interval
            start, began = time.time(), time.perf_counter()
            try:
                ok, note = step()
            except (OSError, ValueError, KeyError, IndexError) as e:
                ok, note = False, f"{type(e).__name__}: {e}"
            self.record(start, kind, time.perf_counter() - began, ok, "" if ok else note)
            time.sleep(max(0.0, due - time.monotonic()))
            due = max(due, time.monotonic() - interval)

    def stomp_loop(self) -> None:
        interval = 1.0 / self.args["rate"]
        sock: socket.socket | None = None
        buf = b""
        n = 0
        due = time.monotonic()
        while True:
            due += interval
            start, began = time.time(), time.perf_counter()
            try:
                if sock is None:
                    sock = socket.create_connection(
                        ("127.0.0.1", self.args["stomp"]), TIMEOUT, ("127.0.0.1", 0)
                    )
                    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
                    sock.sendall(
                        f"CONNECT\naccept-version:1.2\nhost:victim\nlogin:victim\n"
                        f"passcode:{self.args['token']}\nheart-beat:0,0\n\n\x00".encode()
                    )
                    buf = b""
                    frame, buf = _read_frame(sock, buf)
                    if not frame.startswith(b"CONNECTED"):
                        raise OSError(f"CONNECT answered {frame[:80]!r}")
                n += 1
                sock.sendall(
                    b"SEND\ndestination:/queue/vs\nreceipt:%d\ncontent-length:100\n\n" % n
                    + b"v" * 100
                    + b"\x00"
                )
                frame, buf = _read_frame(sock, buf)
                ok = frame.startswith(b"RECEIPT") and b"receipt-id:%d\n" % n in frame + b"\n"
                note = "" if ok else f"{frame[:80]!r}"
            except (OSError, ValueError) as e:
                ok, note = False, f"{type(e).__name__}: {e}"
            if not ok and sock is not None:
                sock.close()
                sock = None
            self.record(start, "stomp", time.perf_counter() - began, ok, note)
            time.sleep(max(0.0, due - time.monotonic()))
            due = max(due, time.monotonic() - interval)


def _read_frame(sock: socket.socket, buf: bytes) -> tuple[bytes, bytes]:
    while True:
        buf = buf.lstrip(b"\r\n")
        end = buf.find(b"\x00")
        if end >= 0:
            return buf[:end], buf[end + 1 :]
        data = sock.recv(65536)
        if not data:
            raise OSError("closed by the server")
        buf += data


def run_victim(args: dict[str, Any]) -> None:
    with open(args["out"], "a") as out:
        victim = Victim(args, out)
        threads = [
            threading.Thread(target=victim.loop, args=("publish",), daemon=True),
            threading.Thread(target=victim.loop, args=("claim",), daemon=True),
            threading.Thread(target=victim.stomp_loop, daemon=True),
        ]
        for t in threads:
            t.start()
        signal.sigwait({signal.SIGTERM, signal.SIGINT})


# -- percentiles --------------------------------------------------------------------------------


def percentile(values: list[float], p: float) -> float:
    """Nearest-rank percentile of ``values`` (nan when empty)."""
    if not values:
        return math.nan
    ordered = sorted(values)
    return ordered[max(0, math.ceil(p / 100 * len(ordered)) - 1)]


def read_samples(path: Path) -> list[list[Any]]:
    samples = []
    with open(path) as f:
        for line in f:
            if line.endswith("\n"):
                samples.append(json.loads(line))
    return samples


class Window:
    """The victim's samples that started between ``start`` and ``end``."""

    def __init__(self, samples: list[list[Any]], spans: list[tuple[float, float]]) -> None:
        inside = [s for s in samples if any(a <= s[0] < b for a, b in spans)]
        self.ms = {k: [s[2] for s in inside if s[1] == k and s[3]] for k in KINDS}
        self.failures = Counter(s[1] for s in inside if not s[3])
        self.notes = Counter(f"{s[1]}: {s[4]}" for s in inside if not s[3])
        self.count = len(inside)

    def p(self, kind: str, q: float) -> float:
        return percentile(self.ms[kind], q)


# -- the server and its watch -------------------------------------------------------------------


class Watch:
    """The server's processes sampled every 0.5 s: peak RSS (all together) and CPU."""

    def __init__(self, pid: int) -> None:
        psutil = need_psutil()
        self.root = psutil.Process(pid)
        self.peak_rss = 0.0
        self.stop_flag = threading.Event()
        self.cpu0 = self.cpu()
        self.t0 = time.monotonic()
        self.thread = threading.Thread(target=self.run, daemon=True)
        self.thread.start()

    def procs(self) -> list[Any]:
        psutil = need_psutil()
        try:
            return [self.root, *self.root.children(recursive=True)]
        except psutil.Error:
            return []

    def cpu(self) -> float:
        total = 0.0
        for p in self.procs():
            try:
                t = p.cpu_times()
                total += t.user + t.system
            except Exception:  # noqa: BLE001 - a process that just ended
                pass
        return total

    def rss(self) -> float:
        total = 0.0
        for p in self.procs():
            try:
                total += p.memory_info().rss
            except Exception:  # noqa: BLE001
                pass
        return total / 2**20

    def run(self) -> None:
        while not self.stop_flag.wait(0.5):
            self.peak_rss = max(self.peak_rss, self.rss())

    def finish(self) -> tuple[float, float]:
        """(peak RSS MB, CPU as cores busy) since the start."""
        self.stop_flag.set()
        self.thread.join()
        self.peak_rss = max(self.peak_rss, self.rss())
        return self.peak_rss, (self.cpu() - self.cpu0) / (time.monotonic() - self.t0)


def qgate_cli(server: QgateServer, *args: str) -> str:
    done = subprocess.run(
        [sys.executable, "-m", "qgate.gateway.cli", *args, "-c", str(server.config)],
        cwd=server.workdir,
        capture_output=True,
        text=True,
        timeout=60,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
    )
    if done.returncode:
        raise RuntimeError(f"qgate {' '.join(args)}: {done.stderr}")
    return done.stdout.strip()


def auth_and_quotas(quotas: bool, overrides: list[str]) -> str:
    """The ``[auth]`` and ``[quotas]`` tables: keys; with ``quotas`` false every quota and
    rate 0 (none) and no throttling of failed authentications; ``overrides`` (``KEY=VALUE``)
    on top."""
    text = '[auth]\nmode = "keys"\n'
    values = {} if quotas else dict.fromkeys(QUOTA_KEYS, "0")
    if not quotas:
        text += "failure_rate = 0\n"
    for item in overrides:
        key, _, value = item.partition("=")
        values[key.strip()] = value.strip()
    if values:
        text += "[quotas]\n" + "".join(f"{k} = {v}\n" for k, v in values.items())
    return text


def config(workdir: Path, quotas: bool, tls_port: int, overrides: list[str]) -> str:
    """What ``qgate serve`` gets besides storage and the HTTP and STOMP listeners: auth,
    quotas and a STOMP/TLS listener (test certificates written into ``workdir``)."""
    sys.path.insert(0, str(ROOT))
    from tests.support.certs import make_certs

    certs = make_certs(workdir)
    return auth_and_quotas(quotas, overrides) + (
        f'[[listeners]]\nprotocol = "stomp"\nendpoint = "tcp:{tls_port}:interface=127.0.0.1"\n'
        f'[listeners.tls]\ncertificate = "{certs.server_cert}"\nkey = "{certs.server_key}"\n'
    )


def profile(pid: int, seconds: float, out: Path) -> list[subprocess.Popen[bytes]]:
    """py-spy recording each server process (hub and workers) for ``seconds``, without
    stopping them (``--nonblocking``), as collapsed stacks in ``out``-<pid>.txt."""
    psutil = need_psutil()
    pids = [pid, *(c.pid for c in psutil.Process(pid).children(recursive=True))]
    return [
        spy_on(p, seconds, Path(f"{out}-{p}.txt"), subprocesses=False, threads=False, rate=50)
        for p in pids
    ]


def run_attack(
    name: str, spec: dict[str, Any], watch_pid: int, spy: Path | None = None
) -> dict[str, Any]:
    """Start the attack's processes; when all say READY the window opens; it closes when
    they end. Returns the window, the attackers' results and the server's peak RSS/CPU."""
    parts = 2 if name in SPLIT else 1
    procs = []
    for i in range(parts):
        part = dict(spec)
        if parts > 1:
            part["connections"] = spec["connections"] // parts
            part["offset"] = i * part["connections"]
        procs.append(
            subprocess.Popen(
                [sys.executable, "-m", "bench._tenant_attacks", name, json.dumps(part)],
                stdout=subprocess.PIPE,
                text=True,
                env={**os.environ, "PYTHONPATH": str(ROOT)},
            )
        )
    for p in procs:
        assert p.stdout is not None
        line = p.stdout.readline()
        if line.strip() != "READY":
            raise RuntimeError(f"attack {name} did not start: {line!r}")
    start = time.time()
    load = os.getloadavg()[0]
    watch = Watch(watch_pid)
    spies = profile(watch_pid, spec["seconds"], spy / name) if spy else []
    results = []
    for p in procs:
        assert p.stdout is not None
        out = p.stdout.read()
        p.wait()
        results.append(json.loads(out.strip().splitlines()[-1]) if out.strip() else {})
    end = time.time()
    for spy_proc in spies:
        spy_proc.wait()
    rss, cpu = watch.finish()
    load = max(load, os.getloadavg()[0])
    merged: dict[str, Any] = {"counts": Counter(), "errors": Counter(), "cpu": 0.0, "peak": 0}
    for r in results:
        merged["counts"].update(r.get("counts", {}))
        merged["errors"].update(r.get("errors", {}))
        merged["cpu"] += r.get("cpu", 0.0)
        merged["peak"] += r.get("peak open", 0)
    return {"span": (start, end), "rss": rss, "server_cpu": cpu, "load": load, **merged}


def describe(result: dict[str, Any]) -> str:
    counts = result["counts"]
    parts = [f"{k} {v}" for k, v in counts.items() if k not in ("bytes sent",)]
    if "bytes sent" in counts:
        parts.append(f"{counts['bytes sent'] / 2**20:.0f} MB sent")
    if result["peak"]:
        parts.append(f"peak open {result['peak']}")
    text = ", ".join(parts)
    if result["errors"]:
        text += "; " + "; ".join(f"{v}x {k!r}" for k, v in result["errors"].most_common(2))
    return text


def fmt(v: float) -> str:
    return "-" if math.isnan(v) else (f"{v:.0f}" if v >= 100 else f"{v:.1f}")


def parse_args(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawTextHelpFormatter
    )
    parser.add_argument("--quick", action="store_true", help="5 s windows, smaller attacks")
    parser.add_argument(
        "--attacks", default=",".join(ATTACKS), help="comma-separated, of: " + ", ".join(ATTACKS)
    )
    parser.add_argument("--no-quotas", action="store_true", help="quotas, rates, auth throttle off")
    parser.add_argument("--storage", default="sqlite", choices=("sqlite", "postgres"))
    parser.add_argument("--seconds", type=float, help="each window (default 15, --quick 5)")
    parser.add_argument("--rate", type=float, default=10.0, help="victim calls/s of each kind")
    parser.add_argument("--purge-messages", type=int, help="default 200000, --quick 20000")
    parser.add_argument("--serve-args", default="", help='e.g. "--workers 2"')
    parser.add_argument(
        "--py-spy", type=Path, help="record the server during each attack into this directory"
    )
    parser.add_argument(
        "--quota",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="a [quotas] value (repeatable), e.g. request_rate=200",
    )
    parser.add_argument("--settle", type=float, default=5.0, help="quiet seconds after each attack")
    args = parser.parse_args(argv)
    names = [n.strip() for n in args.attacks.split(",") if n.strip()]
    unknown = [n for n in names if n not in ATTACKS]
    if unknown:
        parser.error(f"unknown attacks: {', '.join(unknown)}")
    for item in args.quota:
        if item.partition("=")[0].strip() not in QUOTA_KEYS:
            parser.error(f"--quota {item}: not KEY=VALUE with KEY one of {', '.join(QUOTA_KEYS)}")
    args.names = names
    return args


def main() -> None:
    if len(sys.argv) > 1 and sys.argv[1] == "victim":
        run_victim(json.loads(sys.argv[2]))
        return
    args = parse_args(sys.argv[1:])
    names = args.names
    seconds = args.seconds or (5.0 if args.quick else 15.0)
    if args.py_spy:
        args.py_spy.mkdir(parents=True, exist_ok=True)
    purge_messages = args.purge_messages or (20_000 if args.quick else 200_000)
    import resource

    resource.setrlimit(resource.RLIMIT_NOFILE, (resource.getrlimit(resource.RLIMIT_NOFILE)[1],) * 2)

    with ExitStack() as stack:
        if args.storage == "postgres":
            url = stack.enter_context(TemporaryDatabase("qgate_tenants")).url
        else:
            url = ""
        from bench._common import free_port

        tls_port = free_port()
        import tempfile

        workdir = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="qgate-tenants-")))
        server = stack.enter_context(
            QgateServer(
                url or f"sqlite:///{workdir}/q.db",
                stomp=True,
                serve_args=args.serve_args,
                extra_config=config(workdir, not args.no_quotas, tls_port, args.quota),
                workdir=workdir,
            )
        )
        tokens = {}
        for tenant in ("victim", "attacker"):
            qgate_cli(server, "tenant", "create", tenant)
            tokens[tenant] = qgate_cli(server, "key", "create", tenant)
        base = {"http": server.http_port, "stomp": server.stomp_port, "tls": tls_port}
        samples_path = workdir / "victim.jsonl"
        victim_args = {
            **base,
            "token": tokens["victim"],
            "rate": args.rate,
            "out": str(samples_path),
        }
        fill = json.dumps({"messages": [{"body": {"n": 0}, "ttl": 3600}] * 10}).encode()
        for _ in range(50):  # the claim loop never finds the queue empty
            conn = http.client.HTTPConnection("127.0.0.1", server.http_port, timeout=30)
            conn.request(
                "POST", "/v2/queues/vq/messages", fill, {**Victim(victim_args, None).headers}
            )
            assert conn.getresponse().status == 201
            conn.close()
        victim = subprocess.Popen(
            [sys.executable, "-m", "bench.tenants", "victim", json.dumps(victim_args)],
            env={**os.environ, "PYTHONPATH": str(ROOT)},
        )
        stack.callback(victim.wait)
        stack.callback(victim.terminate)
        time.sleep(2)  # warm-up, not measured
        print(
            f"qgate serve {args.serve_args} on {args.storage}, quotas "
            f"{'off' if args.no_quotas else 'default'}; windows {seconds:.0f} s; victim "
            f"{args.rate:g}/s each; load average {os.getloadavg()[0]:.2f}",
            file=sys.stderr,
        )
        quiet_spans = []
        watch = Watch(server.proc.pid)
        start = time.time()
        time.sleep(2 * seconds)
        quiet_spans.append((start, time.time()))
        quiet_rss, quiet_cpu = watch.finish()
        quiet_load = os.getloadavg()[0]
        rows = []
        spec = {
            **base,
            "token": tokens["attacker"],
            "seconds": seconds,
            "purge_messages": purge_messages,
        }
        for k, name in enumerate(names):
            title, full, quick = ATTACKS[name]
            print(f"  {name} ...", file=sys.stderr, flush=True)
            size = quick if args.quick else full
            result = run_attack(name, {**spec, **size, "net": 10 + k}, server.proc.pid, args.py_spy)
            rows.append((name, title, result))
            time.sleep(args.settle)
        start = time.time()
        time.sleep(seconds)
        quiet_spans.append((start, time.time()))
        samples = read_samples(samples_path)

    quiet = Window(samples, quiet_spans)
    header = [
        "attack",
        "publish p50/p99 ms",
        "claim p50/p99 ms",
        "STOMP send p50/p99 ms",
        "victim failures",
        "p99 / quiet p99 (pub, claim, send)",
        "server RSS MB, CPU",
        "load",
        "attacker CPU s",
        "what the attacker got",
    ]

    def cells(w: Window) -> list[str]:
        return [f"{fmt(w.p(k, 50))} / {fmt(w.p(k, 99))}" for k in KINDS]

    table = [
        [
            "quiet (before and after)",
            *cells(quiet),
            str(sum(quiet.failures.values())),
            "1",
            f"{quiet_rss:.0f}, {quiet_cpu:.2f}",
            f"{quiet_load:.1f}",
            "-",
            f"{quiet.count} victim samples",
        ]
    ]
    verdicts = []
    for name, title, result in rows:
        w = Window(samples, [result["span"]])
        ratios = [w.p(k, 99) / quiet.p(k, 99) for k in KINDS]
        failures = sum(w.failures.values())
        held = failures == 0 and all(r <= 2 for r in ratios)
        verdicts.append((name, held, w))
        table.append(
            [
                f"{title} [{name}]",
                *cells(w),
                str(failures) if not failures else f"**{failures}**",
                " / ".join(f"{r:.1f}" if r <= 2 else f"**{r:.1f}**" for r in ratios),
                f"{result['rss']:.0f}, {result['server_cpu']:.2f}",
                f"{result['load']:.1f}",
                f"{result['cpu']:.1f}",
                describe(result),
            ]
        )
    quotas = "off (--no-quotas)" if args.no_quotas else "default"
    if args.quota:
        quotas += ", " + ", ".join(args.quota)
    print_table(f"Victim latency under attack, quotas {quotas}, {args.storage}", header, table)
    print()
    for name, held, w in verdicts:
        line = f"{name}: {'within 2x, no failures' if held else 'NOT within target'}"
        if w.notes:
            line += "; failures: " + "; ".join(f"{v}x {k}" for k, v in w.notes.most_common(3))
        print(line)


if __name__ == "__main__":
    main()
