"""Service assembly: the plugin, the registry, and a graceful stop."""

from __future__ import annotations

import dataclasses
import http.client
import json
import time

import pytest
import pytest_twisted
from twisted.application.service import IServiceMaker
from twisted.internet import threads
from twisted.plugin import getPlugins

from qgate.gateway import registry
from qgate.gateway.app import LISTEN_BACKLOG, Gateway, with_backlog
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
    assert registry.listener_protocols() == ("http", "stomp", "admin")
    for name, entry in registry.PROTOCOLS.items():
        settings = registry.settings_class(name)
        assert dataclasses.is_dataclass(settings) and settings.__dataclass_params__.frozen
        refs = [r for r in (entry.listener, entry.web_mount, entry.component) if r is not None]
        assert refs, f"{name} serves nothing"
        assert all(callable(registry.load(ref)) for ref in refs)
    with pytest.raises(KeyError):
        registry.listener_factory("avro")  # a web mount only


def test_a_protocol_table_is_only_that_protocols_settings():
    config = parse({"avro": {"max_request_body": 10}})
    assert config.settings("avro").max_request_body == 10
    assert config.settings("http").max_request_body == 1024 * 1024


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


@pytest.mark.parametrize(
    ("description", "expected"),
    [
        ("tcp:0", "tcp:0:backlog=1024"),
        ("tcp:8888:interface=127.0.0.1", "tcp:8888:interface=127.0.0.1:backlog=1024"),
        ("tcp6:0:interface=\\:\\:1", "tcp6:0:interface=\\:\\:1:backlog=1024"),
        ("ssl:443:privateKey=k.pem", "ssl:443:privateKey=k.pem:backlog=1024"),
        ("unix:/run/q.sock", "unix:/run/q.sock:backlog=1024"),
        # The endpoint's own backlog is kept.
        ("tcp:0:backlog=7", "tcp:0:backlog=7"),
        ("tcp:0:backlog=7:interface=127.0.0.1", "tcp:0:backlog=7:interface=127.0.0.1"),
        # An escaped colon does not start a field: this path is not a backlog= option.
        ("unix:/tmp/x\\:backlog=3", "unix:/tmp/x\\:backlog=3:backlog=1024"),
        # Endpoint types without a backlog are left alone.
        ("systemd:domain=INET:index=0", "systemd:domain=INET:index=0"),
    ],
)
def test_stream_endpoints_get_a_long_listen_backlog(description, expected):
    assert with_backlog(description) == expected


@pytest_twisted.ensureDeferred
async def test_listeners_listen_with_backlog_1024_unless_the_endpoint_names_one(reactor, tmp_path):
    config = parse(
        {
            "storage": {"url": "memory://"},
            "listeners": [
                {"protocol": "http", "endpoint": "tcp:0:interface=127.0.0.1"},
                {"protocol": "stomp", "endpoint": "tcp:0:interface=127.0.0.1:backlog=7"},
                {"protocol": "stomp", "endpoint": f"unix:{tmp_path / 'stomp.sock'}"},
            ],
        }
    )
    gateway = Gateway(reactor, config)
    await gateway.listen()
    try:
        # What the listening socket was given (socket.listen(port.backlog) in Twisted).
        assert [p.backlog for p in gateway.ports] == [LISTEN_BACKLOG, 7, LISTEN_BACKLOG]
        assert LISTEN_BACKLOG == 1024
    finally:
        await gateway.stopService()
