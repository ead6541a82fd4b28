"""Real TLS handshakes against gateway listeners, with certificates made by the test."""

from __future__ import annotations

import http.client
import socket
import ssl
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import pytest
import pytest_twisted
from twisted.internet import defer, threads
from twisted.internet import ssl as ssl_twisted
from twisted.internet.protocol import Factory, Protocol
from twisted.internet.task import Clock
from twisted.internet.testing import StringTransport
from twisted.protocols.tls import TLSMemoryBIOFactory
from twisted.test.iosim import connectedServerAndClient

from qgate.gateway.app import Gateway
from qgate.gateway.config import ConfigError, parse
from qgate.gateway.tls import wrap
from tests.support.certs import make_certs
from tests.support.http import CLIENT


@pytest.fixture
def certs(tmp_path):
    return make_certs(tmp_path)


def server_tls(certs, **settings) -> dict:
    """A listener's ``tls`` table: the server certificate and key of ``certs``, and more."""
    return {"certificate": str(certs.server_cert), "key": str(certs.server_key), **settings}


@asynccontextmanager
async def serving(reactor, tls: dict, **tables: dict) -> AsyncIterator[tuple[int, int]]:
    """A gateway with an HTTP and a STOMP listener on ``tls`` while the block runs: their
    ports (HTTP, STOMP). ``tables``: more of the configuration."""
    config = parse(
        {
            **tables,
            "storage": {"url": "memory://"},
            "listeners": [
                {"protocol": "http", "endpoint": "tcp:0:interface=127.0.0.1", "tls": tls},
                {"protocol": "stomp", "endpoint": "tcp:0:interface=127.0.0.1", "tls": tls},
            ],
        }
    )
    gateway = Gateway(reactor, config)
    await gateway.listen()
    try:
        http_port, stomp_port = (p.getHost().port for p in gateway.ports)
        yield http_port, stomp_port
    finally:
        await gateway.stopService()


def https_ping(port: int, context: ssl.SSLContext) -> int:
    conn = http.client.HTTPSConnection("127.0.0.1", port, context=context, timeout=10)
    try:
        conn.request("GET", "/v2/ping", headers={"Client-ID": CLIENT})
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
    async with serving(reactor, server_tls(certs)) as (http_port, stomp_port):
        context = client_context(certs, with_cert=False)
        assert await threads.deferToThread(https_ping, http_port, context) == 204
        reply = await threads.deferToThread(stomp_over_tls, stomp_port, context)
        assert reply.startswith(b"CONNECTED\n") and b"version:1.2" in reply
        # A client that does not trust our CA refuses the server.
        untrusting = ssl.create_default_context(cafile=str(certs.other_ca))
        with pytest.raises(ssl.SSLError):
            await threads.deferToThread(https_ping, http_port, untrusting)


def stomp_over_tls_silent(port: int, context: ssl.SSLContext) -> bytes:
    """Handshake, send nothing, read until the server closes (within 5 s: well before
    the 10 s after which a close that never completes is aborted)."""
    with socket.create_connection(("127.0.0.1", port), timeout=5) as raw:
        with context.wrap_socket(raw, server_hostname="localhost") as s:
            out = b""
            while chunk := s.recv(4096):
                out += chunk
            return out


@pytest_twisted.ensureDeferred
async def test_a_stomp_client_over_tls_that_never_sends_connect_is_closed(reactor, certs):
    # The deadline ends during the TLS handshake: the ERROR waits for it, then the close.
    stomp = {"connect_timeout": 0.001}
    async with serving(reactor, server_tls(certs), stomp=stomp) as (_, stomp_port):
        context = client_context(certs, with_cert=False)
        reply = await threads.deferToThread(stomp_over_tls_silent, stomp_port, context)
        assert reply.startswith(b"ERROR\n")
        assert b"message:no CONNECT frame within 0.001 seconds" in reply


@pytest_twisted.ensureDeferred
async def test_client_certificates_are_required_when_a_client_ca_is_set(reactor, certs):
    tls = server_tls(certs, client_ca=str(certs.ca))
    async with serving(reactor, tls) as (http_port, stomp_port):
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


@pytest_twisted.ensureDeferred
async def test_min_version_refuses_older_clients(reactor, certs):
    async with serving(reactor, server_tls(certs, min_version="TLSv1.3")) as (http_port, _):
        old = client_context(certs, with_cert=False, max_version=ssl.TLSVersion.TLSv1_2)
        with pytest.raises(ssl.SSLError):
            await threads.deferToThread(https_ping, http_port, old)
        new = client_context(certs, with_cert=False)
        assert await threads.deferToThread(https_ping, http_port, new) == 204


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


# -- cipher suites ---------------------------------------------------------------------------


@pytest.fixture
def rsa_certs(tmp_path):
    """An RSA server certificate: the only kind a static-RSA suite can be used with."""
    return make_certs(tmp_path, rsa_server=True)


def tls12_client(certs, ciphers: str) -> ssl.SSLContext:
    context = client_context(certs, with_cert=False, max_version=ssl.TLSVersion.TLSv1_2)
    context.set_ciphers(ciphers)
    return context


def tls_cipher(port: int, context: ssl.SSLContext) -> str:
    """The suite a TLS handshake with ``port`` agreed on (no application data)."""
    with socket.create_connection(("127.0.0.1", port), timeout=10) as raw:
        with context.wrap_socket(raw, server_hostname="localhost") as s:
            cipher = s.cipher()
            assert cipher is not None
            return cipher[0]


def stomp_cipher(port: int, context: ssl.SSLContext) -> str:
    """The suite a STOMP/TLS connection agreed on, after a CONNECT answered CONNECTED."""
    with socket.create_connection(("127.0.0.1", port), timeout=10) as raw:
        with context.wrap_socket(raw, server_hostname="localhost") as s:
            s.sendall(b"CONNECT\naccept-version:1.2\nhost:tenant-1\n\n\x00")
            assert s.recv(4096).startswith(b"CONNECTED\n")
            cipher = s.cipher()
            assert cipher is not None
            return cipher[0]


@pytest_twisted.ensureDeferred
async def test_tls12_accepts_only_forward_secret_aead_suites(reactor, rsa_certs):
    async with serving(reactor, server_tls(rsa_certs)) as (http_port, stomp_port):
        for port in (http_port, stomp_port):
            # Static RSA key exchange (no forward secrecy), CBC with SHA-1 or with GCM.
            for weak in ("AES128-SHA", "AES256-GCM-SHA384", "ECDHE-RSA-AES128-SHA"):
                with pytest.raises((ssl.SSLError, ConnectionError)):
                    await threads.deferToThread(tls_cipher, port, tls12_client(rsa_certs, weak))
        for good in ("ECDHE-RSA-AES128-GCM-SHA256", "ECDHE-RSA-CHACHA20-POLY1305"):
            context = tls12_client(rsa_certs, good)
            assert await threads.deferToThread(stomp_cipher, stomp_port, context) == good
        assert (
            await threads.deferToThread(
                https_ping, http_port, tls12_client(rsa_certs, "ECDHE-RSA-AES256-GCM-SHA384")
            )
            == 204
        )


@pytest_twisted.ensureDeferred
async def test_the_ciphers_key_admits_a_suite_the_default_refuses(reactor, rsa_certs):
    from qgate.gateway.config import DEFAULT_CIPHERS

    tls = server_tls(rsa_certs, ciphers=DEFAULT_CIPHERS + ":AES256-GCM-SHA384")
    async with serving(reactor, tls) as (_, stomp_port):
        context = tls12_client(rsa_certs, "AES256-GCM-SHA384")
        assert await threads.deferToThread(stomp_cipher, stomp_port, context) == (
            "AES256-GCM-SHA384"
        )
        with pytest.raises((ssl.SSLError, ConnectionError)):
            await threads.deferToThread(
                tls_cipher, stomp_port, tls12_client(rsa_certs, "AES128-SHA")
            )


@pytest.mark.parametrize(
    ("tls", "message"),
    [
        ({"ciphers": "NO-SUCH-SUITE"}, "listeners[0].tls.ciphers: no TLS 1.2 cipher suite"),
        ({"ciphers": 3}, "listeners[0].tls.ciphers: expected a string"),
        ({"handshake_timeout": 0}, "listeners[0].tls.handshake_timeout: must be more than 0"),
        ({"handshake_timeout": "soon"}, "listeners[0].tls.handshake_timeout: expected a number"),
        ({"cipher": "HIGH"}, "listeners[0].tls.cipher: unknown key"),
    ],
)
def test_bad_tls_settings_name_the_key(certs, tls, message):
    tls = server_tls(certs, **tls)
    with pytest.raises(ConfigError) as e:
        parse({"listeners": [{"protocol": "stomp", "endpoint": "tcp:0", "tls": tls}]})
    assert message in str(e.value)


# -- handshake deadline ----------------------------------------------------------------------


def silent_client(port: int) -> float:
    """Connect and send nothing; seconds until the server closes the connection."""
    with socket.create_connection(("127.0.0.1", port), timeout=10) as s:
        started = time.monotonic()
        try:
            assert s.recv(1) == b""
        except ConnectionResetError:
            pass
        return time.monotonic() - started


def slow_stomp_client(port: int, context: ssl.SSLContext, pause: float) -> bytes:
    """A complete handshake, then nothing for ``pause`` seconds, then a CONNECT."""
    with socket.create_connection(("127.0.0.1", port), timeout=10) as raw:
        with context.wrap_socket(raw, server_hostname="localhost") as s:
            time.sleep(pause)
            s.sendall(b"CONNECT\naccept-version:1.2\nhost:tenant-1\n\n\x00")
            return s.recv(4096)


@pytest_twisted.ensureDeferred
async def test_a_connection_without_a_tls_handshake_is_closed_after_the_timeout(reactor, certs):
    async with serving(reactor, server_tls(certs, handshake_timeout=0.5)) as ports:
        waited = await defer.gatherResults(
            [threads.deferToThread(silent_client, port) for port in ports]
        )
        assert all(0.4 < w < 3 for w in waited), waited
        # A connection whose handshake is done is not bound by the deadline.
        _, stomp_port = ports
        context = client_context(certs, with_cert=False)
        reply = await threads.deferToThread(slow_stomp_client, stomp_port, context, 1.0)
        assert reply.startswith(b"CONNECTED\n")


class _Recorder(Protocol):
    """Keeps what the peer sent."""

    def __init__(self) -> None:
        self.received = b""

    def dataReceived(self, data: bytes) -> None:
        self.received += data


class _Greeter(Protocol):
    def connectionMade(self) -> None:
        self.transport.write(b"hello")


def _deadline_server(certs, clock: Clock, timeout: float = 10.0):
    """A TLS server factory made by ``wrap`` on ``clock``, and the protocols it built."""
    tls = server_tls(certs, handshake_timeout=timeout)
    config = parse({"listeners": [{"protocol": "stomp", "endpoint": "tcp:0", "tls": tls}]})
    tls_config = config.listeners[0].tls
    assert tls_config is not None
    built: list[_Recorder] = []

    def app() -> _Recorder:
        built.append(_Recorder())
        return built[-1]

    return wrap(Factory.forProtocol(app), tls_config, clock), built


def https_alpn(port: int, context: ssl.SSLContext) -> tuple[int, str | None]:
    """A ping from a client that offers ALPN, as browsers and curl do."""
    context.set_alpn_protocols(["h2", "http/1.1"])
    with socket.create_connection(("127.0.0.1", port), timeout=10) as raw:
        with context.wrap_socket(raw, server_hostname="localhost") as s:
            s.sendall(
                b"GET /v2/ping HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n"
                b"Client-ID: %s\r\n\r\n" % CLIENT.encode()
            )
            status = int(s.recv(4096).split(b" ", 2)[1])
            return status, s.selected_alpn_protocol()


@pytest_twisted.ensureDeferred
async def test_https_clients_offering_alpn_get_http_1_1(reactor, certs):
    async with serving(reactor, server_tls(certs)) as (http_port, _):
        context = client_context(certs, with_cert=False)
        status, alpn = await threads.deferToThread(https_alpn, http_port, context)
        assert (status, alpn) == (204, "http/1.1")


def stomp_alpn(port: int, context: ssl.SSLContext, offered: list[str]) -> tuple[bytes, str | None]:
    context.set_alpn_protocols(offered)
    with socket.create_connection(("127.0.0.1", port), timeout=10) as raw:
        with context.wrap_socket(raw, server_hostname="localhost") as s:
            s.sendall(b"CONNECT\naccept-version:1.2\nhost:tenant-1\n\n\x00")
            return s.recv(4096), s.selected_alpn_protocol()


@pytest_twisted.ensureDeferred
async def test_clients_offering_alpn_names_the_listener_lacks_still_connect(reactor, certs):
    """STOMP has no ALPN name: a client offering one (or h2 to HTTP) goes on without ALPN."""
    async with serving(reactor, server_tls(certs)) as (http_port, stomp_port):
        for offered in (["stomp"], ["h2", "http/1.1"], ["v12.stomp"]):
            context = client_context(certs, with_cert=False)
            reply, alpn = await threads.deferToThread(stomp_alpn, stomp_port, context, offered)
            assert reply.startswith(b"CONNECTED\n") and alpn is None
        context = client_context(certs, with_cert=False)
        context.set_alpn_protocols(["h2"])
        assert await threads.deferToThread(https_ping, http_port, context) == 204


def wss_upgrade(port: int, context: ssl.SSLContext) -> bytes:
    """The status line of a STOMP-over-WebSocket upgrade over TLS."""
    with socket.create_connection(("127.0.0.1", port), timeout=10) as raw:
        with context.wrap_socket(raw, server_hostname="localhost") as s:
            s.sendall(
                b"GET /stomp HTTP/1.1\r\nHost: localhost\r\nUpgrade: websocket\r\n"
                b"Connection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n"
                b"Sec-WebSocket-Version: 13\r\nSec-WebSocket-Protocol: v12.stomp\r\n\r\n"
            )
            return s.recv(4096).split(b"\r\n", 1)[0]


@pytest_twisted.ensureDeferred
async def test_websocket_upgrades_work_over_tls(reactor, certs):
    # autobahn needs its transport to be Twisted's TLS protocol itself (not a wrapper).
    async with serving(reactor, server_tls(certs)) as (http_port, _):
        context = client_context(certs, with_cert=False)
        assert await threads.deferToThread(wss_upgrade, http_port, context) == (
            b"HTTP/1.1 101 Switching Protocols"
        )


def test_the_handshake_deadline_on_a_clock(certs):
    clock = Clock()
    factory, _ = _deadline_server(certs, clock)
    server = factory.buildProtocol(None)
    transport = StringTransport()
    server.makeConnection(transport)
    clock.advance(9.9)
    assert not transport.disconnecting
    clock.advance(0.2)
    assert transport.disconnecting
    assert not clock.getDelayedCalls()


def test_a_finished_handshake_cancels_the_deadline(certs):
    clock = Clock()
    server_factory, built = _deadline_server(certs, clock)
    trust = ssl_twisted.Certificate.loadPEM(certs.ca.read_bytes())
    client_factory = TLSMemoryBIOFactory(
        ssl_twisted.optionsForClientTLS("localhost", trustRoot=trust),
        True,
        Factory.forProtocol(_Greeter),
        clock,
    )
    _, _, pump = connectedServerAndClient(
        lambda: server_factory.buildProtocol(None),
        lambda: client_factory.buildProtocol(None),
    )
    clock.advance(0)  # TLS writes are aggregated until the next reactor turn
    pump.flush()
    assert [p.received for p in built] == [b"hello"]  # the handshake is done
    assert not clock.getDelayedCalls()  # and the deadline cancelled
    clock.advance(60)
    pump.flush()
    assert not pump.serverIO.disconnecting
