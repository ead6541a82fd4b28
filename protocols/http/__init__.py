"""JSON over HTTP, wire-compatible with OpenStack Zaqar v2, plus ``wait=`` long polling.

``listener_factory`` is the registry entry (``gateway.registry.PROTOCOLS["http"]``): it
builds a ``Site`` whose root serves the API and every ``ctx.web_mounts`` resource.

Modules: ``wire`` (Zaqar documents and rules ⇄ core values, no I/O), ``patch`` (JSON
patch of queue metadata), ``call`` (one parsed request), ``endpoints`` (every route, to the
handlers of ``home``, ``queues``, ``messages`` and ``claims``, on ``handlers``; they call
``IQueueService`` only), ``router``, ``resource`` (twisted.web resources, answering through
``protocols.web``, the request lifecycle Avro RPC shares), ``site`` (bounded bodies, idle
timeout), ``errors``,
``signed`` and ``share`` (Zaqar's pre-signed URLs).
"""

from __future__ import annotations

from typing import Any

from twisted.internet.interfaces import IProtocolFactory

from qgate.protocols.channel import HeadLimits
from qgate.protocols.context import ProtocolContext
from qgate.protocols.http.resource import ApiResource, RootResource, build_resource
from qgate.protocols.http.settings import HTTPSettings
from qgate.protocols.site import QGateSite

__all__ = [
    "ApiResource",
    "QGateSite",
    "RootResource",
    "build_resource",
    "build_site",
    "listener_factory",
]


def build_site(ctx: ProtocolContext[HTTPSettings]) -> QGateSite:
    http = ctx.settings
    root = build_resource(ctx)
    return QGateSite(
        root,
        max_request_body=http.max_request_body,
        idle_timeout=http.idle_timeout,
        reactor=ctx.reactor,
        refusal=root.too_large,
        access_log=http.access_log,
        head_limits=HeadLimits(
            http.head_timeout, http.max_url_length, http.max_headers, http.max_header_bytes
        ),
    )


def listener_factory(ctx: ProtocolContext[HTTPSettings], listener: Any) -> IProtocolFactory:
    """The protocol factory of an ``http`` listener (``listener`` is its
    ``ListenerConfig``; endpoint and TLS are the gateway's business)."""
    site: IProtocolFactory = build_site(ctx)
    return site
