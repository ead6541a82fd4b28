"""TLS for operators, with real handshakes: certificates swapped under a live listener
(new connections get the new one, open ones keep theirs), several certificates chosen by
SNI, and the expiry the start-up log and the metrics report."""

from __future__ import annotations

import datetime
import http.client
import os
import signal
import socket
import ssl
import time
from pathlib import Path

import pytest_twisted
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from twisted.internet import threads
from twisted.logger import globalLogPublisher

from qgate.gateway.app import Gateway
from qgate.gateway.config import parse
from tests.support.http import CLIENT
from tests.support.serve import Server, free_port


def self_signed(directory: Path, cn: str, days: int = 90) -> tuple[str, str]:
    """A certificate for ``cn`` (also its one DNS name) valid ``days`` more days, and its
    key, as PEM files named after ``cn`` in ``directory``."""
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(x509.NameOID.COMMON_NAME, cn)])
    now = datetime.datetime.now(datetime.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(days=1))
        .not_valid_after(now + datetime.timedelta(days=days))
        .add_extension(x509.SubjectAlternativeName([x509.DNSName(cn)]), critical=False)
        .sign(key, hashes.SHA256())
    )
    cert_path, key_path = directory / f"{cn}.crt", directory / f"{cn}.key"
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    return str(cert_path), str(key_path)


def install(src: tuple[str, str], dst: tuple[Path, Path]) -> None:
    """Copy a certificate and key over the files a listener reads (as certbot does)."""
    for a, b in zip(src, dst, strict=True):
        b.write_bytes(Path(a).read_bytes())


def _insecure() -> ssl.SSLContext:
    # The test looks at which certificate is served, not at trust: no CA to check against.
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE
    return context


def served_cn(conn: http.client.HTTPSConnection) -> str:
    der = conn.sock.getpeercert(binary_form=True)  # type: ignore[union-attr]
    cert = x509.load_der_x509_certificate(der)
    return str(cert.subject.get_attributes_for_oid(x509.NameOID.COMMON_NAME)[0].value)


def ping(conn: http.client.HTTPSConnection) -> int:
    conn.request("GET", "/v2/ping", headers={"Client-ID": CLIENT, "X-Project-Id": "p"})
    response = conn.getresponse()
    response.read()
    return response.status


def connect(port: int, server_name: str = "localhost") -> tuple[http.client.HTTPSConnection, str]:
    """A kept-alive HTTPS connection (asking for ``server_name`` by SNI), pinged once, and
    the CN it was served."""
    conn = http.client.HTTPSConnection("127.0.0.1", port, timeout=10)
    # Our own socket: http.client would send no SNI for an IP address.
    raw = socket.create_connection(("127.0.0.1", port), timeout=10)
    conn.sock = _insecure().wrap_socket(raw, server_hostname=server_name)
    assert ping(conn) == 204
    return conn, served_cn(conn)


def gateway(reactor, tls: dict) -> Gateway:
    config = parse(
        {
            "storage": {"url": "memory://"},
            "listeners": [
                {"protocol": "http", "endpoint": "tcp:0:interface=127.0.0.1", "tls": tls},
                {"protocol": "admin", "endpoint": "tcp:0:interface=127.0.0.1"},
            ],
        }
    )
    return Gateway(reactor, config)


@pytest_twisted.ensureDeferred
async def test_a_reload_serves_new_connections_the_new_certificate_and_keeps_old_ones(
    reactor, tmp_path
):
    live = (tmp_path / "live.crt", tmp_path / "live.key")
    install(self_signed(tmp_path, "old.example"), live)
    other = self_signed(tmp_path, "other.example")
    tls = {
        "certificate": str(live[0]),
        "key": str(live[1]),
        "sni": [{"certificate": other[0], "key": other[1]}],
    }
    gw = gateway(reactor, tls)
    await gw.listen()
    try:
        port = gw.ports[0].getHost().port
        old_conn, cn = await threads.deferToThread(connect, port)
        assert cn == "old.example"

        install(self_signed(tmp_path, "new.example"), live)
        [done] = gw.reload()
        assert done["reloaded"] and done["certificates"][0]["subject"] == "new.example"

        new_conn, cn = await threads.deferToThread(connect, port)
        assert cn == "new.example"
        # The connection opened before the reload is still up, on its old certificate.
        assert await threads.deferToThread(ping, old_conn) == 204
        assert served_cn(old_conn) == "old.example"
        # SNI picks the listener's other certificate by the name asked for.
        sni_conn, cn = await threads.deferToThread(connect, port, "other.example")
        assert cn == "other.example"
        for conn in (old_conn, new_conn, sni_conn):
            conn.close()
    finally:
        await gw.stopService()


@pytest_twisted.ensureDeferred
async def test_a_reload_that_cannot_read_the_new_files_keeps_serving_the_old_ones(
    reactor, tmp_path
):
    live = (tmp_path / "live.crt", tmp_path / "live.key")
    install(self_signed(tmp_path, "old.example"), live)
    gw = gateway(reactor, {"certificate": str(live[0]), "key": str(live[1])})
    await gw.listen()
    try:
        live[1].write_text("not a key")
        [done] = gw.reload()
        assert done["reloaded"] is False and "key" in done["error"]
        port = gw.ports[0].getHost().port
        conn, cn = await threads.deferToThread(connect, port)
        assert cn == "old.example"
        conn.close()
    finally:
        await gw.stopService()


@pytest_twisted.ensureDeferred
async def test_the_start_up_log_names_each_certificate_and_warns_before_expiry(reactor, tmp_path):
    cert, key = self_signed(tmp_path, "soon.example", days=5)
    events: list[dict] = []
    globalLogPublisher.addObserver(events.append)
    gw = gateway(reactor, {"certificate": cert, "key": key})
    try:
        await gw.listen()
    finally:
        globalLogPublisher.removeObserver(events.append)
    try:
        served = [e for e in events if e.get("subject") == "soon.example"]
        assert any(
            "expires in" in e["log_format"] and e["log_level"].name == "info" for e in served
        )
        assert any(e["log_level"].name == "warn" for e in served)
        listener = gw.status.listeners[0].name()
        labels = {"listener": listener, "subject": "soon.example"}
        assert gw.metrics.registry.get_sample_value("qgate_tls_certificate_expiring", labels) == 1
    finally:
        await gw.stopService()


def test_sighup_at_the_hub_rotates_the_certificate_of_every_worker(tmp_path):
    """``qgate serve --workers 2``: the workers wrap TLS themselves, so the hub passes
    SIGHUP on; every new connection, whichever worker takes it, sees the new
    certificate, and one opened before keeps its own."""
    live = (tmp_path / "live.crt", tmp_path / "live.key")
    install(self_signed(tmp_path, "old.example"), live)
    tls_port = free_port()
    # A second HTTP listener, with TLS, after the plain ones the test server has.
    extra = (
        f'[[listeners]]\nprotocol = "http"\nendpoint = "tcp:{tls_port}:interface=127.0.0.1"\n'
        f'[listeners.tls]\ncertificate = "{live[0]}"\nkey = "{live[1]}"\n'
    )
    server = Server(tmp_path, workers=2, extra=extra)
    server.start()
    try:
        old_conn, cn = connect(tls_port)
        assert cn == "old.example"
        install(self_signed(tmp_path, "new.example"), live)
        assert server.proc is not None
        os.kill(server.proc.pid, signal.SIGHUP)
        deadline = time.monotonic() + 10
        seen: list[str] = []
        while time.monotonic() < deadline:
            seen = [connect(tls_port)[1] for _ in range(6)]  # spread over both workers
            if seen == ["new.example"] * 6:
                break
            time.sleep(0.1)
        assert seen == ["new.example"] * 6
        assert ping(old_conn) == 204 and served_cn(old_conn) == "old.example"
        old_conn.close()
    finally:
        assert server.stop() == 0
