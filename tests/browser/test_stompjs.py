"""A real browser: headless Chromium runs @stomp/stompjs against ``qgate serve``'s /stomp mount.

The gateway is a ``qgate serve`` subprocess with two HTTP listeners, plain and TLS (the
test CA of ``tests/support/certs.py``), so the page speaks STOMP over ``ws://`` and over
``wss://``. playwright-core drives Debian's ``/usr/bin/chromium`` (``drive.mjs``); the
test publishes and reads over the Zaqar HTTP API. For ``wss://`` Chromium is told to trust
exactly the server's public key (``--ignore-certificate-errors-spki-list``), not to ignore
certificate errors in general.

Nothing here is skipped: without Chromium, node or the npm packages the tests fail and say
to run ``.ci/setup-browser``.
"""

from __future__ import annotations

import base64
import hashlib
import http.client
import json
import os
import shutil
import ssl
import subprocess
import tempfile
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import urlencode

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import serialization

from tests.support.certs import CertFiles, make_certs
from tests.support.serve import CLIENT_ID, Server, free_port

pytestmark = pytest.mark.integration

HERE = Path(__file__).resolve().parent
CHROMIUM = os.environ.get("QGATE_CHROMIUM", "/usr/bin/chromium")
TENANT = "browser-proj"
SETUP_HINT = "run .ci/setup-browser (installs Debian's chromium and the npm packages)"


def require_browser() -> str:
    """The node binary; fails (never skips) when something the browser test needs is missing."""
    missing = []
    if not os.access(CHROMIUM, os.X_OK):
        missing.append(f"{CHROMIUM} (Debian package chromium)")
    node = shutil.which("node")
    if node is None:
        missing.append("node")
    for package in ("@stomp/stompjs", "playwright-core"):
        if not (HERE / "node_modules" / package / "package.json").is_file():
            missing.append(f"tests/browser/node_modules/{package}")
    if missing or node is None:
        pytest.fail(f"the browser test needs {', '.join(missing)}: {SETUP_HINT}", pytrace=False)
    return node


def spki_hash(cert_path: Path) -> str:
    """base64(SHA-256(SubjectPublicKeyInfo)), as --ignore-certificate-errors-spki-list wants."""
    cert = x509.load_pem_x509_certificate(cert_path.read_bytes())
    der = cert.public_key().public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    return base64.b64encode(hashlib.sha256(der).digest()).decode("ascii")


class Gateway(Server):
    """``qgate serve`` with, beside its plain HTTP listener, a TLS one (the test CA)."""

    def __init__(self, workdir: Path) -> None:
        self.certs: CertFiles = make_certs(workdir)
        self.https = free_port()
        super().__init__(
            workdir,
            tenant=TENANT,
            extra=f"""
[[listeners]]
protocol = "http"
endpoint = "tcp:{self.https}:interface=127.0.0.1"
tls = {{ certificate = "{self.certs.server_cert}", key = "{self.certs.server_key}" }}
""",
        )

    def start(self) -> None:
        super().start()
        # The TLS listener is up too, and serves the test CA's certificate.
        context = ssl.create_default_context(cafile=str(self.certs.ca))
        conn = http.client.HTTPSConnection("127.0.0.1", self.https, context=context, timeout=10)
        conn.request("GET", "/v2/ping", headers={"Client-ID": CLIENT_ID, "X-Project-Id": TENANT})
        assert conn.getresponse().status == 204
        conn.close()


@pytest.fixture(scope="module")
def gateway(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Gateway]:
    require_browser()
    gw = Gateway(tmp_path_factory.mktemp("browser"))
    gw.start()
    yield gw
    if gw.stop() != 0:
        raise AssertionError("qgate serve did not exit cleanly: " + gw.output())


class Driver:
    """``node drive.mjs``: Chromium on page.html, one line per step on stdout."""

    def __init__(self, query: str, spki: str | None) -> None:
        node = require_browser()
        args = [node, str(HERE / "drive.mjs"), query, "--timeout", "20000"]
        if spki:
            args += ["--spki", spki]
        # stderr (the page's console) goes to a file: a full pipe nobody reads would stall.
        self.errors = tempfile.TemporaryFile(mode="w+t")  # noqa: SIM115 - read after finish()
        self.proc = subprocess.Popen(
            args, cwd=HERE, stdout=subprocess.PIPE, stderr=self.errors, text=True
        )

    def line(self) -> str:
        assert self.proc.stdout is not None
        line = self.proc.stdout.readline()
        if not line:
            self.proc.wait(timeout=30)
            raise AssertionError(f"the browser driver ended: {self.stderr()}")
        return line.rstrip("\n")

    def stderr(self) -> str:
        self.errors.seek(0)
        return self.errors.read()

    def finish(self) -> int:
        try:
            return self.proc.wait(timeout=30)
        finally:
            if self.proc.poll() is None:
                self.proc.kill()
                self.proc.wait()
            assert self.proc.stdout is not None
            self.proc.stdout.close()


def page_query(url: str, queue: str, reply: str) -> str:
    return urlencode({"url": url, "host": TENANT, "queue": queue, "reply": reply})


@pytest.mark.parametrize("scheme", ["ws", "wss"])
def test_stompjs_in_chromium_consumes_acks_and_replies(gateway: Gateway, scheme: str) -> None:
    queue, reply = f"orders-{scheme}", f"replies-{scheme}"
    port = gateway.http if scheme == "ws" else gateway.https
    query = page_query(f"{scheme}://127.0.0.1:{port}/stomp", queue, reply)
    spki = spki_hash(gateway.certs.server_cert) if scheme == "wss" else None
    driver = Driver(query, spki)
    try:
        first = driver.line()
        assert first == "EVENT subscribed", f"{first}\n{driver.stderr()}"
        # Published over HTTP only now: the page is pushed the message, it does not poll.
        status, created = gateway.request(
            "POST",
            f"/v2/queues/{queue}/messages",
            {"messages": [{"body": {"n": 21, "via": "http"}, "ttl": 300}]},
        )
        assert status == 201, created
        line = driver.line()
        assert line.startswith("RESULT "), f"{line}\n{driver.stderr()}"
        result = json.loads(line[len("RESULT ") :])
    finally:
        code = driver.finish()
    assert code == 0, driver.stderr()
    assert result["ok"], result
    assert result["errors"] == []
    assert "HeadlessChrome/" in result["userAgent"]
    assert result["subprotocol"] == "v12.stomp"
    assert result["version"] == "1.2"
    assert result["server"].startswith("qgate/")
    received = result["received"]
    assert json.loads(received["body"]) == {"n": 21, "via": "http"}
    assert received["contentType"] == "application/json"
    assert received["destination"] == f"/queue/{queue}"
    assert received["subscription"] == "sub-1"
    assert received["hasAckHeader"]
    assert result["ackReceipt"] == "ack-1"
    assert result["sendReceipt"] == "reply-1"

    # The ACK deleted the message; the reply is there for an HTTP consumer.
    status, stats = gateway.request("GET", f"/v2/queues/{queue}/stats")
    assert status == 200 and stats["messages"]["total"] == 0, stats
    status, body = gateway.request("GET", f"/v2/queues/{reply}/messages?echo=true")
    assert status == 200, body
    [answer] = body["messages"]
    assert answer["body"]["answer"] == 42
    assert "Chrome" in answer["body"]["from"]


def test_wss_fails_without_trusting_the_test_server_key(gateway: Gateway) -> None:
    """The wss test proves TLS for real: without the key pinned, Chromium refuses it."""
    query = page_query(f"wss://127.0.0.1:{gateway.https}/stomp", "untrusted", "untrusted-r")
    driver = Driver(query, None)
    line = driver.line()
    code = driver.finish()
    assert code == 0
    assert line.startswith("RESULT ")
    result = json.loads(line[len("RESULT ") :])
    assert result["ok"] is False and result["errors"] == ["WebSocket error"]
    assert "ERR_CERT" in driver.stderr()
