"""The HTTP API as tests drive it: an in-memory client over treq's StubTreq (no sockets),
the context the API resource is built from, and the Client-IDs requests carry."""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, TypeVar

from treq.testing import StubTreq
from twisted.internet import threads
from twisted.internet.defer import Deferred
from twisted.web.resource import IResource, Resource
from twisted.web.server import Request

from qgate.core.service import QueueService
from qgate.gateway.config import ListenerConfig
from qgate.protocols.context import ProtocolContext
from qgate.protocols.http import listener_factory
from qgate.protocols.http.settings import HTTPSettings
from tests.support.core import protocol_ctx

#: Client-IDs as python-zaqarclient sends them (any UUID form is accepted).
CLIENT = "3381af92-2b9e-11e3-b191-71861300734c"
OTHER_CLIENT = "7ab4e8c62b9e11e3b19171861300734d"

HTTP_TEST_CONFIG = HTTPSettings(max_wait=30.0, max_request_body=512 * 1024, idle_timeout=60.0)

_DEFAULT = object()

T = TypeVar("T")


def make_ctx(
    service: QueueService,
    *,
    http: HTTPSettings = HTTP_TEST_CONFIG,
    auth: Any = None,
    mounts: Mapping[bytes, IResource] | None = None,
    reactor: Any = None,
) -> ProtocolContext[HTTPSettings]:
    return protocol_ctx(service, http, reactor=reactor, auth=auth, mounts=mounts)


@dataclass
class Reply:
    status: int
    headers: dict[str, list[str]]
    body: bytes

    def header(self, name: str) -> str | None:
        values = self.headers.get(name.lower())
        return values[0] if values else None

    @property
    def json(self) -> Any:
        return json.loads(self.body)

    @property
    def bodies(self) -> list[Any]:
        """The bodies of the messages a listing, claim or pop answered, in order."""
        return [m["body"] for m in self.json["messages"]]


class Api:
    """An HTTP client for the API resource, in memory. Every request carries a Client-ID
    and ``X-Project-ID: p1`` unless told otherwise (pass ``None`` to leave one out)."""

    def __init__(self, resource: IResource, project: str = "p1") -> None:
        # StubTreq grows its request methods at run time, so mypy cannot see them.
        self.stub: Any = StubTreq(resource)
        self.project = project

    def flush(self) -> None:
        self.stub.flush()

    def start(
        self,
        method: str,
        path: str,
        json_body: Any = _DEFAULT,
        *,
        data: bytes | None = None,
        headers: Mapping[str, str | None] | None = None,
        project: Any = _DEFAULT,
        client: str | None = CLIENT,
    ) -> Deferred[Reply]:
        """Send a request; the Deferred fires once a reply is flushed through."""
        sent: dict[str, str | None] = {
            "X-Project-ID": self.project if project is _DEFAULT else project,
            "Client-ID": client,
        }
        if json_body is not _DEFAULT:
            data = json.dumps(json_body).encode()
            sent["Content-Type"] = "application/json"
        sent.update(headers or {})
        final = {k: v for k, v in sent.items() if v is not None}
        d = self.stub.request(method, f"http://qgate.test{path}", headers=final, data=data)

        async def read(response: Any) -> Reply:
            body = await response.content()
            raw = {
                k.decode().lower(): [v.decode() for v in vs]
                for k, vs in response.headers.getAllRawHeaders()
            }
            return Reply(response.code, raw, body)

        def reading(response: Any) -> Deferred[Reply]:
            reply = Deferred.fromCoroutine(read(response))
            self.flush()
            return reply

        d.addCallback(reading)
        self.flush()
        return d

    async def request(self, method: str, path: str, json_body: Any = _DEFAULT, **kw: Any) -> Reply:
        d = self.start(method, path, json_body, **kw)
        self.flush()
        reply: Reply = await d
        return reply

    async def send(self, method: str, path: str, data: bytes, content_type: str) -> Reply:
        """A request whose body is ``data`` as it is, declared as ``content_type``."""
        return await self.request(method, path, data=data, headers={"Content-Type": content_type})

    async def get(self, path: str, **kw: Any) -> Reply:
        return await self.request("GET", path, **kw)

    async def delete(self, path: str, **kw: Any) -> Reply:
        return await self.request("DELETE", path, **kw)

    async def put(self, path: str, json_body: Any = _DEFAULT, **kw: Any) -> Reply:
        return await self.request("PUT", path, json_body, **kw)

    async def post(self, path: str, json_body: Any = _DEFAULT, **kw: Any) -> Reply:
        return await self.request("POST", path, json_body, **kw)

    async def patch(self, path: str, changes: Any, **kw: Any) -> Reply:
        kw.setdefault(
            "headers", {"Content-Type": "application/openstack-messaging-v2.0-json-patch"}
        )
        return await self.request("PATCH", path, data=json.dumps(changes).encode(), **kw)

    async def bodies_of(self, queue: str, *, include_claimed: bool = False) -> list[Any]:
        """The bodies of (up to 20 of) the queue's messages, this client's own included."""
        query = "echo=true&limit=20" + ("&include_claimed=true" if include_claimed else "")
        reply = await self.get(f"/v2/queues/{queue}/messages?{query}")
        assert reply.status == 200, reply.body
        return reply.bodies

    async def post_messages(self, queue: str, *bodies: Any, **kw: Any) -> list[str]:
        reply = await self.post(
            f"/v2/queues/{queue}/messages",
            {"messages": [{"body": b, "ttl": 300} for b in bodies]},
            **kw,
        )
        assert reply.status == 201, reply.body
        return [href.rsplit("/", 1)[1] for href in reply.json["resources"]]


async def drive_listener(
    reactor: Any, ctx: ProtocolContext[HTTPSettings], drive: Callable[[str], T]
) -> T:
    """``drive(url)``, blocking, in a thread against the API of ``ctx`` on a real listener
    (a free port of 127.0.0.1 on the running ``reactor``), closed afterwards."""
    site = listener_factory(ctx, ListenerConfig("http", "tcp:0"))
    port = reactor.listenTCP(0, site, interface="127.0.0.1")
    try:
        return await threads.deferToThread(drive, f"http://127.0.0.1:{port.getHost().port}")
    finally:
        await port.stopListening()


class Mounted(Resource):
    """What another protocol would mount beside the API (``/stomp``)."""

    isLeaf = True

    def render_GET(self, request: Request) -> bytes:
        request.setHeader(b"Content-Type", b"text/plain")
        return b"stomp here"
