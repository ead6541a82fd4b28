"""An early refusal over a real socket: a client still sending a large body reads the
answer (RFC 9112 9.6 closing), rather than a reset or ``Broken pipe``."""

from __future__ import annotations

import json
import socket
import urllib.error
import urllib.request
from typing import Any

import pytest
import pytest_twisted
from twisted.internet import threads

from qgate.core.service import QueueService
from qgate.gateway.config import ListenerConfig
from qgate.protocols.http import listener_factory
from qgate.storage.memory import MemoryStorage
from tests.support.core import TEST_LIMITS
from tests.support.http import CLIENT, make_ctx

BODY = 8 * 1024 * 1024  # 16 times the test listener's max_request_body (512 KiB)


def raw_client(port: int) -> bytes:
    """Send the headers and the whole body without reading, then read to the end."""
    head = (
        "POST /v2/queues/jobs/messages HTTP/1.1\r\nHost: qgate.test\r\n"
        f"Client-ID: {CLIENT}\r\nX-Project-ID: p1\r\nContent-Type: application/json\r\n"
        f"Content-Length: {BODY}\r\n\r\n"
    ).encode()
    with socket.create_connection(("127.0.0.1", port), timeout=20) as s:
        s.sendall(head)
        chunk = b" " * (256 * 1024)
        for _ in range(BODY // len(chunk)):
            s.sendall(chunk)
        s.shutdown(socket.SHUT_WR)
        received = b""
        while data := s.recv(65536):
            received += data
        return received


def urllib_client(port: int) -> tuple[int, Any]:
    request = urllib.request.Request(
        f"http://127.0.0.1:{port}/v2/queues/jobs/messages",
        data=b" " * BODY,
        headers={"Client-ID": CLIENT, "X-Project-ID": "p1", "Content-Type": "application/json"},
        method="POST",
    )
    try:
        with urllib.request.urlopen(request, timeout=20) as response:
            return response.status, json.loads(response.read())
    except urllib.error.HTTPError as e:
        return e.code, json.loads(e.read())


@pytest.mark.integration
@pytest_twisted.ensureDeferred
async def test_a_client_still_sending_a_large_body_reads_the_400(reactor: Any) -> None:
    service = QueueService(reactor, MemoryStorage(), MemoryStorage(), limits=TEST_LIMITS)
    site = listener_factory(make_ctx(service, reactor=reactor), ListenerConfig("http", "tcp:0"))
    port = reactor.listenTCP(0, site, interface="127.0.0.1")
    try:
        number = port.getHost().port
        raw = await threads.deferToThread(raw_client, number)
        via_urllib = await threads.deferToThread(urllib_client, number)
    finally:
        await port.stopListening()
    head, _, body = raw.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 400 "), raw[:200]
    expected = {
        "title": "Invalid API request",
        "description": "Message collection size is too large. Max size 262144",
    }
    assert json.loads(body) == expected
    assert via_urllib == (400, expected)
    assert await service.list_queues("p1") == []
