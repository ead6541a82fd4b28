"""Real local HTTP receivers for push tests: a Twisted web server on a free loopback port
whose answer the test sets (``mode``), keeping every request it got."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any

from twisted.internet import endpoints
from twisted.web import resource, server


@dataclass
class Got:
    headers: dict[str, str]
    body: bytes

    @property
    def message_id(self) -> str:
        return self.headers["x-qgate-message-id"]

    @property
    def document(self) -> Any:
        return json.loads(self.body)


class Receiver(resource.Resource):
    """Answers POSTs by ``mode``: ``ok`` (204), ``503`` and ``429`` (with Retry-After:
    ``retry_after``), ``hangup`` (closes the connection unanswered), ``stall`` (never
    answers), ``redirect`` (302 to ``/elsewhere``), ``big`` (a 200 with a large body)."""

    isLeaf = True

    def __init__(self) -> None:
        super().__init__()
        self.mode = "ok"
        self.retry_after = "1"
        self.got: list[Got] = []
        self.stalled: list[Any] = []

    def render_POST(self, request: Any) -> Any:  # noqa: N802 - twisted.web's name
        headers = {
            k.decode().lower(): v[0].decode() for k, v in request.requestHeaders.getAllRawHeaders()
        }
        self.got.append(Got(headers, request.content.read()))
        mode = self.mode
        if mode == "ok":
            request.setResponseCode(204)
            return b""
        if mode in ("503", "429"):
            request.setResponseCode(int(mode))
            request.setHeader(b"retry-after", self.retry_after.encode())
            return b"busy"
        if mode == "hangup":
            request.transport.abortConnection()
            return server.NOT_DONE_YET
        if mode == "stall":
            self.stalled.append(request)
            return server.NOT_DONE_YET
        if mode == "redirect":
            request.setResponseCode(302)
            request.setHeader(b"location", b"/elsewhere")
            return b""
        if mode == "big":
            request.setResponseCode(200)
            return b"x" * (4 * 1024 * 1024)
        raise AssertionError(mode)

    def ids(self) -> list[str]:
        return [g.message_id for g in self.got]


@dataclass
class Listening:
    receiver: Receiver
    port: Any
    number: int
    reactor: Any
    history: list[Any] = field(default_factory=list)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.number}/hook"

    async def down(self) -> None:
        await self.port.stopListening()
        self.port = None

    async def up(self) -> None:
        site = server.Site(self.receiver)
        endpoint = endpoints.TCP4ServerEndpoint(self.reactor, self.number, interface="127.0.0.1")
        self.port = await endpoint.listen(site)

    async def close(self) -> None:
        for request in self.receiver.stalled:
            if not request.finished:
                request.transport.abortConnection()
        if self.port is not None:
            await self.port.stopListening()


async def listen(reactor: Any) -> Listening:
    receiver = Receiver()
    site = server.Site(receiver)
    endpoint = endpoints.TCP4ServerEndpoint(reactor, 0, interface="127.0.0.1")
    port = await endpoint.listen(site)
    return Listening(receiver, port, port.getHost().port, reactor)
