"""Fuzzing the TOML configuration: any file, any tables and values, is a ``Config`` or a
``ConfigError`` naming what is wrong, never another exception at start-up."""

from __future__ import annotations

from dataclasses import fields
from pathlib import Path
from typing import Any

from hypothesis import example, given
from hypothesis import strategies as st

from qgate.core.limits import Limits
from qgate.gateway.config import (
    AuthConfig,
    ConfigError,
    ListenerConfig,
    QueueDefaults,
    StorageConfig,
    TLSConfig,
    load,
    parse,
)
from qgate.gateway.registry import PROTOCOLS, settings_class
from tests.support.fuzzing import FUZZ_TIMEOUT, fuzz

pytestmark = FUZZ_TIMEOUT


def _keys(cls: type) -> list[str]:
    return [f.name for f in fields(cls)]  # type: ignore[arg-type]


_scalars = st.one_of(
    st.booleans(),
    st.integers(-(2**63), 2**63 - 1),
    st.floats(),
    st.sampled_from(["", "FULL", "NORMAL", "memory", "none", "keys", "http", "stomp", "tcp:0",
                     "sqlite:///x.db", "memory://", "postgresql://u@h/d", "TLSv1.3", "*", "x"]),
    st.text(max_size=8),
)  # fmt: skip
_values = st.recursive(
    _scalars,
    lambda inner: (
        st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=6), inner, max_size=3)
    ),
    max_leaves=6,
)


def _table(cls: type) -> st.SearchStrategy[dict[str, Any]]:
    names = st.sampled_from(_keys(cls)) | st.text(max_size=6)
    return st.dictionaries(names, _values, max_size=4)


_listener = st.fixed_dictionaries(
    {},
    optional={
        "protocol": st.sampled_from(["http", "stomp", "avro", "nope"]) | _values,
        "endpoint": st.sampled_from(["tcp:0", "unix:/x", "nonsense"]) | _values,
        "tls": _table(TLSConfig) | _values,
    },
)
_tables: dict[str, Any] = {
    "storage": _table(StorageConfig),
    "auth": _table(AuthConfig),
    "limits": _table(Limits),
    "queues": _table(QueueDefaults),
    "listeners": st.lists(_listener | _values, max_size=3) | _values,
    **{name: _table(settings_class(name)) for name in PROTOCOLS},
}
configs = st.fixed_dictionaries({}, optional=_tables) | st.dictionaries(
    st.text(max_size=6), _values, max_size=3
)


@fuzz(150)
@given(data=configs)
@example(data={"limits": {"max_wait": float("nan")}})
@example(data={"storage": {"busy_timeout": float("inf")}})
def test_any_tables_are_a_config_or_a_config_error(data: dict[str, Any]) -> None:
    try:
        parse(data)
    except ConfigError as e:
        assert str(e)


@fuzz(200)
@given(text=st.text(max_size=80) | st.binary(max_size=40).map(lambda b: b.decode("latin-1")))
@example(text="[storage]\nurl = 1\n")
@example(text="listeners = [1]")
def test_any_file_is_a_config_or_a_config_error(tmp_path: Path, text: str) -> None:
    path = tmp_path / "qgate.toml"
    path.write_bytes(text.encode("utf-8", "surrogatepass"))
    try:
        load(path)
    except ConfigError as e:
        assert str(e)


def test_listener_defaults_need_no_table() -> None:
    assert parse({"listeners": [{"protocol": "http", "endpoint": "tcp:0"}]}).listeners == (
        ListenerConfig("http", "tcp:0"),
    )
