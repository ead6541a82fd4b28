"""core.schemas: parsing, fingerprints, JSON <-> Avro, resolution and compatibility."""

from __future__ import annotations

import io
import json
from typing import Any

import avro.compatibility
import avro.io
import avro.schema
import fastavro
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from qgate.core.errors import InvalidArgument, TooLarge
from qgate.core.schemas import (
    AvroSchema,
    IncompatibleSchema,
    InvalidAvroData,
    InvalidSchema,
    SchemaCodec,
    UnknownSchema,
    fingerprint_bytes,
    from_single_object,
    is_single_object,
    parse_schema,
    to_json,
    to_single_object,
)
from tests.support.schemas import EVERYTHING, PERSON
from tests.support.strategies import json_values

NESTED: dict[str, Any] = {
    "type": "map",
    "values": {"type": "array", "items": ["null", "test.gen.Everything"]},
}
UNION: list[Any] = [
    "null",
    "long",
    "string",
    {"type": "array", "items": "boolean"},
    {
        "type": "record",
        "name": "Pair",
        "fields": [{"name": "a", "type": "int"}, {"name": "b", "type": "bytes"}],
    },
]


def fails(f: Any, *args: Any, **kwargs: Any) -> InvalidArgument:
    with pytest.raises(InvalidArgument) as info:
        f(*args, **kwargs)
    return info.value


# -- parsing -------------------------------------------------------------------------------


def test_parse_accepts_text_bytes_and_json_values() -> None:
    a = parse_schema(json.dumps(PERSON))
    b = parse_schema(json.dumps(PERSON).encode())
    c = parse_schema(PERSON)
    assert a.fingerprint == b.fingerprint == c.fingerprint
    assert isinstance(a, AvroSchema)
    assert a.definition == PERSON


def test_fingerprints_are_crc64_avro_of_the_canonical_form() -> None:
    # The vector of the Avro test suite (share/test/data/schema-tests.txt) for "null".
    assert parse_schema('"null"').fingerprint == 7195948357588979594
    for text in ('"int"', json.dumps(PERSON), '{"type":"fixed","name":"F","size":3}'):
        ours = parse_schema(text)
        theirs = avro.schema.parse(text)
        assert ours.fingerprint_bytes == theirs.fingerprint()  # CRC-64-AVRO, little-endian
        assert ours.canonical == theirs.canonical_form


def test_canonical_form_follows_the_spec_where_apache_python_does_not() -> None:
    """[PRIMITIVES] and named references: apache avro 1.12 keeps {"type":"int"} for a
    logical int and repeats a named type's definition; the spec and fastavro do not."""
    s = parse_schema(
        {
            "type": "record",
            "name": "R",
            "namespace": "n",
            "doc": "dropped",
            "fields": [
                {"name": "day", "type": {"type": "int", "logicalType": "date"}},
                {"name": "a", "type": {"type": "fixed", "name": "F", "size": 2}},
                {"name": "b", "type": "F"},
            ],
        }
    )
    assert s.canonical == (
        '{"name":"n.R","type":"record","fields":[{"name":"day","type":"int"},'
        '{"name":"a","type":{"name":"n.F","type":"fixed","size":2}},{"name":"b","type":"n.F"}]}'
    )


def test_equivalent_schemas_share_a_fingerprint() -> None:
    spaced = {
        "doc": "x",
        "type": "record",
        "fields": PERSON["fields"],
        "namespace": "test",
        "name": "Person",
    }
    assert parse_schema(spaced).fingerprint == parse_schema(PERSON).fingerprint
    assert parse_schema('{"type": "int"}').fingerprint == parse_schema('"int"').fingerprint


@pytest.mark.parametrize(
    ("schema", "words"),
    [
        ('{"type": "record"', "not JSON"),
        ("42", "not a schema"),
        ('"Nope"', "Nope"),
        ({"type": "record", "name": "R", "fields": [{"name": "a", "type": "int"}] * 2}, "twice"),
        ({"type": "record", "name": "1R", "fields": []}, "not a valid Avro name"),
        ({"type": "record", "name": "R", "fields": [{"name": "a-b", "type": "int"}]}, "field name"),
        ({"type": "record", "name": "int", "fields": []}, "primitive"),
        ({"type": "fixed", "name": "F", "size": -1}, "size"),
        (["int", "int"], "twice"),
        (["int", ["string"]], "another union"),
        ({"type": "enum", "name": "E", "symbols": ["A", "A"]}, "unique"),
        # spec "Records": a union's default is for its first branch.
        (
            {
                "type": "record",
                "name": "R",
                "fields": [{"name": "a", "type": ["null", "int"], "default": 1}],
            },
            "R.a",
        ),
        (
            {
                "type": "record",
                "name": "R",
                "fields": [{"name": "a", "type": "int", "default": 2**40}],
            },
            "range",
        ),
        (
            {
                "type": "record",
                "name": "R",
                "fields": [{"name": "a", "type": "bytes", "default": "\u0100"}],
            },
            "0-255",
        ),
        (
            {"type": "record", "name": "L", "fields": [{"name": "next", "type": ["null", "L"]}]},
            "recursive",
        ),
        ({"type": "array", "items": "null"}, "zero bytes"),
        ({"type": "array", "items": {"type": "record", "name": "E", "fields": []}}, "zero bytes"),
    ],
)
def test_invalid_schemas_are_refused_with_the_reason(schema: Any, words: str) -> None:
    error = fails(parse_schema, schema)
    assert isinstance(error, InvalidSchema)
    assert error.field == "schema"
    assert words in error.description


def test_mutually_recursive_types_are_refused() -> None:
    schema = {
        "type": "record",
        "name": "A",
        "fields": [
            {
                "name": "b",
                "type": {
                    "type": "record",
                    "name": "B",
                    "fields": [{"name": "a", "type": ["null", "A"]}],
                },
            }
        ],
    }
    assert "recursive" in fails(parse_schema, schema).description


def test_large_schemas_are_refused() -> None:
    big = {"type": "enum", "name": "E", "symbols": [f"S{i}" for i in range(20000)]}
    assert isinstance(fails(parse_schema, big), TooLarge)
    assert parse_schema(big, max_size=1 << 20).definition == big


# -- JSON -> Avro -> JSON ---------------------------------------------------------------------


def test_json_round_trips_and_fills_defaults() -> None:
    s = parse_schema(PERSON)
    data = s.encode_json({"name": "Ann", "address": {"zip": 75001}})
    assert to_json(s.decode(data)) == {
        "name": "Ann",
        "age": None,
        "address": {"zip": 75001, "city": "Paris"},
        "tags": [],
        "avatar": "\u00ff\u0000",
    }


def test_bytes_are_strings_of_code_points_0_to_255() -> None:
    s = parse_schema('"bytes"')
    assert s.encode_json("\u00ff\u0001A") == b"\x06\xff\x01A"
    assert s.decode(b"\x06\xff\x01A") == b"\xff\x01A"
    assert to_json(b"\xff\x01A") == "\u00ff\u0001A"


def test_non_finite_floats_are_strings_in_json() -> None:
    s = parse_schema({"type": "array", "items": "double"})
    value = s.decode(s.encode_json(["NaN", "Infinity", "-Infinity", 1.5]))
    assert to_json(value) == ["NaN", "Infinity", "-Infinity", 1.5]


def test_a_union_takes_the_first_branch_that_holds_the_value_exactly() -> None:
    s = parse_schema(["null", "float", "double"])
    assert s.decode(s.encode_json(0.1)) == 0.1  # float32 would round it: double is used
    assert s.encode_json(0.5)[:1] == b"\x02"  # exactly a float32: branch 1
    assert s.encode_json(None) == b"\x00"


@pytest.mark.parametrize(
    ("value", "path", "words"),
    [
        (
            {"name": "A", "address": {"zip": "75001"}},
            "body.address.zip",
            'expected int, got "75001"',
        ),
        ({"name": "A", "address": {"zip": 2**31}}, "body.address.zip", "out of range for int"),
        ({"name": "A"}, "body.address", "missing required field"),
        ({"name": "A", "address": {"zip": 1}, "nick": "x"}, "body.nick", "no field 'nick'"),
        ({"name": "A", "address": {"zip": 1}, "age": "x"}, "body.age", "expected null or int"),
        ({"name": "A", "address": {"zip": 1}, "tags": ["a", 3]}, "body.tags[1]", "expected string"),
        ({"name": "A", "address": {"zip": 1}, "avatar": "\u20ac"}, "body.avatar", "0-255"),
        ({"name": "A", "address": 7}, "body.address", "expected record test.Address"),
        ({"name": True, "address": {"zip": 1}}, "body.name", "expected string, got true"),
        ([], "body", "expected record test.Person, got an array"),
    ],
)
def test_json_errors_name_the_field_path(value: Any, path: str, words: str) -> None:
    error = fails(parse_schema(PERSON).encode_json, value)
    assert isinstance(error, InvalidAvroData)
    assert error.field == path
    assert str(error).startswith(f"{path}: ")
    assert words in str(error)


def test_union_errors_name_the_field_inside_the_only_plausible_branch() -> None:
    s = parse_schema(
        {"type": "record", "name": "R", "fields": [{"name": "home", "type": ["null", PERSON]}]}
    )
    error = fails(s.encode_json, {"home": {"name": "A", "address": {"zip": "x"}}}, path="msg")
    assert error.field == "msg.home.address.zip"


def test_map_keys_appear_in_paths() -> None:
    s = parse_schema({"type": "map", "values": "int"})
    assert fails(s.encode_json, {"ok": 1, "bad": "x"}).field == "body.bad"
    assert fails(s.encode_json, {"a b": "x"}).field == 'body["a b"]'


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.data())
def test_generated_values_round_trip_and_match_apache_avro(data: st.DataObject) -> None:
    """JSON -> Avro -> JSON is the identity, and the binary is what apache avro reads."""
    for definition in (EVERYTHING, UNION):
        s = parse_schema(definition)
        value = data.draw(json_values(s))
        encoded = s.encode_json(value)
        decoded = s.decode(encoded)
        assert to_json(decoded) == value
        # apache avro turns timestamp-millis into datetimes (and overflows on far ones):
        # it reads the same binary with the underlying long instead.
        theirs = avro.io.DatumReader(avro.schema.parse(json.dumps(_no_logical(definition))))
        assert to_json(theirs.read(avro.io.BinaryDecoder(io.BytesIO(encoded)))) == value


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.data())
def test_generated_nested_values_round_trip(data: st.DataObject) -> None:
    s = parse_schema(
        {
            "type": "record",
            "name": "Box",
            "namespace": "test.gen",
            "fields": [{"name": "e", "type": EVERYTHING}, {"name": "n", "type": NESTED}],
        }
    )
    value = data.draw(json_values(s))
    assert to_json(s.decode(s.encode_json(value))) == value


def _no_logical(definition: Any) -> Any:
    if isinstance(definition, dict):
        return {k: _no_logical(v) for k, v in definition.items() if k != "logicalType"}
    if isinstance(definition, list):
        return [_no_logical(v) for v in definition]
    return definition


def test_malformed_binary_names_the_field() -> None:
    s = parse_schema(PERSON)
    data = s.encode_json({"name": "Ann", "address": {"zip": 1, "city": "Lyon"}})
    error = fails(s.decode, data[:6])
    assert error.field == "body.address.city"
    assert "truncated" in str(error)
    assert fails(s.decode, data + b"\x00").field == "body"  # left-over bytes


def test_invalid_utf8_is_malformed() -> None:
    assert "malformed" in str(fails(parse_schema('"string"').decode, b"\x04\xff\xfe"))


# -- resolution and compatibility (spec "Schema Resolution") ----------------------------------

V1: dict[str, Any] = {
    "type": "record",
    "name": "Order",
    "fields": [
        {"name": "id", "type": "int"},
        {"name": "status", "type": {"type": "enum", "name": "Status", "symbols": ["NEW", "PAID"]}},
        {"name": "lines", "type": {"type": "array", "items": "string"}},
    ],
}


def evolve(**changes: Any) -> dict[str, Any]:
    fields = [dict(f) for f in V1["fields"]]
    for f in fields:
        if f["name"] in changes:
            f.update(changes.pop(f["name"]))
    extra = changes.pop("add", [])
    drop = changes.pop("drop", [])
    assert not changes
    return {**V1, "fields": [f for f in fields if f["name"] not in drop] + extra}


STATUS3 = {"type": "enum", "name": "Status", "symbols": ["NEW", "PAID", "SHIPPED"]}
EVOLUTIONS: list[tuple[str, dict[str, Any], dict[str, Any], bool]] = [
    # (what, writer, reader, reader can read writer)
    ("same schema", V1, V1, True),
    (
        "field added with a default",
        V1,
        evolve(add=[{"name": "note", "type": "string", "default": ""}]),
        True,
    ),
    ("field added without a default", V1, evolve(add=[{"name": "note", "type": "string"}]), False),
    ("field removed", V1, evolve(drop=["lines"]), True),
    ("int promoted to long", V1, evolve(id={"type": "long"}), True),
    ("int promoted to double", V1, evolve(id={"type": "double"}), True),
    ("long narrowed to int", evolve(id={"type": "long"}), V1, False),
    ("int changed to string", V1, evolve(id={"type": "string"}), False),
    ("string read as bytes", V1, evolve(lines={"type": {"type": "array", "items": "bytes"}}), True),
    ("enum symbol added", V1, evolve(status={"type": STATUS3}), True),
    ("enum symbol removed", evolve(status={"type": STATUS3}), V1, False),
    (
        "enum symbol removed, reader default",
        evolve(status={"type": STATUS3}),
        evolve(status={"type": {**V1["fields"][1]["type"], "default": "NEW"}}),
        True,
    ),
    ("field made optional", V1, evolve(id={"type": ["null", "int"]}), True),
    ("optional field made required", evolve(id={"type": ["null", "int"]}), V1, False),
    (
        "union widened",
        evolve(id={"type": ["null", "int"]}),
        evolve(id={"type": ["null", "int", "string"]}),
        True,
    ),
    ("record renamed", V1, {**V1, "name": "Purchase"}, False),
    ("record renamed with alias", V1, {**V1, "name": "Purchase", "aliases": ["Order"]}, True),
    ("field renamed with alias", V1, evolve(id={"name": "key", "aliases": ["id"]}), True),
    ("namespace changed", V1, {**V1, "namespace": "other"}, True),
    ("array items changed", V1, evolve(lines={"type": {"type": "array", "items": "int"}}), False),
    ("array became map", V1, evolve(lines={"type": {"type": "map", "values": "string"}}), False),
]


@pytest.mark.parametrize(
    ("what", "writer", "reader", "expected"), EVOLUTIONS, ids=[e[0] for e in EVOLUTIONS]
)
def test_compatibility_follows_the_resolution_rules(
    what: str, writer: dict[str, Any], reader: dict[str, Any], expected: bool
) -> None:
    result = parse_schema(reader).can_read(parse_schema(writer))
    assert bool(result) is expected, str(result)
    # apache avro's checker agrees on each of these cases.
    checker = avro.compatibility.ReaderWriterCompatibilityChecker()
    theirs = checker.get_compatibility(
        avro.schema.parse(json.dumps(reader)), avro.schema.parse(json.dumps(writer))
    )
    assert (
        theirs.compatibility is avro.compatibility.SchemaCompatibilityType.compatible
    ) is expected


# Not parametrized: pytest-twisted re-wraps hypothesis' inner test once per parametrized
# item of the same function, which nests its reactor calls and fails every item but one.
@settings(max_examples=150, deadline=None)
@given(case=st.sampled_from([e for e in EVOLUTIONS if e[3]]), data=st.data())
def test_compatible_schemas_read_every_generated_value(
    case: tuple[str, dict[str, Any], dict[str, Any], bool], data: st.DataObject
) -> None:
    """Soundness: when can_read says yes, fastavro's resolution reads the data."""
    _, writer, reader, _ = case
    w, r = parse_schema(writer), parse_schema(reader)
    assert r.can_read(w)
    value = data.draw(json_values(w))
    resolved = r.decode(w.encode_json(value), w)
    assert set(resolved) == {f["name"] for f in reader["fields"]}
    assert r.decode(r.write(resolved)) == resolved


def test_incompatibility_names_the_field_path() -> None:
    writer = parse_schema(PERSON)
    changed = json.loads(json.dumps(PERSON))
    changed["fields"][2]["type"]["fields"][0]["type"] = "string"
    result = parse_schema(changed).can_read(writer)
    assert not result
    assert result.path == "body.address.zip"
    assert "int cannot be read as string" in result.reason
    with pytest.raises(IncompatibleSchema) as info:
        parse_schema(changed).check_can_read(writer)
    assert info.value.path == "body.address.zip"


def test_reader_union_uses_its_first_matching_branch() -> None:
    """spec: "The first schema in the reader's union that matches ... is resolved"."""
    writer = parse_schema({"type": "record", "name": "R", "fields": [{"name": "x", "type": "int"}]})
    a = {"type": "record", "name": "a.R", "fields": [{"name": "x", "type": "string"}]}
    b = {"type": "record", "name": "b.R", "fields": [{"name": "x", "type": "int"}]}
    assert not parse_schema([a, b]).can_read(writer)  # a.R matches by name first
    assert parse_schema([b, a]).can_read(writer)


def test_decimal_scale_must_match() -> None:
    def dec(scale: int) -> dict[str, Any]:
        return {"type": "bytes", "logicalType": "decimal", "precision": 9, "scale": scale}

    assert parse_schema(dec(2)).can_read(parse_schema(dec(2)))
    assert not parse_schema(dec(3)).can_read(parse_schema(dec(2)))


# -- the codec ---------------------------------------------------------------------------------


def test_codec_keeps_schemas_by_fingerprint_and_old_messages_resolve() -> None:
    codec = SchemaCodec()
    v1 = codec.add(V1)
    v2 = codec.add(
        evolve(add=[{"name": "note", "type": "string", "default": "-"}], id={"type": "long"})
    )
    assert codec.add(json.dumps(V1)) is v1 and codec.get(v1.fingerprint) is v1
    stored = v1.encode_json({"id": 7, "status": "PAID", "lines": ["a"]})
    assert to_json(v2.decode(stored, v1)) == {
        "id": 7,
        "status": "PAID",
        "lines": ["a"],
        "note": "-",
    }
    assert v2.can_read(v1)
    backwards = v1.can_read(v2)  # v1 cannot read v2: long does not narrow to int
    assert not backwards and backwards.path == "body.id"


def test_unknown_fingerprints_are_refused() -> None:
    error = fails(SchemaCodec().get, 42)
    assert isinstance(error, UnknownSchema)
    assert fingerprint_bytes(42).hex() in str(error)


def test_single_object_encoding() -> None:
    codec = SchemaCodec()
    s = codec.add(PERSON)
    datum = s.encode_json({"name": "A", "address": {"zip": 1}})
    framed = to_single_object(s.fingerprint, datum)
    # spec "Single object encoding": C3 01, the fingerprint little-endian, the datum.
    assert framed == b"\xc3\x01" + s.fingerprint.to_bytes(8, "little", signed=True) + datum
    assert is_single_object(framed) and not is_single_object(datum)
    writer, body = from_single_object(framed)
    assert codec.get(writer) is s and s.decode(body)["name"] == "A"
    # fastavro's own reading of the single-object header agrees on the fingerprint.
    assert fastavro.schema.fingerprint(s.canonical, "CRC-64-AVRO") == framed[2:10].hex()
    unknown, _ = from_single_object(b"\xc3\x01" + bytes(8) + datum)
    assert isinstance(fails(codec.get, unknown), UnknownSchema)
    assert "single-object" in str(fails(from_single_object, datum))
