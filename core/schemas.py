"""Avro schemas for schema-checked queues: parse, fingerprint, check, encode, resolve.

Pure code (no Twisted, no SQL); every byte of Avro binary is read and written by fastavro.
This module is the public face of small private modules, one job each, and says what each
adds around fastavro and why (each module's docstring says more):

* ``_avro_checks``: **strict schema checks.** Schemas come from clients, so they are
  checked per the specification ("Schema Declaration"), which fastavro does not fully do,
  and schemas whose decoding has no bound (recursive types, arrays of zero-size items)
  are refused with a reason.
* ``_avro_types``: ``AvroType`` and ``TypeScope`` (a checked type that fastavro reads and
  writes), ``AvroSchema`` and ``parse_schema`` (a standalone schema with its CRC-64-AVRO
  fingerprint, spec "Schema Fingerprints").
* ``_avro_json``: **the JSON convention** of Avro field default values, for JSON bodies in
  (``AvroType.from_json``) and out (``to_json``), so JSON -> Avro -> JSON is the identity.
* ``_avro_resolution``: **schema resolution, checked before reading**
  (``AvroType.can_read``, ``Compatibility``): a schema change that could not read stored
  messages is refused naming the field, instead of failing later, message by message.
* ``_avro_codec``: single-object encoding and ``SchemaCodec`` (schemas by fingerprint).
* ``_avro_errors``: the errors, which **name the field** (``body.address.zip``), and the
  exceptions fastavro raises, for code that calls fastavro itself.

Object container files are the HTTP API's, in ``qgate.protocols.http.container``.
"""

from __future__ import annotations

from qgate.core._avro_codec import (
    SINGLE_OBJECT_MAGIC,
    SchemaCodec,
    UnknownSchema,
    from_single_object,
    is_single_object,
    to_single_object,
)
from qgate.core._avro_errors import (
    DECODE_ERRORS,
    WRITE_ERRORS,
    IncompatibleSchema,
    InvalidAvroData,
    InvalidSchema,
    describe_error,
)
from qgate.core._avro_json import to_json
from qgate.core._avro_nodes import PRIMITIVES
from qgate.core._avro_resolution import COMPATIBLE, Compatibility
from qgate.core._avro_types import (
    MAX_SCHEMA_SIZE,
    AvroSchema,
    AvroType,
    TypeScope,
    fingerprint_bytes,
    parse_schema,
)

__all__ = [
    "COMPATIBLE",
    "DECODE_ERRORS",
    "MAX_SCHEMA_SIZE",
    "PRIMITIVES",
    "SINGLE_OBJECT_MAGIC",
    "WRITE_ERRORS",
    "AvroSchema",
    "AvroType",
    "Compatibility",
    "IncompatibleSchema",
    "InvalidAvroData",
    "InvalidSchema",
    "SchemaCodec",
    "TypeScope",
    "UnknownSchema",
    "describe_error",
    "fingerprint_bytes",
    "from_single_object",
    "is_single_object",
    "parse_schema",
    "to_json",
    "to_single_object",
]
