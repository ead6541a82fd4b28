"""A worker's listening port takes one waiting connection per wake-up, so that workers
sharing one listening socket split a burst of connections instead of the first one
awake taking them all."""

from __future__ import annotations

import socket
from typing import Any

from twisted.internet import protocol, tcp
from twisted.internet.testing import MemoryReactor

from qgate.gateway.worker import accept_one_at_a_time


class Counting(protocol.Factory):
    def __init__(self) -> None:
        self.built = 0

    def buildProtocol(self, addr: Any) -> protocol.Protocol:
        self.built += 1
        return protocol.Protocol()


def test_a_workers_port_accepts_one_waiting_connection_each_time_it_reads():
    factory = Counting()
    port = tcp.Port(0, factory, interface="127.0.0.1", reactor=MemoryReactor())
    port.startListening()
    try:
        accept_one_at_a_time(port)
        address = ("127.0.0.1", port.getHost().port)
        # On loopback the handshake is done when connect returns: three wait in the queue.
        clients = [socket.create_connection(address, timeout=5) for _ in range(3)]
        port.doRead()
        assert factory.built == 1  # Twisted's own port takes all three in this read
        port.doRead()
        port.doRead()
        assert factory.built == 3
    finally:
        for client in clients:
            client.close()
        port.socket.close()
