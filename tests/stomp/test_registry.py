"""The STOMP entries of the gateway registry, and the interfaces the Twisted side provides."""

from __future__ import annotations

from twisted.internet.interfaces import IProtocolFactory, IPushProducer
from twisted.web.resource import IResource
from zope.interface.verify import verifyObject

from qgate.gateway.config import Config
from qgate.gateway.registry import PROTOCOLS, Protocols, listener_factory
from qgate.protocols.stomp.protocol import StompProtocol
from qgate.protocols.stomp.websocket import StompWebSocketProtocol
from tests.support.stomp import Client


def test_stomp_listener_is_registered(ctx):
    factory = listener_factory("stomp")(ctx, None)
    assert verifyObject(IProtocolFactory, factory)
    assert isinstance(factory.buildProtocol(None), StompProtocol)


def test_stomp_web_mount_is_registered(ctx):
    protocols = Protocols(ctx.reactor, ctx.service, ctx.auth, Config().protocols)
    assert verifyObject(IResource, protocols.web_mounts[b"stomp"])
    # Every protocol's context carries its own settings; HTTP's carries the mounts.
    assert set(protocols.contexts) == set(PROTOCOLS)
    assert protocols.contexts["stomp"].settings == Config().settings("stomp")
    assert set(protocols.contexts["http"].web_mounts) == {b"stomp", b"avro"}


def test_protocols_are_push_producers_for_their_output(client: Client):
    assert verifyObject(IPushProducer, client.proto)
    assert client.transport.producer is client.proto
    assert verifyObject(IPushProducer, StompWebSocketProtocol())
