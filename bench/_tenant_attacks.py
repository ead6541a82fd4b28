"""The attacks of ``bench.tenants``, each run in its own process (``python -m
bench._tenant_attacks NAME SPEC``, SPEC a JSON object): asyncio, non-blocking sockets, no
threads. A child prints ``READY`` once its setup is done (the measured window starts
there), then, at the end, one JSON line: what it sent and what it got back, by kind.

Connections come from 127.N.0.2 and up (N = 10 + the attack's place in the run), at most
``PER_SOURCE`` from one address (below the default ``[connections] max_per_ip``), so the
per-address cap does not hide the total one; the victim connects from 127.0.0.1.
"""

from __future__ import annotations

import asyncio
import json
import os
import re
import resource
import secrets
import ssl
import sys
import time
from collections import Counter
from collections.abc import Awaitable, Callable, Coroutine
from typing import Any

from qgate.protocols.avro.ipc import HandshakeRequest, frame, write_handshake_request

CLIENT_ID = "3381af92-2b9e-11e3-b191-71861300734c"
PER_SOURCE = 200
_LENGTH = re.compile(rb"\r\ncontent-length:\s*(\d+)", re.I)

Spec = dict[str, Any]


#: The second octet of this attack's addresses (``SPEC["net"]``): each attack has its own,
#: so the failed authentications of one are not held against the next.
NET = 10


def source(i: int) -> str:
    """The client address of the attacker's ``i``-th connection."""
    n = i // PER_SOURCE
    return f"127.{NET}.{n // 250}.{2 + n % 250}"


class Stats:
    def __init__(self) -> None:
        self.counts: Counter[str] = Counter()
        self.open = 0
        self.peak = 0
        self.errors: Counter[str] = Counter()

    def opened(self) -> None:
        self.counts["opened"] += 1
        self.open += 1
        self.peak = max(self.peak, self.open)

    def closed(self) -> None:
        self.open -= 1

    def error(self, text: str) -> None:
        self.errors[text[:90]] += 1


async def _connect(
    spec: Spec, port: int, src: str, sem: asyncio.Semaphore, tls: bool = False
) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
    context = None
    if tls:
        context = ssl.create_default_context()
        context.check_hostname = False
        context.verify_mode = ssl.CERT_NONE
    async with sem:
        return await asyncio.wait_for(
            asyncio.open_connection(
                "127.0.0.1", port, local_addr=(src, 0), ssl=context, limit=1 << 20
            ),
            10,
        )


def _left(deadline: float) -> float:
    return deadline - time.monotonic()


# -- holding connections ------------------------------------------------------------------------


async def _hold(
    spec: Spec,
    port: int,
    src: str,
    stats: Stats,
    sem: asyncio.Semaphore,
    first: bytes = b"",
    drip: bytes = b"",
    tls: bool = False,
) -> None:
    """Keep one connection open until the deadline, sending ``first`` and then one byte
    of ``drip`` a second; reopen it when the server closes it (after a second when it was
    closed at once)."""
    deadline = spec["deadline"]
    while _left(deadline) > 0:
        try:
            reader, writer = await _connect(spec, port, src, sem, tls)
        except (OSError, TimeoutError, ssl.SSLError) as e:
            stats.counts["connect failed"] += 1
            stats.error(type(e).__name__)
            await asyncio.sleep(1)
            continue
        stats.opened()
        began = time.monotonic()
        i = 0
        try:
            if first:
                writer.write(first)
            while True:
                left = _left(deadline)
                if left <= 0:
                    stats.counts["open at the end"] += 1
                    return
                try:
                    data = await asyncio.wait_for(reader.read(65536), min(left, 1.0))
                except TimeoutError:
                    if drip:
                        writer.write(drip[i : i + 1])
                        i = min(i + 1, len(drip) - 1)
                    continue
                if not data:
                    break
                if data.startswith(b"HTTP/1.1 101"):
                    stats.counts["upgraded"] += 1
                elif data.startswith((b"HTTP/1.1 ", b"ERROR")):
                    stats.error(data.split(b"\n", 1)[0].decode(errors="replace"))
        except (OSError, ssl.SSLError):
            pass
        finally:
            stats.closed()
            writer.close()
        held = time.monotonic() - began
        stats.counts["closed by the server"] += 1
        if held < 1:
            stats.counts["closed within 1 s"] += 1
            await asyncio.sleep(1)


async def _hold_many(spec: Spec, n: int, start: int, **kw: Any) -> Stats:
    stats = Stats()
    sem = asyncio.Semaphore(256)
    port = kw.pop("port")
    await asyncio.gather(
        *(_hold(spec, port, source(start + i), stats, sem, **kw) for i in range(n))
    )
    return stats


async def idle_stomp(spec: Spec) -> Stats:
    """Connections to the STOMP port that never send CONNECT."""
    return await _hold_many(spec, spec["connections"], spec.get("offset", 0), port=spec["stomp"])


async def slowloris(spec: Spec) -> Stats:
    """HTTP connections sending their request head one byte a second."""
    head = b"GET /v2/queues HTTP/1.1\r\nHost: x\r\nX-Slow: " + b"a" * 4000
    return await _hold_many(spec, spec["connections"], 0, port=spec["http"], drip=head)


async def ws_tls_idle(spec: Spec) -> Stats:
    """WebSockets to /stomp and STOMP/TLS connections, neither sending CONNECT."""
    upgrade = (
        b"GET /stomp HTTP/1.1\r\nHost: 127.0.0.1\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
        b"Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n"
        b"Sec-WebSocket-Protocol: v12.stomp\r\n\r\n"
    )
    n = spec["connections"] // 2
    ws, tls = await asyncio.gather(
        _hold_many(spec, n, 0, port=spec["http"], first=upgrade),
        _hold_many(spec, n, n, port=spec["tls"], tls=True),
    )
    ws.counts.update({f"tls {k}": v for k, v in tls.counts.items()})
    ws.errors.update({f"tls {k}": v for k, v in tls.errors.items()})
    ws.peak += tls.peak
    return ws


# -- STOMP producers ----------------------------------------------------------------------------


async def _stomp(
    spec: Spec, sem: asyncio.Semaphore, src: str = ""
) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
    reader, writer = await _connect(spec, spec["stomp"], src or source(0), sem)
    writer.write(
        f"CONNECT\naccept-version:1.2\nhost:attacker\nlogin:attacker\n"
        f"passcode:{spec['token']}\nheart-beat:0,0\n\n\x00".encode()
    )
    answer = await asyncio.wait_for(reader.readuntil(b"\x00"), 10)
    if not answer.lstrip(b"\r\n").startswith(b"CONNECTED"):
        writer.close()
        raise OSError(f"CONNECT answered {answer[:120]!r}")
    return reader, writer


def _message(frame: bytes) -> str:
    found = re.search(rb"\nmessage:([^\n]*)", frame)
    return found.group(1).decode(errors="replace") if found else frame[:60].decode(errors="replace")


async def _read_frames(reader: asyncio.StreamReader, stats: Stats) -> None:
    """Count what the server sends back (ERRORs by message) until it closes."""
    try:
        while True:
            data = await reader.readuntil(b"\x00")
            data = data.lstrip(b"\r\n")
            if data.startswith(b"ERROR"):
                stats.counts["ERROR"] += 1
                stats.error(_message(data))
            elif data.startswith(b"RECEIPT"):
                stats.counts["RECEIPT"] += 1
    except (asyncio.IncompleteReadError, asyncio.LimitOverrunError, OSError):
        return


async def _produce(
    spec: Spec,
    stats: Stats,
    sem: asyncio.Semaphore,
    make_frames: Callable[[], tuple[bytes, bytes, int]],
    limit: int | None = None,
) -> None:
    """SEND as fast as the server takes it until the deadline (or ``limit`` messages);
    ``make_frames`` gives (what to send first, a chunk of SENDs, messages in the chunk)."""
    deadline = spec["deadline"]
    while _left(deadline) > 0 and (limit is None or stats.counts["sent"] < limit):
        try:
            reader, writer = await _stomp(spec, sem)
        except (OSError, TimeoutError, asyncio.IncompleteReadError) as e:
            stats.counts["connect failed"] += 1
            stats.error(str(e))
            await asyncio.sleep(1)
            continue
        stats.opened()
        frames = asyncio.ensure_future(_read_frames(reader, stats))
        first, chunk, count = make_frames()
        writer.write(first)
        try:
            while not frames.done() and (left := _left(deadline)) > 0:
                if limit is not None and stats.counts["sent"] >= limit:
                    break
                writer.write(chunk)
                await asyncio.wait_for(writer.drain(), left)
                stats.counts["sent"] += count
                stats.counts["bytes sent"] += len(chunk)
        except (OSError, TimeoutError):
            pass
        finally:
            stats.closed()
            if limit is not None and not frames.done():
                writer.write(b"DISCONNECT\nreceipt:bye\n\n\x00")
                try:
                    await asyncio.wait_for(asyncio.shield(frames), 60)
                except TimeoutError:
                    pass
            writer.close()
            frames.cancel()
        if not frames.cancelled() and _left(deadline) > 0:
            stats.counts["reconnects"] += 1


def _sends(dest: str, size: int, count: int, headers: str = "") -> bytes:
    body = b"x" * size
    one = f"SEND\ndestination:{dest}\n{headers}content-length:{size}\n\n".encode() + body + b"\x00"
    return one * count


async def transient_flood(spec: Spec) -> Stats:
    """4 producers SENDing 64 KiB ``persistent:false`` messages to one transient queue."""
    stats, sem = Stats(), asyncio.Semaphore(8)
    chunk = _sends("/queue/tflood", 65536, 4, "persistent:false\n")
    await asyncio.gather(*(_produce(spec, stats, sem, lambda: (b"", chunk, 4)) for _ in range(4)))
    return stats


async def open_transaction(spec: Spec) -> Stats:
    """4 connections: BEGIN, then 250 kB SENDs in it, never committed."""
    stats, sem = Stats(), asyncio.Semaphore(8)
    chunk = _sends("/queue/tx", 250_000, 1, "transaction:t\n")
    begin = b"BEGIN\ntransaction:t\n\n\x00"
    await asyncio.gather(*(_produce(spec, stats, sem, lambda: (begin, chunk, 1)) for _ in range(4)))
    return stats


async def durable_flood(spec: Spec) -> Stats:
    """4 producers SENDing 1 KiB durable messages."""
    stats, sem = Stats(), asyncio.Semaphore(8)
    chunk = _sends("/queue/dflood", 1024, 16)
    await asyncio.gather(*(_produce(spec, stats, sem, lambda: (b"", chunk, 16)) for _ in range(4)))
    return stats


async def subscriptions(spec: Spec) -> Stats:
    """2 connections, each SUBSCRIBEing to 10,000 queues (again after being closed)."""
    stats, sem = Stats(), asyncio.Semaphore(8)
    n = spec["subscriptions"] // 2

    def frames(c: int) -> bytes:
        return b"".join(
            b"SUBSCRIBE\ndestination:/queue/sub%d_%d\nid:%d\n\n\x00" % (c, i, i) for i in range(n)
        )

    async def one(c: int) -> None:
        subs = frames(c)
        deadline = spec["deadline"]
        while _left(deadline) > 0:
            try:
                reader, writer = await _stomp(spec, sem)
            except (OSError, TimeoutError, asyncio.IncompleteReadError) as e:
                stats.counts["connect failed"] += 1
                stats.error(str(e))
                await asyncio.sleep(1)
                continue
            stats.opened()
            writer.write(subs)
            stats.counts["SUBSCRIBEs sent"] += n
            try:
                await asyncio.wait_for(writer.drain(), max(0.1, _left(deadline)))
                await asyncio.wait_for(_read_frames(reader, stats), max(0.1, _left(deadline)))
            except (OSError, TimeoutError):
                pass
            finally:
                stats.closed()
                writer.close()

    await asyncio.gather(one(0), one(1))
    return stats


# -- HTTP ---------------------------------------------------------------------------------------


def request(method: str, path: str, token: str, body: bytes = b"", ctype: str = "") -> bytes:
    return (
        f"{method} {path} HTTP/1.1\r\nHost: x\r\nClient-ID: {CLIENT_ID}\r\n"
        f"X-Project-Id: attacker\r\nX-Auth-Token: {token}\r\n"
        f"Content-Type: {ctype or 'application/json'}\r\nContent-Length: {len(body)}\r\n\r\n"
    ).encode() + body


async def exchange(
    reader: asyncio.StreamReader, writer: asyncio.StreamWriter, data: bytes
) -> tuple[int, bytes, bool]:
    """One request on a keep-alive connection: (status, body, whether the server closes)."""
    writer.write(data)
    head = await reader.readuntil(b"\r\n\r\n")
    status = int(head.split(b" ", 2)[1])
    lower = head.lower()
    length = _LENGTH.search(head)
    body = b""
    if length:
        body = await reader.readexactly(int(length.group(1)))
    elif b"transfer-encoding: chunked" in lower:
        while True:
            size = int((await reader.readuntil(b"\r\n")).split(b";")[0], 16)
            body += (await reader.readexactly(size + 2))[:-2]
            if size == 0:
                break
    return status, body, b"connection: close" in lower


async def _http_loop(
    spec: Spec,
    stats: Stats,
    sem: asyncio.Semaphore,
    src: str,
    next_request: Callable[[], bytes | None],
    timeout: float = 30,
    on_answer: Callable[[int, bytes], Awaitable[None]] | None = None,
) -> None:
    """Send ``next_request()`` one after the other on a keep-alive connection (a new one
    when the server closes), counting the answers by status, until the deadline."""
    deadline = spec["deadline"]
    while _left(deadline) > 0:
        try:
            reader, writer = await _connect(spec, spec["http"], src, sem)
        except (OSError, TimeoutError) as e:
            stats.counts["connect failed"] += 1
            stats.error(type(e).__name__)
            await asyncio.sleep(1)
            continue
        stats.opened()
        try:
            while (left := _left(deadline)) > 0:
                data = next_request()
                if data is None:
                    return
                status, body, close = await asyncio.wait_for(
                    exchange(reader, writer, data), min(left, timeout)
                )
                stats.counts[str(status)] += 1
                if status >= 400:
                    stats.error(f"{status} {body[:70].decode(errors='replace')}")
                if on_answer is not None:
                    await on_answer(status, body)
                if close:
                    break
        except (OSError, TimeoutError, asyncio.IncompleteReadError, ValueError, IndexError):
            if _left(deadline) > 0:
                stats.counts["cut"] += 1
        finally:
            stats.closed()
            writer.close()


async def _http_many(
    spec: Spec, connections: int, make: Callable[[int], Callable[[], bytes | None]], **kw: Any
) -> Stats:
    stats, sem = Stats(), asyncio.Semaphore(256)
    await asyncio.gather(
        *(_http_loop(spec, stats, sem, source(i), make(i), **kw) for i in range(connections))
    )
    return stats


async def long_polls(spec: Spec) -> Stats:
    """Long polls (claims with ``wait=5``), each re-issued at once when it is answered."""
    body = json.dumps({"ttl": 60, "grace": 60}).encode()
    reqs = [
        request("POST", f"/v2/queues/lp{k}/claims?limit=1&wait=5", spec["token"], body)
        for k in range(10)
    ]
    return await _http_many(spec, spec["connections"], lambda i: lambda: reqs[i % 10])


async def unknown_keys(spec: Spec) -> Stats:
    """24 connections asking with well-formed keys nobody issued, each a fresh id."""
    shape = spec["token"].split("_")

    def make(i: int) -> Callable[[], bytes]:
        def next_request() -> bytes:
            fake = f"qg_{secrets.token_hex(len(shape[1]) // 2 or 8)}_{secrets.token_urlsafe(32)}"
            return request("GET", "/v2/queues", fake)

        return next_request

    return await _http_many(spec, 24, make)


async def publish_flood(spec: Spec) -> Stats:
    """24 keep-alive connections POSTing one 200-byte message each, back to back."""
    body = json.dumps({"messages": [{"body": "x" * 200, "ttl": 300}]}).encode()
    req = request("POST", "/v2/queues/pflood/messages", spec["token"], body)
    return await _http_many(spec, 24, lambda i: lambda: req)


async def many_queues(spec: Spec) -> Stats:
    """8 connections creating queues q0, q1, ... up to ``queues`` of them."""
    counter = iter(range(spec["queues"]))

    def next_request() -> bytes | None:
        i = next(counter, None)
        return None if i is None else request("PUT", f"/v2/queues/fq{i}", spec["token"], b"{}")

    return await _http_many(spec, 8, lambda i: next_request)


async def avro_protocols(spec: Spec) -> Stats:
    """8 connections calling ``ping`` over Avro RPC, each call with a fresh client protocol
    under a random hash."""

    def next_request() -> bytes:
        text = json.dumps(
            {
                "protocol": "P" + secrets.token_hex(8),
                "namespace": "x",
                "messages": {"ping": {"request": [], "response": "boolean"}},
            }
        )
        handshake = write_handshake_request(
            HandshakeRequest(secrets.token_bytes(16), text, secrets.token_bytes(16))
        )
        call = frame(handshake + b"\x00" + b"\x08ping")
        return request("POST", "/avro", spec["token"], call, "avro/binary")

    return await _http_many(spec, 8, lambda i: next_request)


async def purge(spec: Spec) -> Stats:
    """Fill a queue with ``purge_messages`` durable messages (before the window), then,
    3 s into the window, purge it."""
    stats, sem = Stats(), asyncio.Semaphore(8)
    spec_fill = dict(spec, deadline=time.monotonic() + 1800)
    per = spec["purge_messages"] // 4
    chunk = _sends("/queue/purgeq", 200, 50)
    fills = [Stats() for _ in range(4)]
    await asyncio.gather(
        *(_produce(spec_fill, s, sem, lambda: (b"", chunk, 50), limit=per) for s in fills)
    )
    stats.counts["filled"] = sum(s.counts["sent"] for s in fills)
    reader, writer = await _connect(spec, spec["http"], source(0), sem)
    stats_req = request("GET", "/v2/queues/purgeq/stats", spec["token"])
    for _ in range(600):  # until what was sent is stored
        _, body, _ = await exchange(reader, writer, stats_req)
        total = json.loads(body)["messages"]["total"]
        if total >= stats.counts["filled"]:
            break
        await asyncio.sleep(0.5)
    stats.counts["queue size"] = total
    spec["deadline"] = time.monotonic() + spec["seconds"]
    print("READY", flush=True)
    await asyncio.sleep(3)
    began = time.monotonic()
    status, body, _ = await asyncio.wait_for(
        exchange(reader, writer, request("POST", "/v2/queues/purgeq/purge", spec["token"])), 600
    )
    stats.counts[f"purge {status} in ms"] = round((time.monotonic() - began) * 1000)
    writer.close()
    if (left := _left(spec["deadline"])) > 0:
        await asyncio.sleep(left)
    return stats


ATTACKS: dict[str, Callable[[Spec], Coroutine[Any, Any, Stats]]] = {
    "idle-stomp": idle_stomp,
    "slowloris": slowloris,
    "ws-tls-idle": ws_tls_idle,
    "transient-flood": transient_flood,
    "open-transaction": open_transaction,
    "durable-flood": durable_flood,
    "purge": purge,
    "subscriptions": subscriptions,
    "long-polls": long_polls,
    "unknown-keys": unknown_keys,
    "publish-flood": publish_flood,
    "queues": many_queues,
    "avro-protocols": avro_protocols,
}
#: Attacks that say READY themselves (after a setup outside the window).
OWN_READY = {"purge"}


def main(argv: list[str]) -> None:
    global NET
    name, spec = argv[0], json.loads(argv[1])
    NET = spec.get("net", NET)
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    spec["deadline"] = time.monotonic() + spec["seconds"]
    if name not in OWN_READY:
        print("READY", flush=True)
    stats = asyncio.run(ATTACKS[name](spec))
    usage = resource.getrusage(resource.RUSAGE_SELF)
    result = {
        "counts": dict(stats.counts),
        "peak open": stats.peak,
        "errors": dict(stats.errors.most_common(4)),
        "cpu": usage.ru_utime + usage.ru_stime,
        "pid": os.getpid(),
    }
    print(json.dumps(result), flush=True)


if __name__ == "__main__":
    main(sys.argv[1:])
