"""Avro object container files (spec "Object Container Files"), as the HTTP API takes them.

``POST .../messages`` takes a container file of records and the Avro answers of the API are
container files of envelopes (``protocols.http.avro``). Reading walks the file's framing
here, so every bound (file size, record count, inflated size) holds before memory is spent;
records are read and written by fastavro through ``core.schemas``.
"""

from __future__ import annotations

import io
import zlib
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import IO, Any

import fastavro

from qgate.core.errors import InvalidArgument, TooLarge
from qgate.core.schemas import (
    DECODE_ERRORS,
    WRITE_ERRORS,
    AvroSchema,
    AvroType,
    InvalidAvroData,
    InvalidSchema,
    describe_error,
    parse_schema,
)

__all__ = ["ContainerFile", "read_container", "write_container"]

_MAGIC = b"Obj\x01"
_META = {"type": "map", "values": "bytes"}
_CODECS = ("null", "deflate")


@dataclass(frozen=True, slots=True)
class ContainerFile:
    """What an object container file held: its writer schema, codec, metadata and records
    (resolved into the reader schema when one was given), and each record's Avro binary
    as the file's schema wrote it (``datums``: no re-encoding needed to store them)."""

    schema: AvroSchema
    codec: str
    metadata: Mapping[str, bytes]
    records: list[Any] = field(default_factory=list)
    datums: list[bytes] = field(default_factory=list)


def read_container(
    data: bytes,
    *,
    reader: AvroType | None = None,
    max_bytes: int = 1024 * 1024,
    max_records: int = 1000,
    max_inflated: int = 16 * 1024 * 1024,
    path: str = "records",
) -> ContainerFile:
    """Read a whole object container file from ``data``.

    The framing (header, blocks, sync markers) is walked here so every bound holds before
    memory is spent: the file size, the record count (checked from each block's count
    before its records are read) and the inflated size of deflate blocks (a small deflate
    block can inflate a thousandfold). Records are decoded by fastavro. Errors name the
    record index (``records[7]``) and, when the data is malformed, the field within it.
    Codecs: ``null`` and ``deflate``, the two the spec requires.
    """
    if len(data) > max_bytes:
        raise TooLarge(f"{path}: a container file is at most {max_bytes} bytes", field=path)
    fo = io.BytesIO(data)
    if fo.read(4) != _MAGIC:
        raise InvalidAvroData(f"{path}: not an Avro object container file", field=path)
    try:
        meta = _read_raw(fo, _META)
    except DECODE_ERRORS as e:
        raise InvalidAvroData(
            f"{path}: malformed file header ({describe_error(e)})", field=path
        ) from None
    sync = fo.read(16)
    if not isinstance(meta, dict) or len(sync) != 16:
        raise InvalidAvroData(f"{path}: truncated file header", field=path)
    if "avro.schema" not in meta:
        raise InvalidAvroData(f"{path}: the file header has no avro.schema", field=path)
    try:
        schema = parse_schema(meta["avro.schema"])
    except InvalidArgument as e:
        raise InvalidSchema(f"{path}: the file's schema: {e.description}", field=path) from None
    codec = bytes(meta.get("avro.codec", b"null")).decode("utf-8", "replace") or "null"
    if codec not in _CODECS:
        raise InvalidAvroData(
            f"{path}: codec {codec!r} is not supported (use null or deflate)", field=path
        )
    if reader is not None:
        reader.check_can_read(schema, path)
    records: list[Any] = []
    datums: list[bytes] = []
    inflated = 0
    block = 0
    while fo.tell() < len(data):
        where = f"{path} (block {block})"
        try:
            count = _read_raw(fo, "long")
            size = _read_raw(fo, "long")
        except DECODE_ERRORS:
            raise InvalidAvroData(f"{where}: truncated block header", field=path) from None
        if count < 0 or size < 0 or size > len(data) - fo.tell():
            raise InvalidAvroData(f"{where}: truncated or malformed block", field=path)
        if len(records) + count > max_records:
            raise TooLarge(
                f"{path}: a container file holds at most {max_records} records", field=path
            )
        raw = fo.read(size)
        if fo.read(16) != sync:
            raise InvalidAvroData(f"{where}: sync marker missing or wrong", field=path)
        if codec == "deflate":
            raw = _inflate(raw, max_inflated - inflated, where, path)
        inflated += len(raw)
        if inflated > max_inflated:
            raise TooLarge(f"{path}: inflates to more than {max_inflated} bytes", field=path)
        bfo = io.BytesIO(raw)
        for _ in range(count):
            index = f"{path}[{len(records)}]"
            start = bfo.tell()
            if reader is None:
                records.append(schema.read_from(bfo, None, index))
            else:
                records.append(reader.read_from(bfo, schema, index))
            datums.append(raw[start : bfo.tell()])
        if bfo.tell() != len(raw):
            raise InvalidAvroData(
                f"{where}: {len(raw) - bfo.tell()} bytes left over after its {count} records",
                field=path,
            )
        block += 1
    return ContainerFile(schema, codec, meta, records, datums)


def _inflate(raw: bytes, budget: int, where: str, path: str) -> bytes:
    """Raw deflate (RFC 1951, no zlib header), inflating at most ``budget`` + 1 bytes."""
    d = zlib.decompressobj(-15)
    try:
        out = d.decompress(raw, max(budget, 0) + 1)
    except zlib.error as e:
        raise InvalidAvroData(f"{where}: corrupt deflate data ({e})", field=path) from None
    if len(out) > budget:
        raise TooLarge(f"{path}: inflates to more than the allowed size", field=path)
    if not d.eof:
        raise InvalidAvroData(f"{where}: truncated deflate data", field=path)
    return out


def write_container(
    schema: AvroSchema,
    records: Iterable[Any],
    *,
    codec: str = "deflate",
    metadata: Mapping[str, str] | None = None,
    sync_marker: bytes | None = None,
) -> bytes:
    """An object container file of ``records`` (values as ``core.schemas`` decodes them),
    written by ``fastavro.writer``; the header carries the schema as given."""
    if codec not in _CODECS:
        raise InvalidArgument(f"codec must be null or deflate (got {codec!r})", field="codec")
    out = io.BytesIO()
    options: dict[str, Any] = {"codec": codec, "metadata": dict(metadata or {})}
    if sync_marker is not None:
        options["sync_marker"] = sync_marker
    try:
        fastavro.writer(out, fastavro.parse_schema(schema.definition), records, **options)
    except WRITE_ERRORS as e:
        raise InvalidAvroData(f"records: cannot be written: {e}", field="records") from None
    return out.getvalue()


def _read_raw(fo: IO[bytes], schema: Any) -> Any:
    """``fastavro.schemaless_reader`` of framing (header metadata, block counts)."""
    return fastavro.schemaless_reader(fo, schema, None)
