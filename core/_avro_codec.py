"""Single-object encoding (spec "Single object encoding"), and schemas by fingerprint.

A single-object encoded value is ``C3 01``, the writer schema's CRC-64-AVRO fingerprint as
8 little-endian bytes, and the binary datum: it carries the fingerprint of its writer, which
a ``SchemaCodec`` looks up.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from qgate.core._avro_errors import InvalidAvroData
from qgate.core._avro_types import AvroSchema, fingerprint_bytes, parse_schema
from qgate.core.errors import InvalidArgument


class UnknownSchema(InvalidArgument):
    """A fingerprint names no schema this codec knows."""

    title = "Unknown Avro schema"

    def __init__(self, fingerprint: int) -> None:
        super().__init__(
            f"no schema with fingerprint {fingerprint_bytes(fingerprint).hex()} is known",
            field="schema",
        )
        self.fingerprint = fingerprint


# -- single-object encoding (spec "Single object encoding") ---------------------------------

#: Two-byte marker: Avro, single-object format version 1.
SINGLE_OBJECT_MAGIC = b"\xc3\x01"


def is_single_object(data: bytes) -> bool:
    return len(data) >= 10 and data[:2] == SINGLE_OBJECT_MAGIC


def to_single_object(fingerprint: int, datum: bytes) -> bytes:
    """``C3 01``, the 8-byte little-endian CRC-64-AVRO fingerprint, the binary datum."""
    return SINGLE_OBJECT_MAGIC + fingerprint_bytes(fingerprint) + datum


def from_single_object(data: bytes, path: str = "body") -> tuple[int, bytes]:
    """(fingerprint, datum) of a single-object encoded value."""
    if not is_single_object(data):
        raise InvalidAvroData(
            f"{path}: not Avro single-object encoding (C3 01 + 8-byte fingerprint)", field=path
        )
    return int.from_bytes(data[2:10], "little", signed=True), data[10:]


# -- the codec: schemas by fingerprint --------------------------------------------------------


class SchemaCodec:
    """Schemas by fingerprint: writers are named by fingerprint (in a message's content
    type, or carried by a single-object body). Conversions are ``AvroSchema``'s and
    ``core.avro_bodies.QueueBodies``'s."""

    def __init__(self) -> None:
        self._schemas: dict[int, AvroSchema] = {}

    def add(self, schema: AvroSchema | str | bytes | Mapping[str, Any] | list[Any]) -> AvroSchema:
        """Register a schema (parsing it if needed); an equal one already known is kept."""
        if not isinstance(schema, AvroSchema):
            schema = parse_schema(schema)
        return self._schemas.setdefault(schema.fingerprint, schema)

    def get(self, fingerprint: int) -> AvroSchema:
        try:
            return self._schemas[fingerprint]
        except KeyError:
            raise UnknownSchema(fingerprint) from None

    def __contains__(self, fingerprint: object) -> bool:
        return fingerprint in self._schemas

    def __len__(self) -> int:
        return len(self._schemas)
