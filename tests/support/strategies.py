"""Hypothesis strategies for JSON values that match an Avro type (core.schemas' convention)."""

from __future__ import annotations

from typing import Any

from hypothesis import strategies as st

from qgate.core.schemas import PRIMITIVES, AvroType

_FLOAT32 = st.floats(width=32, allow_nan=False, allow_infinity=False)
_NON_FINITE = st.sampled_from(["NaN", "Infinity", "-Infinity"])
_LATIN1 = st.binary(max_size=12).map(lambda b: b.decode("latin-1"))
_TEXT = st.text(max_size=12)


def json_values(avro_type: AvroType) -> st.SearchStrategy[Any]:
    """JSON values (as json.loads gives them) that ``avro_type.from_json`` accepts."""
    return _for(avro_type.node, avro_type.names)


def _deref(node: Any, names: Any) -> Any:
    while True:
        if isinstance(node, str):
            return node if node in PRIMITIVES else names[node]
        if isinstance(node, dict) and not (
            isinstance(node["type"], str)
            and node["type"] in {*PRIMITIVES, "record", "error", "enum", "fixed", "array", "map"}
        ):
            node = node["type"]
            continue
        return node


def _for(node: Any, names: Any) -> st.SearchStrategy[Any]:
    node = _deref(node, names)
    if isinstance(node, list):
        return st.one_of([_for(b, names) for b in node])
    kind = node if isinstance(node, str) else node["type"]
    if kind == "null":
        return st.none()
    if kind == "boolean":
        return st.booleans()
    if kind == "int":
        return st.integers(-(2**31), 2**31 - 1)
    if kind == "long":
        return st.integers(-(2**63), 2**63 - 1)
    if kind == "float":
        return _FLOAT32 | _NON_FINITE
    if kind == "double":
        return st.floats(allow_nan=False, allow_infinity=False) | _NON_FINITE
    if kind == "string":
        return _TEXT
    if kind == "bytes":
        return _LATIN1
    if kind == "fixed":
        size = node["size"]
        return st.binary(min_size=size, max_size=size).map(lambda b: b.decode("latin-1"))
    if kind == "enum":
        return st.sampled_from(node["symbols"])
    if kind == "array":
        return st.lists(_for(node["items"], names), max_size=4)
    if kind == "map":
        return st.dictionaries(_TEXT, _for(node["values"], names), max_size=4)
    # record or error: every field present, so the JSON round trip is exact.
    return st.fixed_dictionaries({f["name"]: _for(f["type"], names) for f in node["fields"]})
