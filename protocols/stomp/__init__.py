"""STOMP 1.0/1.1/1.2 over TCP (this module's ``listener_factory``) and over WebSocket
(``protocols.stomp.websocket:websocket_resource``).

Layers: ``codec`` (bytes <-> frames, no I/O), ``protocol`` (Twisted transport, timers,
back-pressure) and ``session`` (the adapter that calls ``IQueueService`` and nothing else),
which meet at ``link``. The session's parts, one job each: ``headers``, ``destinations``,
``sending``, ``consumers`` with ``subscriptions``, ``transactions`` (and ``bodies`` for
Avro bodies).
"""

from __future__ import annotations

from typing import Any

from twisted.internet.interfaces import IProtocolFactory

from qgate.protocols.context import ProtocolContext
from qgate.protocols.stomp.protocol import StompFactory
from qgate.protocols.stomp.settings import StompSettings


def listener_factory(ctx: ProtocolContext[StompSettings], listener: Any) -> IProtocolFactory:
    """The factory for a ``[[listeners]] protocol = "stomp"`` endpoint."""
    return StompFactory(ctx)


__all__ = ["listener_factory"]
