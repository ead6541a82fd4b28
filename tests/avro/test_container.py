"""Object container files (spec "Object Container Files"): read and write, bounds, errors."""

from __future__ import annotations

import io
import json
from typing import Any

import avro.datafile
import avro.io
import avro.schema
import fastavro
import pytest

from qgate.core.errors import InvalidArgument, TooLarge
from qgate.core.schemas import IncompatibleSchema, InvalidSchema, parse_schema, to_json
from qgate.protocols.http.container import read_container, write_container
from tests.support.schemas import ROW

ROWS = [{"id": i, "name": f"row {i}", "raw": bytes([i % 256]) * 3} for i in range(50)]


def fails(f: Any, *args: Any, **kwargs: Any) -> InvalidArgument:
    with pytest.raises(InvalidArgument) as info:
        f(*args, **kwargs)
    return info.value


def header_and_sync(data: bytes) -> tuple[bytes, bytes]:
    """The header of a container file (magic, metadata, sync) and its sync marker."""
    fo = io.BytesIO(data)
    fo.read(4)
    fastavro.schemaless_reader(fo, {"type": "map", "values": "bytes"})
    sync = fo.read(16)
    return data[: fo.tell()], sync


def block(count: int, payload: bytes, sync: bytes) -> bytes:
    out = io.BytesIO()
    fastavro.schemaless_writer(out, "long", count)
    fastavro.schemaless_writer(out, "long", len(payload))
    return out.getvalue() + payload + sync


@pytest.mark.parametrize("codec", ["null", "deflate"])
def test_written_files_read_back_with_fastavro_and_apache_avro(codec: str) -> None:
    s = parse_schema(ROW)
    data = write_container(s, ROWS, codec=codec, metadata={"qgate.queue": "q1"})
    ours = read_container(data)
    assert ours.records == ROWS
    assert ours.codec == codec
    assert ours.schema.fingerprint == s.fingerprint
    assert ours.metadata["qgate.queue"] == b"q1"
    assert list(fastavro.reader(io.BytesIO(data))) == ROWS
    theirs = avro.datafile.DataFileReader(io.BytesIO(data), avro.io.DatumReader())
    assert list(theirs) == ROWS
    assert theirs.get_meta("avro.codec") == codec.encode()


@pytest.mark.parametrize("codec", ["null", "deflate"])
def test_each_record_comes_with_its_binary_as_the_file_wrote_it(codec: str) -> None:
    s = parse_schema(ROW)
    data = write_container(s, ROWS, codec=codec)
    assert read_container(data).datums == [s.write(row) for row in ROWS]
    older = parse_schema({**ROW, "fields": ROW["fields"][:2]})
    resolved = read_container(write_container(older, [{"id": 1, "name": "a"}]), reader=s)
    assert resolved.records == [{"id": 1, "name": "a", "raw": b""}]
    assert resolved.datums == [older.write({"id": 1, "name": "a"})]  # the writer's bytes


@pytest.mark.parametrize("codec", ["null", "deflate"])
def test_files_written_by_apache_avro_are_read(codec: str) -> None:
    out = io.BytesIO()
    writer = avro.datafile.DataFileWriter(
        out, avro.io.DatumWriter(), avro.schema.parse(json.dumps(ROW)), codec=codec
    )
    for row in ROWS:
        writer.append(row)
    writer.flush()
    assert read_container(out.getvalue()).records == ROWS


def test_files_of_many_blocks_are_read() -> None:
    out = io.BytesIO()
    fastavro.writer(out, fastavro.parse_schema(ROW), ROWS, codec="deflate", sync_interval=64)
    data = out.getvalue()
    assert data.count(header_and_sync(data)[1]) > 5  # many blocks
    assert read_container(data).records == ROWS


def test_records_resolve_into_the_reader_schema() -> None:
    reader = parse_schema(
        {
            "type": "record",
            "name": "Row",
            "fields": [
                {"name": "id", "type": "double"},
                {"name": "tag", "type": "string", "default": "none"},
            ],
        }
    )
    got = read_container(write_container(parse_schema(ROW), ROWS[:2]), reader=reader)
    assert got.records == [{"id": 0.0, "tag": "none"}, {"id": 1.0, "tag": "none"}]


def test_a_reader_that_cannot_read_the_file_is_refused_before_any_record() -> None:
    reader = parse_schema(
        {"type": "record", "name": "Row", "fields": [{"name": "id", "type": "int"}]}
    )
    error = fails(read_container, write_container(parse_schema(ROW), ROWS), reader=reader)
    assert isinstance(error, IncompatibleSchema)
    assert error.path == "records.id"


def test_json_records_round_trip_through_a_file() -> None:
    s = parse_schema(ROW)
    values = [{"id": 1, "name": "a", "raw": "\u00ff"}, {"id": 2, "name": "b", "raw": ""}]
    data = write_container(s, [s.from_json(v) for v in values])
    assert [to_json(r) for r in read_container(data).records] == values


def test_a_record_that_runs_past_its_block_is_named_by_index_and_field() -> None:
    s = parse_schema(ROW)
    header, sync = header_and_sync(write_container(s, [], codec="null"))
    payload = b"".join(s.write(r) for r in ROWS[:3])
    data = header + block(4, payload, sync)  # claims one record more than it holds
    error = fails(read_container, data)
    assert error.field == "records[3].id"
    assert "truncated" in str(error)


def test_malformed_field_is_named() -> None:
    s = parse_schema(ROW)
    header, sync = header_and_sync(write_container(s, [], codec="null"))
    bad = s.write({"id": 7, "name": "x", "raw": b""})
    bad = bad[:1] + b"\x04\xff\xfe" + bad[3:]  # the name: two bytes of invalid UTF-8
    data = header + block(2, s.write(ROWS[0]) + bad, sync)
    error = fails(read_container, data)
    assert error.field == "records[1].name"
    assert "malformed" in str(error)


def test_truncated_and_damaged_files_are_refused() -> None:
    data = write_container(parse_schema(ROW), ROWS, codec="deflate")
    header, sync = header_and_sync(data)
    assert "not an Avro object container" in str(fails(read_container, b"PK\x03\x04" + data[4:]))
    assert "header" in str(fails(read_container, data[:10]))
    assert "block" in str(fails(read_container, data[:-20]))
    # Flip a bit of the random sync marker (a fixed byte equals it 1 time in 256).
    assert "sync marker" in str(fails(read_container, data[:-1] + bytes([data[-1] ^ 1])))
    corrupt = header + block(1, b"\xff\xff\xff\xff", sync)
    assert "deflate" in str(fails(read_container, corrupt))
    left_over = header_and_sync(write_container(parse_schema(ROW), [], codec="null"))
    extra = left_over[0] + block(1, parse_schema(ROW).write(ROWS[0]) + b"\x00", left_over[1])
    assert "left over" in str(fails(read_container, extra))


def test_size_record_and_inflation_bounds_hold() -> None:
    s = parse_schema(ROW)
    data = write_container(s, ROWS)
    assert isinstance(fails(read_container, data, max_bytes=len(data) - 1), TooLarge)
    error = fails(read_container, data, max_records=49)
    assert isinstance(error, TooLarge) and "49 records" in str(error)
    assert len(read_container(data, max_records=50).records) == 50
    # A deflate block inflating a thousandfold is stopped at the bound, not after.
    bomb = write_container(parse_schema('"string"'), ["0" * 1_000_000] * 4)
    assert len(bomb) < 20_000
    assert isinstance(fails(read_container, bomb, max_inflated=1_000_000), TooLarge)
    assert len(read_container(bomb, max_inflated=5_000_000).records) == 4


def test_unsupported_codecs_and_schemas_are_refused() -> None:
    out = io.BytesIO()
    fastavro.writer(out, fastavro.parse_schema(ROW), ROWS[:1], codec="bzip2")
    assert "bzip2" in str(fails(read_container, out.getvalue()))
    recursive = {
        "type": "record",
        "name": "L",
        "fields": [{"name": "next", "type": ["null", "L"]}],
    }
    out = io.BytesIO()
    fastavro.writer(out, fastavro.parse_schema(recursive), [{"next": None}])
    error = fails(read_container, out.getvalue())
    assert isinstance(error, InvalidSchema) and "recursive" in str(error)
    assert fails(write_container, parse_schema(ROW), [], codec="snappy").field == "codec"
