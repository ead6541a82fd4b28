"""The web console in headless Chromium (``console.mjs``): an operator watches a queue
fill without reloading, opens its dead-letter queue, peeks, moves the messages back,
publishes a test message and purges; screenshots for ``docs/operators.md``.

The gateway is a ``qgate serve`` subprocess with an admin listener; the test publishes
over the Zaqar HTTP API and checks the console's actions there. Nothing here is
skipped: without Chromium or the npm packages it fails and says to run
``.ci/setup-browser``.
"""

from __future__ import annotations

import json
import os
import subprocess
import tempfile
from pathlib import Path

import pytest

from tests.browser.test_stompjs import HERE, require_browser
from tests.support.serve import ROOT, Server, free_port

pytestmark = pytest.mark.integration

#: Where the screenshots go: a temporary directory, or docs/ (for docs/operators.md) when
#: QGATE_CONSOLE_SHOTS=docs, so an ordinary run leaves the checkout as it was.
DOCS = ROOT / "docs"


def publish(server: Server, queue: str, n: int, start: int = 0) -> None:
    messages = [{"body": {"order": start + i}, "ttl": 3600} for i in range(n)]
    status, body = server.request("POST", f"/v2/queues/{queue}/messages", {"messages": messages})
    assert status == 201, body


def test_the_console_shows_a_queue_fill_and_moves_dead_letters_back(tmp_path: Path) -> None:
    node = require_browser()
    shots = DOCS if os.environ.get("QGATE_CONSOLE_SHOTS") == "docs" else tmp_path
    admin = free_port()
    server = Server(
        tmp_path,
        tenant="shop",
        extra=f"""
[[listeners]]
protocol = "admin"
endpoint = "tcp:{admin}:interface=127.0.0.1"
[admin]
sample_interval = 0.5
""",
    )
    server.start()
    try:
        options = {"_max_claim_count": 3, "_dead_letter_queue": "orders-dlq"}
        assert server.request("PUT", "/v2/queues/orders", options)[0] == 201
        publish(server, "orders", 4)
        # What three failed deliveries leave in the dead-letter queue (as claims would).
        publish(server, "orders-dlq", 2, start=100)
        errors = tempfile.TemporaryFile(mode="w+t")  # noqa: SIM115 - read after the run
        proc = subprocess.Popen(
            [node, str(HERE / "console.mjs"), f"http://127.0.0.1:{admin}/console/", str(shots)],
            cwd=HERE,
            stdout=subprocess.PIPE,
            stderr=errors,
            text=True,
        )
        assert proc.stdout is not None

        def line() -> str:
            got = proc.stdout.readline()  # type: ignore[union-attr]
            if not got:
                proc.wait(timeout=30)
                errors.seek(0)
                raise AssertionError(f"the console driver ended: {errors.read()}")
            return got.rstrip("\n")

        assert line() == "EVENT overview 4"
        publish(server, "orders", 4, start=4)
        assert line() == "EVENT live 8"
        result_line = line()
        assert proc.wait(timeout=30) == 0
        # The moved messages are in "orders" for its consumers.
        status, stats = server.request("GET", "/v2/queues/orders/stats")
        assert status == 200 and stats["messages"]["total"] == 8 + 2, stats
    finally:
        assert server.stop() == 0
    assert result_line.startswith("RESULT "), result_line
    result = json.loads(result_line[len("RESULT ") :])
    assert result["peeked"] == 2 and result["target"] == "orders"
    assert result["moved"] == "moved 2 messages to orders"
    assert result["published"].startswith("published message ")
    assert result["body"] == "a test message from the console"
    assert result["purged"] == "purged 1 messages"
    assert result["listeners"] == 3 and result["health"] == "ready"
    assert result["outside"] == []  # nothing fetched from anywhere but qgate
    for shot in ("console-overview.png", "console-queue.png"):
        assert (shots / shot).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
