"""bench.tenants' options, its attack list and the config it gives qgate (the benchmark
itself is run by hand: it takes minutes)."""

import tomllib

import pytest

from bench import _tenant_attacks, tenants
from qgate.core.quotas import QUOTA_KEYS
from qgate.gateway.config import parse


def test_every_attack_in_the_table_has_a_generator():
    assert set(tenants.ATTACKS) == set(_tenant_attacks.ATTACKS)


def test_attacks_are_chosen_by_name_and_an_unknown_one_is_refused():
    assert tenants.parse_args(["--attacks", "purge, queues"]).names == ["purge", "queues"]
    with pytest.raises(SystemExit):
        tenants.parse_args(["--attacks", "purge,nuke"])
    with pytest.raises(SystemExit):
        tenants.parse_args(["--quota", "max_frobs=1"])


def test_no_quotas_turns_off_every_quota_rate_and_the_auth_throttle():
    config = parse(tomllib.loads(tenants.auth_and_quotas(False, [])))
    assert config.auth.mode == "keys" and config.auth.failure_rate == 0
    assert all(config.quotas.get(key) == 0 for key in QUOTA_KEYS)


def test_default_quotas_are_qgate_defaults_and_a_quota_given_overrides_one():
    assert "[quotas]" not in tenants.auth_and_quotas(True, [])
    config = parse(tomllib.loads(tenants.auth_and_quotas(True, ["request_rate=200"])))
    assert config.quotas.request_rate == 200 and config.quotas.max_queues == 10_000


def test_percentile_is_nearest_rank():
    values = [float(v) for v in range(1, 101)]
    assert tenants.percentile(values, 50) == 50 and tenants.percentile(values, 99) == 99
    assert tenants.percentile([3.0], 99) == 3.0
