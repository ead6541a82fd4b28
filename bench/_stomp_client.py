"""A lean asyncio STOMP 1.2 client for the benchmarks: frames parsed from
``data_received`` without copies of the whole buffer, one write per callback."""

from __future__ import annotations

import asyncio
import socket
import sys
from collections.abc import Callable
from typing import Any


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
            rid = header(head, b"receipt-id")
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


def header(head: bytes, name: bytes) -> bytes:
    i = head.find(b"\n" + name + b":")
    if i < 0:
        return b""
    start = i + len(name) + 2
    j = head.find(b"\n", start)
    return head[start : j if j >= 0 else len(head)]
