from __future__ import annotations

import os
import tomllib
from pathlib import Path

import pytest

from qgate.gateway.config import Config, ConfigError, load, parse
from qgate.gateway.hub import check_shareable


def test_the_embedded_default_listens_on_localhost_with_sqlite():
    config = Config()
    assert config.storage.url == "sqlite:///var/qgate.db"
    assert [(x.protocol, x.endpoint) for x in config.listeners] == [
        ("http", "tcp:8888:interface=127.0.0.1"),
        ("stomp", "tcp:61613:interface=127.0.0.1"),
        ("admin", "tcp:8899:interface=127.0.0.1"),
    ]
    assert load("conf/qgate.toml") == config  # the shipped file says exactly the defaults


def test_shipped_postgres_example_parses():
    config = load("conf/postgres.toml")
    assert config.storage.url.startswith("postgresql://") and config.auth.mode == "keys"


@pytest.mark.parametrize(
    ("data", "message"),
    [
        ({"storage": {"uri": "x"}}, "storage.uri: unknown key"),
        ({"colour": 1}, "colour: unknown key"),
        ({"auth": {"mode": "magic"}}, "auth.mode: must be one of none, keys"),
        ({"http": {"max_wait": "long"}}, "http.max_wait: expected a number"),
        ({"stomp": {"prefetch": 1.5}}, "stomp.prefetch: expected a whole number"),
        ({"storage": {"url": "mysql://x"}}, "storage.url: use sqlite"),
        ({"storage": {"busy_timeout": 0}}, "storage.busy_timeout: must be more than 0"),
        ({"storage": {"bulk_slice": 0}}, "storage.bulk_slice: must be at least 1"),
        (
            {"listeners": [{"protocol": "ftp", "endpoint": "tcp:1"}]},
            "listeners[0].protocol: must be one of",
        ),
        ({"listeners": [{"protocol": "http"}]}, "listeners[0]"),
        (
            {
                "listeners": [
                    {
                        "protocol": "http",
                        "endpoint": "tcp:1",
                        "tls": {"certificate": "/no", "key": "/no"},
                    }
                ]
            },
            "listeners[0].tls.certificate: no such file",
        ),
        (
            {"listeners": [{"protocol": "http", "endpoint": "tcp:1", "port": 3}]},
            "listeners[0].port: unknown key",
        ),
        ({"listeners": []}, "at least one listener"),
        ({"limits": {"max_body": True}}, "limits.max_body: expected a whole number"),
        ({"auth": {"mode": "keys"}, "storage": {"url": "memory://"}}, "auth.mode: keys need"),
        ({"stomp": {"lease": "long"}}, "stomp.lease: expected a number"),
        ({"stomp": {"lease": 0.5}}, "stomp.lease: must be between limits.min_lease (1)"),
        ({"stomp": {"lease": 86400}}, "stomp.lease: must be between"),
        (
            {"stomp": {"lease": 5}, "limits": {"min_lease": 10}},
            "stomp.lease: must be between limits.min_lease (10)",
        ),
        ({"stomp": {"leases": 5}}, "stomp.leases: unknown key"),
    ],
)
def test_bad_configs_stop_start_up_naming_the_key(data, message):
    with pytest.raises(ConfigError) as e:
        parse(data)
    assert message in str(e.value)


def test_stomp_lease_defaults_to_30_seconds_and_is_configurable():
    assert Config().settings("stomp").lease == 30.0
    config = parse({"stomp": {"lease": 5}})
    lease = config.settings("stomp").lease
    assert lease == 5.0 and isinstance(lease, float)
    longest = parse({"stomp": {"lease": 300}, "limits": {"max_lease": 300}})
    assert longest.settings("stomp").lease == 300


def test_config_objects_are_frozen():
    config = parse({"http": {"max_wait": 10}})
    assert config.settings("http").max_wait == 10.0
    with pytest.raises(AttributeError):
        config.settings("http").max_wait = 5  # type: ignore[misc]


def test_a_missing_or_broken_file_is_a_config_error(tmp_path):
    with pytest.raises(ConfigError):
        load(tmp_path / "missing.toml")
    bad = tmp_path / "bad.toml"
    bad.write_text("[storage\n")
    with pytest.raises(ConfigError) as e:
        load(bad)
    assert "not valid TOML" in str(e.value)


def test_workers_default_to_one_a_core_and_take_a_number():
    assert Config().server.workers == "auto"
    assert Config().server.worker_count == (os.cpu_count() or 1)
    assert parse({"server": {"workers": 3}}).server.worker_count == 3


@pytest.mark.parametrize("value", [0, -1, 1.5, "many", True, 1000])
def test_a_bad_worker_count_is_refused_naming_the_key(value):
    with pytest.raises(ConfigError, match="server.workers"):
        parse({"server": {"workers": value}})


def test_workers_cannot_share_an_endpoint_they_cannot_adopt():
    config = parse({"listeners": [{"protocol": "http", "endpoint": "ssl:8443:privateKey=k.pem"}]})
    with pytest.raises(ConfigError, match=r"listeners\[0\].endpoint: 'ssl'"):
        check_shareable(config)


def test_the_shipped_config_documents_the_workers_key():
    text = (Path(__file__).resolve().parents[2] / "conf" / "qgate.toml").read_text()
    assert load(None).server == parse(tomllib.loads(text)).server
    assert 'workers = "auto"' in text


def test_quotas_take_their_defaults_overrides_and_refuse_unknown_keys_or_bad_values():
    from qgate.core.quotas import Quotas

    assert parse({}).quotas == Quotas()
    config = parse({"quotas": {"max_queues": 5, "publish_rate": 0}})
    assert config.quotas.max_queues == 5 and config.quotas.publish_rate == 0.0
    for bad, named in (
        ({"max_queue": 5}, "quotas.max_queue: unknown key"),
        ({"max_queues": -1}, "quotas.max_queues"),
        ({"max_queues": 1.5}, "quotas.max_queues"),
    ):
        with pytest.raises(ConfigError, match=named):
            parse({"quotas": bad})


def test_queues_wait_jitter_is_a_fraction_below_one():
    assert Config().queues.wait_jitter == 0.2
    assert parse({"queues": {"wait_jitter": 0.0}}).queues.wait_jitter == 0.0
    with pytest.raises(ConfigError, match="queues.wait_jitter"):
        parse({"queues": {"wait_jitter": 1.0}})
