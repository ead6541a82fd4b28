"""The Avro schemas the suites share, as JSON values (each test file used to keep a copy).

``USER_V1``/``USER_V2`` are the evolution every protocol's tests use: V2 adds a field with a
default, so it reads V1. ``READING_V1``/``READING_V2`` do the same with a ``double`` (a JSON
integer is read as one). ``ROW`` has bytes, for container files; ``PERSON`` nests a record,
an array and defaults; ``EVERYTHING`` has one field of every kind, for generated round trips.
"""

from __future__ import annotations

from typing import Any


def record(name: str, *fields: dict[str, Any], namespace: str = "test") -> dict[str, Any]:
    """A record schema ``namespace.name`` with ``fields``."""
    return {"type": "record", "name": name, "namespace": namespace, "fields": list(fields)}


def with_fields(schema: dict[str, Any], *extra: dict[str, Any]) -> dict[str, Any]:
    """``schema`` with ``extra`` fields after its own."""
    return {**schema, "fields": [*schema["fields"], *extra]}


USER_V1 = record("User", {"name": "id", "type": "long"}, {"name": "name", "type": "string"})
USER_V2 = with_fields(USER_V1, {"name": "email", "type": ["null", "string"], "default": None})

READING_V1 = record(
    "Reading", {"name": "sensor", "type": "string"}, {"name": "value", "type": "double"}
)
READING_V2 = with_fields(READING_V1, {"name": "unit", "type": "string", "default": "C"})

ROW = record(
    "Row",
    {"name": "id", "type": "long"},
    {"name": "name", "type": "string"},
    {"name": "raw", "type": "bytes", "default": ""},
)

ADDRESS = {
    "type": "record",
    "name": "Address",
    "fields": [
        {"name": "zip", "type": "int"},
        {"name": "city", "type": "string", "default": "Paris"},
    ],
}
PERSON = record(
    "Person",
    {"name": "name", "type": "string"},
    {"name": "age", "type": ["null", "int"], "default": None},
    {"name": "address", "type": ADDRESS},
    {"name": "tags", "type": {"type": "array", "items": "string"}, "default": []},
    {"name": "avatar", "type": "bytes", "default": "\u00ff\u0000"},
)

POINT = {
    "type": "record",
    "name": "Point",
    "fields": [{"name": "x", "type": "double"}, {"name": "y", "type": "double"}],
}
EVERYTHING = record(
    "Everything",
    {"name": "b", "type": "boolean"},
    {"name": "i", "type": "int"},
    {"name": "l", "type": "long"},
    {"name": "f", "type": "float"},
    {"name": "d", "type": "double"},
    {"name": "s", "type": "string"},
    {"name": "raw", "type": "bytes"},
    {"name": "hash", "type": {"type": "fixed", "name": "Hash", "size": 4}},
    {"name": "suit", "type": {"type": "enum", "name": "Suit", "symbols": ["S", "H", "D", "C"]}},
    {"name": "list", "type": {"type": "array", "items": "long"}},
    {"name": "dict", "type": {"type": "map", "values": ["null", "string"]}},
    {"name": "choice", "type": ["null", "int", "string", "Suit"]},
    {"name": "point", "type": POINT},
    {"name": "points", "type": {"type": "array", "items": "Point"}},
    {"name": "when", "type": {"type": "long", "logicalType": "timestamp-millis"}},
    namespace="test.gen",
)
