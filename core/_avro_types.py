"""Checked Avro types that fastavro reads and writes, and standalone schemas.

Every byte of Avro binary is read and written by fastavro: ``TypeScope`` parses a
definition with fastavro, checks it (``_avro_checks``) and prepares the copy fastavro is
given (``_Stripper``); ``AvroType`` reads and writes values of it, naming the field of any
error. ``parse_schema`` makes an ``AvroSchema``: a type with its identity.

Fingerprints are CRC-64-AVRO of the Parsing Canonical Form (spec "Schema Fingerprints"),
as a *signed* 64-bit int (Java's ``long``; fits a SQL BIGINT); single-object encoding
writes it as 8 little-endian bytes.
"""

from __future__ import annotations

import io
from collections.abc import Mapping, Sequence
from typing import IO, Any

import fastavro
import fastavro.schema
import fastavro.validation

from qgate.core import jsonsafe
from qgate.core._avro_checks import _Validator
from qgate.core._avro_errors import (
    DECODE_ERRORS,
    PARSE_ERRORS,
    WRITE_ERRORS,
    IncompatibleSchema,
    InvalidAvroData,
    InvalidSchema,
    _DataError,
    describe_error,
)
from qgate.core._avro_json import _Converter
from qgate.core._avro_nodes import PRIMITIVES, _deref, _kind, _show
from qgate.core._avro_resolution import Compatibility, _Compat
from qgate.core.errors import TooLarge

#: Largest schema text accepted from a client.
MAX_SCHEMA_SIZE = 64 * 1024
#: The record each type is wrapped in for fastavro: one field, so its encoding is the
#: encoding of the value, and fastavro's pre-parsed fast path applies to every type.
_WRAPPER = "__qgate_value"
_SCOPE = "__qgate_scope"


class AvroType:
    """A checked Avro type that fastavro can read and write.

    ``node`` is the type as fastavro parsed it and ``names`` the named types it may refer to;
    values are the Python values fastavro uses (``bytes`` for bytes and fixed, dicts for
    records and maps, symbols for enums, logical types as their underlying type).
    """

    __slots__ = ("_codec", "_stripped_names", "names", "node")

    def __init__(
        self, node: Any, names: Mapping[str, Any], stripped: Any, stripped_names: dict[str, Any]
    ) -> None:
        self.node = node
        self.names = names
        self._stripped_names = stripped_names
        self._codec = _wrap(stripped, stripped_names)

    def from_json(self, value: Any, path: str = "body") -> Any:
        """The value fastavro writes for a JSON value; InvalidAvroData names the field."""
        try:
            return _Converter(self.names, tag=True).convert(self.node, value, path)
        except _DataError as e:
            raise InvalidAvroData(str(e), field=e.path) from None
        except RecursionError:
            raise InvalidAvroData(f"{path}: nested too deeply", field=path) from None

    def encode_json(self, value: Any, path: str = "body") -> bytes:
        """Check a JSON value against this type and write it as Avro binary."""
        return self.write(self.from_json(value, path), path)

    def write(self, value: Any, path: str = "body", *, check: bool = False) -> bytes:
        """Avro binary of a value (from ``from_json``, or decoded with this type).

        fastavro writes what it is given without checking it (a string written as a
        boolean becomes ``true``); ``check`` validates the value first, for values that do
        not come from ``from_json`` or a decoder (an RPC handler's response).
        """
        out = io.BytesIO()
        self.write_to(out, value, path, check=check)
        return out.getvalue()

    def write_to(
        self, out: IO[bytes], value: Any, path: str = "body", *, check: bool = False
    ) -> None:
        datum = {"v": value}
        try:
            if check:
                fastavro.validation.validate(datum, self._codec)
            fastavro.schemaless_writer(out, self._codec, datum)
        except WRITE_ERRORS as e:
            text = str(e).replace(f"{_WRAPPER}.v", path)
            raise InvalidAvroData(f"{path}: cannot be written: {text}", field=path) from None

    def read_from(self, fo: IO[bytes], writer: AvroType | None = None, path: str = "body") -> Any:
        """Read one value written with ``writer`` (default: this type) from ``fo``,
        resolved into this type. Check ``can_read`` first: fastavro resolves lazily."""
        start = fo.tell()
        try:
            if writer is None or writer is self:
                return _read(fo, self._codec)["v"]
            return _read(fo, writer._codec, self._codec)["v"]
        except DECODE_ERRORS as e:
            where = (writer or self)._locate(fo, start, path)
            raise InvalidAvroData(
                f"{where}: malformed Avro data ({describe_error(e)})", field=where
            ) from None

    def decode(self, data: bytes, writer: AvroType | None = None, path: str = "body") -> Any:
        """Read a whole buffer holding exactly one value."""
        fo = io.BytesIO(data)
        value = self.read_from(fo, writer, path)
        if fo.tell() != len(data):
            raise InvalidAvroData(
                f"{path}: {len(data) - fo.tell()} bytes left over after the value", field=path
            )
        return value

    def can_read(self, writer: AvroType, path: str = "body") -> Compatibility:
        """Whether this type, as reader, can read everything ``writer`` writes."""
        return _Compat(self.names, writer.names).check(self.node, writer.node, path)

    def check_can_read(self, writer: AvroType, path: str = "body") -> None:
        """``can_read``, raising IncompatibleSchema with the reason when it cannot."""
        result = self.can_read(writer, path)
        if not result:
            raise IncompatibleSchema(
                f"cannot read data of the other schema: {result}", path=result.path
            )

    def _locate(self, fo: IO[bytes], start: int, path: str) -> str:
        """The deepest field path at which a value that failed to decode went wrong.

        Diagnostic only: re-reads the value field by field with fastavro, descending into
        records and the chosen branch of unions.
        """
        fo.seek(start)
        node = _deref(self._codec["fields"][0]["type"], self._stripped_names)
        while True:
            kind = _kind(node)
            if kind == "union":
                try:
                    index = _read(fo, "long")
                except DECODE_ERRORS:
                    return path
                if not isinstance(index, int) or not 0 <= index < len(node):
                    return path
                node = _deref(node[index], self._stripped_names)
                continue
            if kind != "record":
                return path
            for f in node["fields"]:
                at = fo.tell()
                try:
                    _read(fo, _wrap(f["type"], self._stripped_names))
                except DECODE_ERRORS:
                    fo.seek(at)
                    path = f"{path}.{f['name']}"
                    node = _deref(f["type"], self._stripped_names)
                    break
            else:
                return path


def _read(fo: IO[bytes], schema: Any, reader: Any = None) -> Any:
    """``fastavro.schemaless_reader``, typed as returning Any (it returns any Avro value)."""
    return fastavro.schemaless_reader(fo, schema, reader)


def _wrap(node: Any, stripped_names: dict[str, Any]) -> dict[str, Any]:
    """A pre-parsed fastavro record with one field of type ``node``."""
    return {
        "type": "record",
        "name": _WRAPPER,
        "fields": [{"name": "v", "type": node}],
        "__fastavro_parsed": True,
        "__named_schemas": stripped_names,
    }


class TypeScope:
    """Named types shared by several definitions, as in an Avro protocol (spec "Protocol
    Declaration": types first, then messages, all in the protocol's namespace)."""

    def __init__(self) -> None:
        self._names: dict[str, Any] = {}
        self._stripped: dict[str, Any] = {}

    @property
    def names(self) -> Mapping[str, Any]:
        return self._names

    def define(self, definition: Any, namespace: str | None = None) -> AvroType:
        """Parse and check ``definition`` (a JSON value); named types it defines are added
        to the scope, and names it refers to resolve in ``namespace``."""
        holder: dict[str, Any] = {
            "type": "record",
            "name": _SCOPE,
            "fields": [{"name": "v", "type": definition}],
        }
        if namespace:
            holder["namespace"] = namespace
        names = dict(self._names)
        try:
            parsed: Any = fastavro.parse_schema(holder, named_schemas=names)
        except PARSE_ERRORS as e:
            raise InvalidSchema(f"invalid schema: {describe_error(e)}") from None
        node = parsed["fields"][0]["type"]
        names.pop(f"{namespace}.{_SCOPE}" if namespace else _SCOPE, None)
        new = {k: v for k, v in names.items() if k not in self._names}
        _Validator(names).check(node, new)
        self._names.update(new)
        stripper = _Stripper(self._names, self._stripped)
        stripped = stripper.strip(node)
        return AvroType(node, self._names, stripped, self._stripped)


class _Stripper:
    """Copies of nodes for fastavro: logical types dropped (data stays its underlying type),
    named types moved into a names table, defaults converted from their JSON form (fastavro
    hands a default to the reader as written in the schema, ``str`` for ``bytes``)."""

    def __init__(self, names: Mapping[str, Any], stripped: dict[str, Any]) -> None:
        self.names = names
        self.stripped = stripped

    def strip(self, node: Any) -> Any:
        if isinstance(node, str):
            if node not in PRIMITIVES and node not in self.stripped:
                self.strip(self.names[node])
            return node
        if isinstance(node, list):
            return [self.strip(b) for b in node]
        kind = _kind(node)
        if kind in PRIMITIVES:
            return kind
        if kind == "array":
            return {"type": "array", "items": self.strip(node["items"])}
        if kind == "map":
            return {"type": "map", "values": self.strip(node["values"])}
        if kind not in ("record", "enum", "fixed"):
            return self.strip(node["type"])
        name = node["name"]
        if name in self.stripped:
            return name
        copy: dict[str, Any] = {"type": node["type"], "name": name}
        if node.get("aliases"):
            copy["aliases"] = list(node["aliases"])
        self.stripped[name] = copy  # before the fields, so references resolve
        if kind == "enum":
            copy["symbols"] = list(node["symbols"])
            if node.get("default") is not None:
                copy["default"] = node["default"]
        elif kind == "fixed":
            copy["size"] = node["size"]
        else:
            fields = []
            for f in node["fields"]:
                fc: dict[str, Any] = {"name": f["name"], "type": self.strip(f["type"])}
                if f.get("aliases"):
                    fc["aliases"] = list(f["aliases"])
                if "default" in f:
                    fc["default"] = _Converter(self.names, tag=False).default(
                        f["type"], f["default"], f["name"]
                    )
                fields.append(fc)
            copy["fields"] = fields
        return name


# -- schemas ----------------------------------------------------------------------------


class AvroSchema(AvroType):
    """A standalone schema (what a queue carries), with its identity.

    ``definition`` is the schema's JSON value as given, ``text`` its compact JSON text,
    ``canonical`` its Parsing Canonical Form and ``fingerprint`` the CRC-64-AVRO of that,
    as a signed 64-bit int.
    """

    __slots__ = ("canonical", "definition", "fingerprint", "text")

    def __init__(self, definition: Any, text: str, scope: TypeScope, typ: AvroType) -> None:
        super().__init__(typ.node, typ.names, typ._codec["fields"][0]["type"], scope._stripped)
        self.definition = definition
        self.text = text
        try:
            self.canonical = fastavro.schema.to_parsing_canonical_form(definition)
        except PARSE_ERRORS as e:
            raise InvalidSchema(f"invalid schema: {describe_error(e)}") from None
        digest = fastavro.schema.fingerprint(self.canonical, "CRC-64-AVRO")
        self.fingerprint = int.from_bytes(bytes.fromhex(digest), "little", signed=True)

    @property
    def fingerprint_bytes(self) -> bytes:
        """The fingerprint as single-object encoding writes it: 8 bytes, little-endian."""
        return fingerprint_bytes(self.fingerprint)

    def __repr__(self) -> str:
        return f"<AvroSchema {self.fingerprint_bytes.hex()} {self.canonical[:60]}>"


def parse_schema(
    source: str | bytes | Mapping[str, Any] | Sequence[Any], *, max_size: int = MAX_SCHEMA_SIZE
) -> AvroSchema:
    """Parse and check a schema given as JSON text or as a JSON value."""
    if isinstance(source, bytes | str):
        text = source.decode("utf-8", "replace") if isinstance(source, bytes) else source
        if len(text.encode("utf-8", "surrogatepass")) > max_size:
            raise TooLarge(f"a schema is at most {max_size} bytes", field="schema")
        try:
            # Strict JSON (core.jsonsafe): its text is shown back as JSON by every protocol.
            definition = jsonsafe.loads(text)
        except jsonsafe.JSONValueError as e:
            raise InvalidSchema(f"schema is not JSON: {e.reason}") from None
    else:
        definition = source
    try:
        data = jsonsafe.dumps(definition)
    except (TypeError, ValueError, RecursionError) as e:
        raise InvalidSchema(f"schema is not a JSON value: {describe_error(e)}") from None
    text = data.decode("utf-8")
    if len(data) > max_size:
        raise TooLarge(f"a schema is at most {max_size} bytes", field="schema")
    if not isinstance(definition, str | dict | list):
        raise InvalidSchema(f"not a schema: {_show(definition)}")
    scope = TypeScope()
    return AvroSchema(definition, text, scope, scope.define(definition))


def fingerprint_bytes(fingerprint: int) -> bytes:
    """A signed 64-bit fingerprint as 8 little-endian bytes."""
    return fingerprint.to_bytes(8, "little", signed=True)
