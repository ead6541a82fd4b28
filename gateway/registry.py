"""One registry from protocol names to listener factories (no if/elif on config types).

Adding a protocol is a new package under ``protocols/`` plus one line here. Entries are
``"module:function"`` strings, imported when a listener asks for them.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from twisted.internet.interfaces import IProtocolFactory
from twisted.web.resource import IResource

from qgate.core.auth import IAuthenticator
from qgate.core.interfaces import IQueueService


@dataclass(frozen=True)
class GatewayContext:
    """What a protocol gets to build its listeners: the core API and its settings."""

    reactor: Any
    service: IQueueService
    auth: IAuthenticator
    config: Any  # gateway.config.Config (not imported here: config imports this module)
    #: Extra resources mounted on every HTTP listener, by path segment (b"stomp", b"avro").
    web_mounts: Mapping[bytes, IResource] = field(default_factory=dict)


ListenerFactory = Callable[[GatewayContext, Any], IProtocolFactory]
WebMount = Callable[[GatewayContext], IResource]

#: protocol name (as in ``[[listeners]] protocol = ...``) -> "module:factory(ctx, listener)"
PROTOCOLS: dict[str, str] = {
    "http": "qgate.protocols.http:listener_factory",
    "stomp": "qgate.protocols.stomp:listener_factory",
}

#: config attribute naming the mount path -> "module:factory(ctx)" of a web resource
WEB_MOUNTS: dict[str, str] = {
    "stomp": "qgate.protocols.stomp.websocket:websocket_resource",
    "avro": "qgate.protocols.avro.rpc:rpc_resource",
}


def load(ref: str) -> Any:
    module, _, attr = ref.partition(":")
    return getattr(importlib.import_module(module), attr)


def listener_factory(name: str) -> ListenerFactory:
    factory: ListenerFactory = load(PROTOCOLS[name])
    return factory


def web_mounts(ctx: GatewayContext) -> dict[bytes, IResource]:
    """Build every registered web mount, keyed by its path segment."""
    mounts: dict[bytes, IResource] = {}
    for path, ref in WEB_MOUNTS.items():
        make: WebMount = load(ref)
        mounts[path.strip("/").encode()] = make(ctx)
    return mounts
