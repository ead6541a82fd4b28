"""Service assembly: the plugin, the registry, and a graceful stop."""

from __future__ import annotations

import http.client
import json
import time

import pytest_twisted
from twisted.application.service import IServiceMaker
from twisted.internet import threads
from twisted.plugin import getPlugins

from qgate.gateway import registry
from qgate.gateway.app import Gateway
from qgate.gateway.config import parse

HEADERS = {"Client-ID": "3381af92-2b9e-11e3-b191-71861300734c", "X-Project-Id": "p"}


def test_twist_finds_the_qgate_plugin(tmp_path):
    makers = {m.tapname: m for m in getPlugins(IServiceMaker)}
    assert "qgate" in makers
    config = tmp_path / "q.toml"
    config.write_text(
        '[storage]\nurl = "memory://"\n[[listeners]]\nprotocol = "http"\nendpoint = "tcp:0"\n'
    )
    options = makers["qgate"].options()
    options.parseOptions(["--config", str(config)])
    service = makers["qgate"].makeService(options)
    assert isinstance(service, Gateway)
    assert service.config.storage.url == "memory://"


def test_every_registered_protocol_and_mount_loads():
    for name in registry.PROTOCOLS:
        assert callable(registry.listener_factory(name))
    for ref in registry.WEB_MOUNTS.values():
        assert callable(registry.load(ref))


def long_poll(port: int) -> tuple[int, dict, float]:
    start = time.monotonic()
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
    conn.request("GET", "/v2/queues/q/messages?wait=30&echo=true", headers=HEADERS)
    response = conn.getresponse()
    raw = response.read()
    return response.status, (json.loads(raw) if raw else {}), time.monotonic() - start


@pytest_twisted.ensureDeferred
async def test_stopping_answers_parked_long_polls_and_stops_accepting(reactor):
    config = parse(
        {
            "storage": {"url": "memory://"},
            "listeners": [{"protocol": "http", "endpoint": "tcp:0:interface=127.0.0.1"}],
        }
    )
    gateway = Gateway(reactor, config)
    await gateway.listen()
    port = gateway.ports[0].getHost().port
    await gateway.core.create_queue("p", "q")
    polled = threads.deferToThread(long_poll, port)
    for _ in range(500):
        if gateway.core.waiting("p", "q"):
            break
        await threads.deferToThread(time.sleep, 0.01)
    assert gateway.core.waiting("p", "q") == 1
    await gateway.stopService()
    status, body, took = await polled
    assert status in (200, 204) and not body.get("messages")
    assert took < 10
    try:
        await threads.deferToThread(long_poll, port)
    except OSError:
        pass
    else:
        raise AssertionError("a stopped gateway still accepts connections")
