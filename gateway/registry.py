"""One registry of protocols (no if/elif on config types).

Adding a protocol is a new package under ``protocols/`` plus one line here: a
:class:`~qgate.protocols.context.ProtocolEntry` naming its settings class (the config table
of the same name), its listener factory, its web mount and/or its component (a service
with no listener), as ``"module:name"`` strings imported when first needed.
"""

from __future__ import annotations

import importlib
from collections.abc import Mapping
from typing import Any

from twisted.internet.interfaces import IReactorTime
from twisted.web.resource import IResource

from qgate.core.auth import IAuthenticator
from qgate.core.interfaces import IQueueService
from qgate.core.metrics import IMetrics, MeteredService, NullMetrics, QueueRates
from qgate.protocols.context import (
    Component,
    ListenerFactory,
    ProtocolContext,
    ProtocolEntry,
    WebMount,
)

#: protocol name -> its entry. The name is the config table (``[stomp]``), the value of
#: ``[[listeners]] protocol`` for protocols with a listener, and the path (``/stomp``) of
#: a web mount on every HTTP listener.
PROTOCOLS: dict[str, ProtocolEntry] = {
    "http": ProtocolEntry(
        settings="qgate.protocols.http.settings:HTTPSettings",
        listener="qgate.protocols.http:listener_factory",
    ),
    "stomp": ProtocolEntry(
        settings="qgate.protocols.stomp.settings:StompSettings",
        listener="qgate.protocols.stomp:listener_factory",
        web_mount="qgate.protocols.stomp.websocket:websocket_resource",
    ),
    "avro": ProtocolEntry(
        settings="qgate.protocols.avro.settings:AvroSettings",
        web_mount="qgate.protocols.avro.rpc:rpc_resource",
    ),
    "admin": ProtocolEntry(
        settings="qgate.protocols.admin.settings:AdminSettings",
        listener="qgate.protocols.admin:listener_factory",
    ),
    "push": ProtocolEntry(
        settings="qgate.protocols.push.settings:PushSettings",
        component="qgate.protocols.push.dispatcher:component",
    ),
}


def load(ref: str) -> Any:
    module, _, attr = ref.partition(":")
    return getattr(importlib.import_module(module), attr)


def settings_class(name: str) -> type:
    cls: type = load(PROTOCOLS[name].settings)
    return cls


def listener_protocols() -> tuple[str, ...]:
    """The names ``[[listeners]] protocol`` accepts."""
    return tuple(name for name, entry in PROTOCOLS.items() if entry.listener is not None)


def listener_factory(name: str) -> ListenerFactory:
    ref = PROTOCOLS[name].listener
    if ref is None:
        raise KeyError(f"protocol {name!r} has no listener")
    factory: ListenerFactory = load(ref)
    return factory


class Protocols:
    """The context of every registered protocol, built once per gateway."""

    def __init__(
        self,
        reactor: IReactorTime,
        service: IQueueService,
        auth: IAuthenticator,
        settings: Mapping[str, Any],
        metrics: IMetrics | None = None,
        status: Any = None,
        admin: Any = None,
    ) -> None:
        counted = metrics or NullMetrics()
        rates = QueueRates()
        # Each protocol's calls are counted under its name; the admin protocol's are not
        # traffic, and it reads the rates the others keep. ``admin`` is the operators'
        # service: the core itself, not bounded like a tenant's (default: ``service``).
        operators = service if admin is None else admin
        services = {
            name: operators if name == "admin" else MeteredService(service, counted, name, rates)
            for name in PROTOCOLS
        }
        self.rates = rates

        def context(name: str, mounts: Mapping[bytes, IResource]) -> ProtocolContext[Any]:
            return ProtocolContext(
                reactor, services[name], auth, settings[name], mounts, counted, status
            )

        mounts: dict[bytes, IResource] = {}
        for name, entry in PROTOCOLS.items():
            if entry.web_mount is not None:
                make: WebMount = load(entry.web_mount)
                mounts[name.encode()] = make(context(name, {}))
        self.web_mounts: Mapping[bytes, IResource] = mounts
        self.contexts = {name: context(name, mounts) for name in PROTOCOLS}

    def components(self) -> list[Any]:
        """The services of protocols that run without a listener (``IService``s), made
        now: the gateway starts them where storage lives, one set per process group."""
        made = []
        for name, entry in PROTOCOLS.items():
            if entry.component is not None:
                make: Component = load(entry.component)
                made.append(make(self.contexts[name]))
        return made

    def listener(self, name: str, listener: Any) -> Any:
        """The protocol factory of one ``[[listeners]]`` entry."""
        return listener_factory(name)(self.contexts[name], listener)
