"""Strict JSON (core.jsonsafe) and the core's use of it: what is accepted can be served."""

from __future__ import annotations

import json
import math
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from twisted.internet.task import Clock

from qgate.core import jsonsafe
from qgate.core.errors import InvalidArgument
from qgate.core.model import NewMessage, QueueOptions
from qgate.core.service import QueueService
from qgate.storage.memory import MemoryStorage
from tests.support.core import TEST_LIMITS
from tests.support.deferreds import fired

NOT_STRICT = [
    rb'"\ud800"',
    rb'"\uDFFF"',
    rb'["ok", {"\udbff": 1}]',
    rb'"\ud800\ud800"',  # two highs are not a pair
    b"NaN",
    b"[Infinity]",
    b'{"a": -Infinity}',
    b"1e400",
    b"-1E+309",
    b"1" * 400 + b".0",
    b"9" * 5000,
    b"[" * 100_000,
    b"{broken",
    b"\xff\xfe",
    b"",
]


@pytest.mark.parametrize("data", NOT_STRICT)
def test_loads_refuses_what_is_not_strict_json(data: bytes) -> None:
    with pytest.raises(jsonsafe.JSONValueError):
        jsonsafe.loads(data)


def test_loads_reads_strict_json_whole() -> None:
    doc = rb'{"smile": "\ud83d\ude00", "slash": "\\ud800", "big": 123456789012345678901234567890}'
    assert jsonsafe.loads(doc) == {
        "smile": "\U0001f600",
        "slash": "\\ud800",  # an escaped backslash, not a surrogate
        "big": 123456789012345678901234567890,
    }
    assert jsonsafe.loads("[1e308, 5e-324, 1e-400]") == [1e308, 5e-324, 0.0]


def test_int_bound_refuses_integers_past_it() -> None:
    assert jsonsafe.loads(b"[9223372036854775807, -9223372036854775808]", int_bound=2**63)
    for text in (b"9223372036854775808", b"-9223372036854775809", b"7" * 5000):
        with pytest.raises(jsonsafe.IntegerTooLarge):
            jsonsafe.loads(text, int_bound=2**63)
    with pytest.raises(jsonsafe.IntegerTooLarge):
        jsonsafe.loads(b"7" * 5000)


def test_a_str_with_a_raw_lone_surrogate_is_refused() -> None:
    with pytest.raises(jsonsafe.JSONValueError):
        jsonsafe.loads('"a\ud800"')


@pytest.mark.parametrize(
    "value",
    ["\ud800", {"\udc00": 1}, math.nan, [math.inf], pytest.param(10**5000, id="10**5000")],
)
def test_dumps_refuses_what_is_not_json_and_lenient_writes_it_anyway(value: Any) -> None:
    with pytest.raises(jsonsafe.JSONValueError):
        jsonsafe.dumps(value)
    written = jsonsafe.dumps_lenient(value)
    json.loads(written.decode("utf-8"), parse_constant=pytest.fail)


def test_lenient_uses_the_replacement_character_and_null() -> None:
    value = {"a\ud800": ["x\udfffy", math.nan, -math.inf, 1.5, True]}
    assert json.loads(jsonsafe.dumps_lenient(value)) == {
        "a\ufffd": ["x\ufffdy", None, None, 1.5, True]
    }


# -- fuzz: whatever loads returns, dumps writes, and it reads back the same ------------------

# Any code point, surrogates included, and often those near the surrogate range.
_strings = st.text(st.characters(codec=None, exclude_categories=()), max_size=6) | st.text(
    st.characters(min_codepoint=0xD7F0, max_codepoint=0xE010), max_size=3
)
_values = st.recursive(
    st.none()
    | st.booleans()
    | st.integers()
    | st.floats()
    | st.sampled_from([math.nan, math.inf, -math.inf])
    | _strings,
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(_strings, inner, max_size=4),
    max_leaves=12,
)
# Python's json writes what it reads, so lone surrogates (as \u escapes), NaN and Infinity
# all appear in these texts; plus number literals that overflow a double.
_texts = st.one_of(
    _values.map(json.dumps),
    st.builds(lambda a, b: f"[{a}e{b}]", st.integers(), st.integers(-500, 500)),
    st.binary(max_size=40).map(lambda b: b.decode("latin-1")),
)


@settings(max_examples=300, deadline=None)
@given(_texts)
def test_anything_loads_returns_can_be_served(text: str) -> None:
    for data in (text, text.encode("utf-8", "surrogatepass")):
        try:
            value = jsonsafe.loads(data)
        except jsonsafe.JSONValueError:
            continue
        written = jsonsafe.dumps(value)
        assert jsonsafe.loads(written) == value
        written.decode("utf-8")  # strict UTF-8, no surrogate escapes left to decode


# -- the core --------------------------------------------------------------------------------


def service() -> QueueService:
    return QueueService(Clock(), MemoryStorage(), MemoryStorage(), limits=TEST_LIMITS)


@pytest.mark.parametrize("body", [rb'"\ud800"', b"[NaN]", b'{"n": 1e999}', b"{", b"\xff"])
def test_the_core_refuses_json_typed_bodies_that_are_not_strict_json(body: bytes) -> None:
    s = service()
    fired(s.create_queue("t", "q"))
    good = NewMessage(b'{"ok": true}', "application/json")
    with pytest.raises(InvalidArgument) as e:
        fired(s.publish("t", "q", [good, NewMessage(body, "Application/JSON; charset=utf-8")]))
    assert e.value.field == "messages[1].body"
    assert fired(s.queue_stats("t", "q")).total == 0
    # The same bytes under a type that is not JSON are opaque, and stored.
    fired(s.publish("t", "q", [NewMessage(body, "application/octet-stream")]))


@pytest.mark.parametrize(
    "metadata", [{"a": "\ud800"}, {"\udfff": 1}, {"a": math.nan}, {"a": [math.inf]}, {"a": {1, 2}}]
)
def test_the_core_refuses_metadata_that_is_not_strict_json(metadata: dict[str, Any]) -> None:
    s = service()
    with pytest.raises(InvalidArgument) as e:
        fired(s.create_queue("t", "q", None, metadata))
    assert e.value.field == "metadata"
    assert fired(s.list_queues("t")) == []
    fired(s.create_queue("t", "q"))
    with pytest.raises(InvalidArgument):
        fired(s.update_queue("t", "q", None, metadata))
    assert fired(s.get_queue("t", "q")).metadata == {}


@pytest.mark.parametrize(
    ("data", "field"),
    [
        ({"overflow": []}, "overflow"),
        ({"overflow": "explode"}, "overflow"),
        ({"colour": 1}, "colour"),
    ],
)
def test_options_from_a_dict_name_the_option_they_refuse(data: dict[str, Any], field: str) -> None:
    with pytest.raises(InvalidArgument) as e:
        QueueOptions.from_dict(data)
    assert e.value.field == field
    assert QueueOptions.from_dict(QueueOptions().to_dict()) == QueueOptions()
