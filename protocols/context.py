"""What a protocol receives from the gateway, and what it declares to it.

A protocol is a package under ``protocols/`` plus one :class:`ProtocolEntry` in
``gateway/registry.py`` (crossbar's ``personality.py`` idea: the entry carries its own
settings). The entry names

* a **settings** class: a frozen dataclass beside the protocol, filled by the gateway from
  the config table of the protocol's name (``[http]``, ``[stomp]``, ``[avro]``), unknown
  keys refused with the key named. It may define ``check(limits)``, raising ``ValueError``
  with ``"key: why"`` for a value that does not fit the core's limits;
* a **listener** factory, ``(ctx, listener) -> IProtocolFactory``, for protocols that own
  ``[[listeners]]`` endpoints;
* a **web mount**, ``(ctx) -> IResource``, for protocols served inside every HTTP listener
  at ``/<name>`` (STOMP over WebSocket, Avro RPC);
* a **component**, ``(ctx) -> IService``, for protocols that run without a listener (the
  push dispatcher): the gateway starts it with the process that holds storage and stops it
  before storage closes.

Each factory gets a :class:`ProtocolContext`: the queue service, the authenticator, the
reactor as the narrow interface protocols use (timers), that protocol's settings, and
where it counts what it does (``metrics``). A
protocol never reads the gateway's configuration, and never decides how clients prove who
they are: that is the authenticator's business.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, Generic, TypeVar

from twisted.internet.interfaces import IProtocolFactory, IReactorTime
from twisted.web.resource import IResource

from qgate.core.auth import IAuthenticator
from qgate.core.interfaces import IQueueService
from qgate.core.metrics import IMetrics, NullMetrics

S = TypeVar("S")

__all__ = ["Component", "ListenerFactory", "ProtocolContext", "ProtocolEntry", "WebMount"]


@dataclass(frozen=True)
class ProtocolContext(Generic[S]):
    """Everything a protocol gets to build its listeners and resources."""

    reactor: IReactorTime
    service: IQueueService
    auth: IAuthenticator
    settings: S
    #: Resources of other protocols an HTTP listener serves, by first path segment.
    web_mounts: Mapping[bytes, IResource] = field(default_factory=dict)
    #: Where the protocol counts and times what it does (``core/metrics.py``).
    metrics: IMetrics = field(default_factory=NullMetrics)
    #: The gateway's answers to operators (``core.admin.IGatewayStatus``): listeners,
    #: storage, version, certificates, reload. Only the admin protocol uses it.
    status: Any = None


#: ``(ctx, listener config) -> factory`` of a ``[[listeners]]`` endpoint.
ListenerFactory = Callable[[ProtocolContext[Any], Any], IProtocolFactory]
#: ``(ctx) -> resource`` mounted at ``/<protocol name>`` on every HTTP listener.
WebMount = Callable[[ProtocolContext[Any]], IResource]
#: ``(ctx) -> service`` run beside the listeners (``twisted.application.service.IService``).
Component = Callable[[ProtocolContext[Any]], Any]


@dataclass(frozen=True)
class ProtocolEntry:
    """One registry line: ``"module:name"`` references, imported when first needed."""

    settings: str
    listener: str | None = None
    web_mount: str | None = None
    component: str | None = None
