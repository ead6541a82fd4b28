"""STOMP destinations: what a ``destination`` header names, and the core queues one
connection makes on first use, its temporary queues among them.

Destinations (after RabbitMQ's STOMP plugin):

- ``/queue/NAME``: competing consumers; the subscription claims messages (``service.claim``
  with a lease renewed while the connection lives) and ACK deletes them.
- ``/topic/NAME``: every subscriber sees every message published after it subscribed
  (``service.observe`` from the newest marker). With ``durable:true`` and an ``id`` the
  position is a server-side cursor (``service.set_cursor``) advanced by acks.
- ``/temp-queue/NAME``: a private transient queue of this connection, deleted when it
  closes. In a SEND's ``reply-to`` it is rewritten to ``/reply-queue/<queue>``, which any
  client (or an HTTP client, as queue ``<queue>``) can send the reply to.

``/queue/NAME`` and ``/topic/NAME`` name the same core queue ``NAME``: a destination says
how a subscriber consumes, not where a message is stored.
"""

from __future__ import annotations

import uuid
from dataclasses import replace
from typing import Any, Protocol

from twisted.internet.defer import Deferred
from twisted.logger import Logger

from qgate.core.limits import NAME_RE
from qgate.core.model import QueueOptions
from qgate.protocols.stomp.codec import Frame
from qgate.protocols.stomp.errors import StompError

log = Logger()

DESTINATION_KINDS = ("queue", "topic", "temp-queue", "reply-queue")
#: Parsed destinations a connection remembers (it uses few, often).
MAX_REMEMBERED = 256


def parse_destination(destination: str) -> tuple[str, str]:
    """(kind, name) of ``/queue/NAME``, ``/topic/NAME``, ``/temp-queue/NAME`` or
    ``/reply-queue/NAME``."""
    for kind in DESTINATION_KINDS:
        prefix = f"/{kind}/"
        if destination.startswith(prefix):
            name = destination[len(prefix) :]
            if not NAME_RE.match(name):
                raise StompError(
                    f"invalid destination {destination[:80]!r}",
                    "queue names are 1 to 64 characters of A-Z a-z 0-9 _ . -",
                )
            return kind, name
    raise StompError(
        f"unknown destination {destination[:80]!r}",
        "use /queue/NAME, /topic/NAME, /temp-queue/NAME or /reply-queue/NAME",
    )


class TenantScope(Protocol):
    """The core service and the tenant a session acts for (known once it has connected)."""

    @property
    def service(self) -> Any: ...

    @property
    def tenant(self) -> str: ...


class QueueOwner(TenantScope, Protocol):
    """The session whose queues these are."""

    @property
    def session_id(self) -> str: ...


class Destinations:
    """One connection's destinations: parsed names, the core queues it knows exist, and
    its temporary queues (``/temp-queue/NAME`` -> core queue), deleted when it closes."""

    __slots__ = ("owner", "service", "known", "temp_queues", "_parsed", "_transient")

    def __init__(self, owner: QueueOwner) -> None:
        self.owner = owner
        self.service = owner.service
        #: Core queues this connection made or used (no ``create_queue`` for them again).
        self.known: set[str] = set()
        self.temp_queues: dict[str, str] = {}
        self._parsed: dict[str, tuple[str, str]] = {}
        self._transient: QueueOptions | None = None

    def parse(self, destination: str) -> tuple[str, str]:
        """``parse_destination``, remembered."""
        found = self._parsed.get(destination)
        if found is None:
            found = parse_destination(destination)
            if len(self._parsed) >= MAX_REMEMBERED:
                self._parsed.clear()
            self._parsed[destination] = found
        return found

    def transient_options(self) -> QueueOptions:
        """The service's defaults for a queue made on first use, made transient."""
        if self._transient is None:
            self._transient = replace(self.service.default_options, durable=False)
        return self._transient

    def options_for(self, frame: Frame) -> QueueOptions | None:
        """Options for a queue this frame creates: ``persistent:false`` makes it transient."""
        if frame.get("persistent") == "false":
            return self.transient_options()
        return None

    def ensure_queue(self, name: str, options: QueueOptions | None) -> Deferred[None]:
        """The core queue ``name`` exists (made with ``options`` on first use)."""
        return Deferred.fromCoroutine(self._ensure_queue(name, options))

    async def _ensure_queue(self, name: str, options: QueueOptions | None) -> None:
        if name not in self.known:
            await self.service.create_queue(self.owner.tenant, name, options)
            self.known.add(name)

    def temp_queue(self, name: str) -> Deferred[str]:
        """The core queue behind this connection's ``/temp-queue/NAME`` (made on first use)."""
        return Deferred.fromCoroutine(self._temp_queue(name))

    async def _temp_queue(self, name: str) -> str:
        core = self.temp_queues.get(name)
        if core is None:
            core = f"tmp.{self.owner.session_id[:12]}.{uuid.uuid4().hex[:12]}"
            self.temp_queues[name] = core
            await self.service.create_queue(self.owner.tenant, core, self.transient_options())
            self.known.add(core)
        return core

    def delete_temp_queues(self) -> None:
        """The connection has ended: its temporary queues go (RabbitMQ does the same)."""
        for name in self.temp_queues.values():
            self.service.delete_queue(self.owner.tenant, name).addErrback(
                lambda f: log.failure("deleting a temporary queue failed", f)
            )
        self.temp_queues.clear()
