"""Real TLS handshakes against gateway listeners, with certificates made by the test."""

from __future__ import annotations

import http.client
import socket
import ssl

import pytest
import pytest_twisted
from twisted.internet import threads

from qgate.gateway.app import Gateway
from qgate.gateway.config import ConfigError, parse
from tests.support.certs import make_certs


@pytest.fixture
def certs(tmp_path):
    return make_certs(tmp_path)


async def start(reactor, tls: dict) -> Gateway:
    config = parse(
        {
            "storage": {"url": "memory://"},
            "listeners": [
                {"protocol": "http", "endpoint": "tcp:0:interface=127.0.0.1", "tls": tls},
                {"protocol": "stomp", "endpoint": "tcp:0:interface=127.0.0.1", "tls": tls},
            ],
        }
    )
    gateway = Gateway(reactor, config)
    await gateway.listen()
    return gateway


def https_ping(port: int, context: ssl.SSLContext) -> int:
    conn = http.client.HTTPSConnection("127.0.0.1", port, context=context, timeout=10)
    try:
        conn.request("GET", "/v2/ping")
        return conn.getresponse().status
    finally:
        conn.close()


def stomp_over_tls(port: int, context: ssl.SSLContext) -> bytes:
    with socket.create_connection(("127.0.0.1", port), timeout=10) as raw:
        with context.wrap_socket(raw, server_hostname="localhost") as s:
            s.sendall(b"CONNECT\naccept-version:1.2\nhost:tenant-1\n\n\x00")
            return s.recv(4096)


def client_context(certs, *, with_cert: bool, max_version=None) -> ssl.SSLContext:
    context = ssl.create_default_context(cafile=str(certs.ca))
    if with_cert:
        context.load_cert_chain(str(certs.client_cert), str(certs.client_key))
    if max_version is not None:
        context.maximum_version = max_version
    return context


@pytest_twisted.ensureDeferred
async def test_https_and_stomp_over_tls_answer_on_every_listener(reactor, certs):
    tls = {"certificate": str(certs.server_cert), "key": str(certs.server_key)}
    gateway = await start(reactor, tls)
    http_port, stomp_port = (p.getHost().port for p in gateway.ports)
    try:
        context = client_context(certs, with_cert=False)
        assert await threads.deferToThread(https_ping, http_port, context) == 204
        reply = await threads.deferToThread(stomp_over_tls, stomp_port, context)
        assert reply.startswith(b"CONNECTED\n") and b"version:1.2" in reply
        # A client that does not trust our CA refuses the server.
        untrusting = ssl.create_default_context(cafile=str(certs.other_ca))
        with pytest.raises(ssl.SSLError):
            await threads.deferToThread(https_ping, http_port, untrusting)
    finally:
        await gateway.stopService()


@pytest_twisted.ensureDeferred
async def test_client_certificates_are_required_when_a_client_ca_is_set(reactor, certs):
    tls = {
        "certificate": str(certs.server_cert),
        "key": str(certs.server_key),
        "client_ca": str(certs.ca),
    }
    gateway = await start(reactor, tls)
    http_port, stomp_port = (p.getHost().port for p in gateway.ports)
    try:
        good = client_context(certs, with_cert=True)
        assert await threads.deferToThread(https_ping, http_port, good) == 204
        bare = client_context(certs, with_cert=False)
        with pytest.raises((ssl.SSLError, ConnectionError, http.client.HTTPException)):
            await threads.deferToThread(https_ping, http_port, bare)
        try:
            reply = await threads.deferToThread(stomp_over_tls, stomp_port, bare)
        except OSError:  # ssl.SSLError and ConnectionError included: the handshake failed
            reply = b""
        assert reply == b"", "the STOMP listener answered a client without a certificate"
        # The listener survived the rejected handshakes.
        assert await threads.deferToThread(https_ping, http_port, good) == 204
    finally:
        await gateway.stopService()


@pytest_twisted.ensureDeferred
async def test_min_version_refuses_older_clients(reactor, certs):
    tls = {
        "certificate": str(certs.server_cert),
        "key": str(certs.server_key),
        "min_version": "TLSv1.3",
    }
    gateway = await start(reactor, tls)
    http_port = gateway.ports[0].getHost().port
    try:
        old = client_context(certs, with_cert=False, max_version=ssl.TLSVersion.TLSv1_2)
        with pytest.raises(ssl.SSLError):
            await threads.deferToThread(https_ping, http_port, old)
        new = client_context(certs, with_cert=False)
        assert await threads.deferToThread(https_ping, http_port, new) == 204
    finally:
        await gateway.stopService()


def test_a_key_that_does_not_match_the_certificate_is_a_config_error(reactor, tmp_path):
    certs = make_certs(tmp_path)
    tls = {"certificate": str(certs.server_cert), "key": str(certs.client_key)}
    config = parse(
        {
            "storage": {"url": "memory://"},
            "listeners": [{"protocol": "http", "endpoint": "tcp:0", "tls": tls}],
        }
    )
    with pytest.raises(ConfigError):
        Gateway(reactor, config)
