"""Avro schemas for schema-checked queues: parse, fingerprint, check, encode, resolve.

Pure code (no Twisted, no SQL); every byte of Avro binary is read and written by fastavro.
What this module adds around fastavro, and why:

* **Strict schema checks.** ``fastavro.parse_schema`` accepts schemas the Avro
  specification forbids (duplicate field names, bad names, nested unions, invalid
  defaults). Schemas come from clients, so they are checked per the spec ("Schema
  Declaration") before use. Two more refusals protect the process: *recursive* named types
  (fastavro's C decoder has no depth guard; a 10 kB body nesting a recursive record
  segfaults it) and *arrays of zero-size items* (a crafted block count of 2**62 ``null``
  items loops for ever). Both are refused with a reason.
* **The JSON convention.** JSON bodies use the convention of Avro field *default values*
  (spec "Complex Types / Records", the table of field default values): records and maps are
  objects, arrays are arrays, enums are their symbol, ``bytes`` and ``fixed`` are strings
  whose code points 0-255 are the byte values, unions are *not* wrapped (the first branch
  that accepts the value is used; a number goes to the first numeric branch that holds it
  exactly), and logical types are their underlying type (a ``timestamp-millis`` is a
  number). ``to_json`` writes the same convention, so JSON -> Avro -> JSON is the identity;
  the only extension is that non-finite floats are the strings ``"NaN"``, ``"Infinity"``
  and ``"-Infinity"`` (JSON has no such numbers), accepted on input too.
* **Schema resolution, checked before reading.** ``AvroType.can_read`` implements the spec's
  "Schema Resolution" rules statically (promotions, record fields and defaults, enum
  symbols and defaults, unions, aliases as fastavro applies them) and names the first
  offending field path, so a schema change that could not read stored messages is refused
  with a reason instead of failing later, message by message.
* **Errors name the field.** Every data error is an ``InvalidArgument`` whose ``field`` is a
  path such as ``body.address.zip`` (records ``.field``, arrays ``[i]``, map entries
  ``.key`` or ``["key"]``); compatibility paths write array items as ``[]`` and map
  values as ``{}``.

Fingerprints are CRC-64-AVRO of the Parsing Canonical Form (spec "Schema Fingerprints"),
as a *signed* 64-bit int (Java's ``long``; fits a SQL BIGINT); single-object encoding
writes it as 8 little-endian bytes.
"""

from __future__ import annotations

import io
import json
import math
import re
import struct
import zlib
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import IO, Any

import fastavro
import fastavro.schema
import fastavro.validation
from fastavro.read import SchemaResolutionError
from fastavro.schema import SchemaParseException, UnknownType

from qgate.core import jsonsafe
from qgate.core.errors import InvalidArgument, TooLarge

__all__ = [
    "COMPATIBLE",
    "SINGLE_OBJECT_MAGIC",
    "AvroSchema",
    "AvroType",
    "Compatibility",
    "ContainerFile",
    "IncompatibleSchema",
    "InvalidAvroData",
    "InvalidSchema",
    "SchemaCodec",
    "TypeScope",
    "UnknownSchema",
    "fingerprint_bytes",
    "from_single_object",
    "is_single_object",
    "parse_schema",
    "read_container",
    "to_json",
    "to_single_object",
    "write_container",
]

#: Largest schema text accepted from a client.
MAX_SCHEMA_SIZE = 64 * 1024

PRIMITIVES = frozenset({"null", "boolean", "int", "long", "float", "double", "bytes", "string"})
_NAMED = frozenset({"record", "error", "enum", "fixed"})
_NAME_RE = re.compile(r"[A-Za-z_][A-Za-z0-9_]*\Z")
_INT_RANGE = (-(2**31), 2**31 - 1)
_LONG_RANGE = (-(2**63), 2**63 - 1)
_FLOAT_MAX = 3.4028234663852886e38
_NON_FINITE = {"NaN": math.nan, "Infinity": math.inf, "-Infinity": -math.inf}
#: The record each type is wrapped in for fastavro: one field, so its encoding is the
#: encoding of the value, and fastavro's pre-parsed fast path applies to every type.
_WRAPPER = "__qgate_value"
_SCOPE = "__qgate_scope"
#: What fastavro raises on malformed input (it has no common base class).
_DECODE_ERRORS = (
    EOFError,
    ValueError,
    IndexError,
    KeyError,
    TypeError,
    OverflowError,
    RecursionError,
    struct.error,
    SchemaResolutionError,
)
_WRITE_ERRORS = (
    ValueError,
    TypeError,
    KeyError,
    AttributeError,
    OverflowError,
    struct.error,
    fastavro.validation.ValidationError,
)
_PARSE_ERRORS = (
    SchemaParseException,
    UnknownType,
    ValueError,
    TypeError,
    KeyError,
    AttributeError,
    RecursionError,
)


# -- errors -------------------------------------------------------------------------------


class InvalidSchema(InvalidArgument):
    """A schema is not valid Avro, or is one qgate refuses (recursive, too large)."""

    title = "Invalid Avro schema"

    def __init__(self, description: str, field: str | None = "schema") -> None:
        super().__init__(description, field)


class InvalidAvroData(InvalidArgument):
    """A value does not match its schema, or Avro binary is malformed."""

    title = "Invalid Avro data"


class IncompatibleSchema(InvalidArgument):
    """A reader schema cannot read what a writer schema writes (spec "Schema Resolution")."""

    title = "Incompatible Avro schema"

    def __init__(self, description: str, path: str, field: str | None = "schema") -> None:
        super().__init__(description, field)
        self.path = path


class UnknownSchema(InvalidArgument):
    """A fingerprint names no schema this codec knows."""

    title = "Unknown Avro schema"

    def __init__(self, fingerprint: int) -> None:
        super().__init__(
            f"no schema with fingerprint {fingerprint_bytes(fingerprint).hex()} is known",
            field="schema",
        )
        self.fingerprint = fingerprint


class _DataError(Exception):
    """Internal: a JSON value does not fit, at ``path``."""

    def __init__(self, path: str, message: str) -> None:
        super().__init__(f"{path}: {message}")
        self.path = path
        self.message = message


# -- schema nodes ---------------------------------------------------------------------------
# A "node" is a schema as fastavro.parse_schema leaves it: a primitive or full name (str), a
# union (list) or a dict; a named type is defined inline once and referred to by full name.


def _deref(node: Any, names: Mapping[str, Any]) -> Any:
    """The node itself, with name references replaced by their definitions."""
    while True:
        if isinstance(node, str):
            return node if node in PRIMITIVES else names[node]
        if isinstance(node, dict):
            t = node["type"]
            if isinstance(t, str) and (t in PRIMITIVES or t in _NAMED or t in ("array", "map")):
                return node
            node = t  # {"type": "some.Name"} or {"type": {...}}
            continue
        return node


def _kind(node: Any) -> str:
    """The type of a dereferenced node: a primitive, record, enum, fixed, array, map, union."""
    if isinstance(node, str):
        return node
    if isinstance(node, list):
        return "union"
    t = node["type"]
    return "record" if t == "error" else str(t)


def _describe(node: Any) -> str:
    kind = _kind(node)
    if kind in ("record", "enum", "fixed"):
        return f"{kind} {node['name']}"
    if kind == "union":
        return "union"
    return kind


def _branch_name(node: Any, names: Mapping[str, Any]) -> str:
    """How fastavro's tuple notation names a union branch: full name, else the type."""
    d = _deref(node, names)
    kind = _kind(d)
    return str(d["name"]) if kind in ("record", "enum", "fixed") else kind


def _unqualified(name: str) -> str:
    return name.rsplit(".", 1)[-1]


def _show(value: Any) -> str:
    """A short rendering of a JSON value for an error message."""
    if isinstance(value, dict):
        return "an object"
    if isinstance(value, list):
        return "an array"
    text = json.dumps(value)
    return text if len(text) <= 40 else text[:37] + "..."


def _key_path(path: str, key: str) -> str:
    return f"{path}.{key}" if _NAME_RE.match(key) else f"{path}[{json.dumps(key)}]"


def _json_kind_fits(kind: str, value: Any) -> bool:
    """Whether a JSON value is of the JSON kind a type is written as (for union choice)."""
    if kind == "null":
        return value is None
    if kind == "boolean":
        return isinstance(value, bool)
    if kind in ("int", "long"):
        return isinstance(value, int) and not isinstance(value, bool)
    if kind in ("float", "double"):
        return (isinstance(value, int | float) and not isinstance(value, bool)) or (
            isinstance(value, str) and value in _NON_FINITE
        )
    if kind in ("string", "bytes", "enum", "fixed"):
        return isinstance(value, str)
    if kind == "array":
        return isinstance(value, list)
    if kind in ("map", "record"):
        return isinstance(value, dict)
    return True


def _exact_float32(value: float) -> bool:
    try:
        return bool(struct.unpack("<f", struct.pack("<f", value))[0] == value)
    except (OverflowError, struct.error):
        return False


# -- JSON <-> native values -----------------------------------------------------------------


class _Converter:
    """Turns JSON values into the Python values fastavro writes, checking them on the way.

    With ``tag`` the value of each union is a ``(branch name, value)`` pair (fastavro's
    tuple notation), so fastavro writes the branch chosen here, not one it guesses.
    """

    def __init__(self, names: Mapping[str, Any], tag: bool) -> None:
        self.names = names
        self.tag = tag

    def convert(self, node: Any, value: Any, path: str) -> Any:
        node = _deref(node, self.names)
        kind = _kind(node)
        if kind == "union":
            return self._union(node, value, path)
        if not _json_kind_fits(kind, value):
            raise _DataError(path, f"expected {_describe(node)}, got {_show(value)}")
        if kind in ("null", "boolean", "string"):
            if kind == "string":
                try:
                    value.encode("utf-8")
                except UnicodeEncodeError:
                    raise _DataError(path, "string is not valid Unicode") from None
            return value
        if kind in ("int", "long"):
            low, high = _INT_RANGE if kind == "int" else _LONG_RANGE
            if not low <= value <= high:
                raise _DataError(path, f"{value} is out of range for {kind}")
            return value
        if kind in ("float", "double"):
            number = _NON_FINITE[value] if isinstance(value, str) else float(value)
            if kind == "float" and math.isfinite(number) and abs(number) > _FLOAT_MAX:
                raise _DataError(path, f"{value} is out of range for float")
            return number
        if kind in ("bytes", "fixed"):
            try:
                data = value.encode("latin-1")
            except UnicodeEncodeError:
                raise _DataError(
                    path, f"expected {kind} as a string of code points 0-255"
                ) from None
            if kind == "fixed" and len(data) != node["size"]:
                raise _DataError(
                    path, f"expected {node['size']} bytes for {node['name']}, got {len(data)}"
                )
            return data
        if kind == "enum":
            if value not in node["symbols"]:
                raise _DataError(
                    path, f"{_show(value)} is not a symbol of {node['name']} {node['symbols']}"
                )
            return value
        if kind == "array":
            return [self.convert(node["items"], v, f"{path}[{i}]") for i, v in enumerate(value)]
        if kind == "map":
            return {
                k: self.convert(node["values"], v, _key_path(path, k)) for k, v in value.items()
            }
        return self._record(node, value, path)

    def _record(self, node: Mapping[str, Any], value: Mapping[str, Any], path: str) -> Any:
        fields = node["fields"]
        known = {f["name"] for f in fields}
        for key in value:
            if key not in known:
                raise _DataError(_key_path(path, key), f"{node['name']} has no field {key!r}")
        out = {}
        for f in fields:
            name = f["name"]
            where = f"{path}.{name}"
            if name in value:
                out[name] = self.convert(f["type"], value[name], where)
            elif "default" in f:
                out[name] = self.default(f["type"], f["default"], where)
            else:
                raise _DataError(where, "missing required field")
        return out

    def default(self, node: Any, value: Any, path: str) -> Any:
        """A field default: JSON for the union's *first* branch (spec "Records", default)."""
        d = _deref(node, self.names)
        if _kind(d) != "union":
            return self.convert(d, value, path)
        converted = self.convert(d[0], value, path)
        return (_branch_name(d[0], self.names), converted) if self.tag else converted

    def _union(self, branches: list[Any], value: Any, path: str) -> Any:
        resolved = [_deref(b, self.names) for b in branches]
        fits = [i for i, b in enumerate(resolved) if _json_kind_fits(_kind(b), value)]
        if not fits:
            wanted = " or ".join(_describe(b) for b in resolved)
            raise _DataError(path, f"expected {wanted}, got {_show(value)}")
        kinds = [_kind(resolved[i]) for i in fits]
        errors: list[_DataError] = []
        for n, i in enumerate(fits):
            # A number goes to the first branch that holds it exactly: "float" is passed
            # over for a later "double" when float32 would round the value.
            if (
                kinds[n] == "float"
                and "double" in kinds[n + 1 :]
                and isinstance(value, int | float)
                and not _exact_float32(float(value))
            ):
                continue
            try:
                converted = self.convert(resolved[i], value, path)
            except _DataError as e:
                errors.append(e)
                continue
            return (_branch_name(resolved[i], self.names), converted) if self.tag else converted
        if len(errors) == 1:
            raise errors[0]
        wanted = " or ".join(_describe(resolved[i]) for i in fits)
        raise _DataError(path, f"matches none of {wanted}: " + "; ".join(map(str, errors)))


def to_json(value: Any) -> Any:
    """A decoded Avro value as JSON, in the convention this module reads (see the module
    docstring): bytes and fixed as strings of code points 0-255, non-finite floats as
    ``"NaN"``/``"Infinity"``/``"-Infinity"``, unions unwrapped."""
    if isinstance(value, bytes):
        return value.decode("latin-1")
    if isinstance(value, float) and not math.isfinite(value):
        return "NaN" if math.isnan(value) else ("Infinity" if value > 0 else "-Infinity")
    if isinstance(value, dict):
        return {k: to_json(v) for k, v in value.items()}
    if isinstance(value, list):
        return [to_json(v) for v in value]
    if isinstance(value, tuple) and len(value) == 2 and isinstance(value[0], str):
        return to_json(value[1])  # a union branch tagged by ``from_json``
    return value


# -- compatibility (spec "Schema Resolution") -----------------------------------------------


@dataclass(frozen=True, slots=True)
class Compatibility:
    """Whether a reader schema can read a writer schema; false with the reason and the
    field path of the first problem found. True in a boolean context when compatible."""

    compatible: bool
    reason: str = ""
    path: str = ""

    def __bool__(self) -> bool:
        return self.compatible

    def __str__(self) -> str:
        return "compatible" if self.compatible else f"{self.path}: {self.reason}"


COMPATIBLE = Compatibility(True)


class _Compat:
    """The resolution rules of the spec, checked on schemas instead of on data."""

    def __init__(self, reader_names: Mapping[str, Any], writer_names: Mapping[str, Any]) -> None:
        self.rn = reader_names
        self.wn = writer_names
        self.assumed: set[tuple[str, str]] = set()

    def check(self, reader: Any, writer: Any, path: str) -> Compatibility:
        r = _deref(reader, self.rn)
        w = _deref(writer, self.wn)
        rk, wk = _kind(r), _kind(w)
        # "if writer's is a union": every branch the writer may have chosen must resolve.
        if wk == "union":
            for branch in w:
                result = self.check(r, branch, path)
                if not result:
                    return result
            return COMPATIBLE
        # "if reader's is a union, but writer's is not": the first matching branch is used.
        if rk == "union":
            for branch in r:
                if self.matches(_deref(branch, self.rn), w):
                    return self.check(branch, w, path)
            return Compatibility(
                False, f"no branch of the reader's union can read the writer's {_describe(w)}", path
            )
        if not self.matches(r, w):
            return Compatibility(
                False, f"the writer's {_describe(w)} cannot be read as {_describe(r)}", path
            )
        if rk == "record":
            return self._record(r, w, path)
        if rk == "enum":
            missing = [s for s in w["symbols"] if s not in r["symbols"]]
            if missing and r.get("default") is None:
                return Compatibility(
                    False,
                    f"enum {r['name']} lacks the writer's symbols {missing} and has no default",
                    path,
                )
        elif rk == "array":
            return self.check(r["items"], w["items"], f"{path}[]")
        elif rk == "map":
            return self.check(r["values"], w["values"], f"{path}{{}}")
        elif rk in ("bytes", "fixed") and _is_decimal(r) and _is_decimal(w):
            # spec "Logical Types / Decimal": decimals match if scales and precisions match.
            if (r.get("precision"), r.get("scale", 0)) != (w.get("precision"), w.get("scale", 0)):
                return Compatibility(False, "decimal precision or scale differs", path)
        return COMPATIBLE

    def _record(self, r: Mapping[str, Any], w: Mapping[str, Any], path: str) -> Compatibility:
        key = (r["name"], w["name"])
        if key in self.assumed:
            return COMPATIBLE
        self.assumed.add(key)
        by_name = {f["name"]: f for f in w["fields"]}
        for f in r["fields"]:
            where = f"{path}.{f['name']}"
            wf = by_name.get(f["name"])
            if wf is None:
                wf = next((by_name[a] for a in f.get("aliases") or () if a in by_name), None)
            if wf is not None:
                result = self.check(f["type"], wf["type"], where)
                if not result:
                    return result
            elif "default" not in f:
                return Compatibility(
                    False,
                    "the writer has no such field and the reader's field has no default",
                    where,
                )
        return COMPATIBLE

    def matches(self, r: Any, w: Any) -> bool:
        """The spec's shallow "match" of two dereferenced schemas."""
        rk, wk = _kind(r), _kind(w)
        if rk == "union" or wk == "union":
            return True
        if rk == wk and rk in PRIMITIVES:
            return True
        if (wk, rk) in _PROMOTIONS:
            return True
        if rk != wk:
            return False
        if rk == "array":
            return self.matches(_deref(r["items"], self.rn), _deref(w["items"], self.wn))
        if rk == "map":
            return self.matches(_deref(r["values"], self.rn), _deref(w["values"], self.wn))
        if rk == "fixed" and r["size"] != w["size"]:
            return False
        # Named types match on unqualified names, or on a reader alias (as fastavro does).
        aliases = r.get("aliases") or ()
        return bool(
            _unqualified(r["name"]) == _unqualified(w["name"])
            or w["name"] in aliases
            or _unqualified(w["name"]) in aliases
        )


_PROMOTIONS = frozenset(
    {
        ("int", "long"),
        ("int", "float"),
        ("int", "double"),
        ("long", "float"),
        ("long", "double"),
        ("float", "double"),
        ("string", "bytes"),
        ("bytes", "string"),
    }
)


def _is_decimal(node: Any) -> bool:
    return isinstance(node, dict) and node.get("logicalType") == "decimal"


# -- types and scopes -----------------------------------------------------------------------


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
        except _WRITE_ERRORS as e:
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
        except _DECODE_ERRORS as e:
            where = (writer or self)._locate(fo, start, path)
            raise InvalidAvroData(
                f"{where}: malformed Avro data ({_reason(e)})", field=where
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
                except _DECODE_ERRORS:
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
                except _DECODE_ERRORS:
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


def _reason(e: BaseException) -> str:
    text = str(e).strip()
    if isinstance(e, EOFError):
        return "truncated"
    if len(text) > 120:
        text = text[:117] + "..."
    return f"{type(e).__name__}: {text}" if text else type(e).__name__


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
        except _PARSE_ERRORS as e:
            raise InvalidSchema(f"invalid schema: {_reason(e)}") from None
        node = parsed["fields"][0]["type"]
        names.pop(f"{namespace}.{_SCOPE}" if namespace else _SCOPE, None)
        new = {k: v for k, v in names.items() if k not in self._names}
        _Validator(names).check(node, new)
        self._names.update(new)
        stripper = _Stripper(self._names, self._stripped)
        stripped = stripper.strip(node)
        return AvroType(node, self._names, stripped, self._stripped)


class _Validator:
    """The rules of the spec's "Schema Declaration" that fastavro does not enforce, plus
    qgate's refusals (recursive types, arrays of zero-size items)."""

    def __init__(self, names: Mapping[str, Any]) -> None:
        self.names = names

    def check(self, node: Any, new: Mapping[str, Any]) -> None:
        self._walk(node, set())
        for name, definition in new.items():
            self._name(name)
            if self._reaches(name, definition):
                raise InvalidSchema(
                    f"{name} is recursive; qgate does not accept recursive types "
                    "(decoding them has no depth bound)"
                )

    def _name(self, fullname: str) -> None:
        parts = fullname.split(".")
        if not all(_NAME_RE.match(p) for p in parts):
            raise InvalidSchema(f"{fullname!r} is not a valid Avro name")
        if parts[-1] in PRIMITIVES:
            raise InvalidSchema(f"{fullname!r}: a primitive type name cannot be defined")

    def _walk(self, node: Any, seen: set[str]) -> None:
        if isinstance(node, str):
            return
        if isinstance(node, list):
            self._union(node)
            for b in node:
                self._walk(b, seen)
            return
        if not isinstance(node, dict):
            raise InvalidSchema(f"not a schema: {_show(node)}")
        t = node.get("type")
        if not isinstance(t, str) or not (t in PRIMITIVES or t in _NAMED or t in ("array", "map")):
            self._walk(t, seen)  # {"type": "some.Name"} or {"type": {...}}
            return
        kind = _kind(node)
        if kind in PRIMITIVES:
            return
        if kind in ("record", "enum", "fixed"):
            if node["name"] in seen:
                return
            seen.add(node["name"])
        if kind == "record":
            fields = node.get("fields")
            if not isinstance(fields, list):
                raise InvalidSchema(f"record {node['name']} needs a list of fields")
            taken: set[str] = set()
            for f in fields:
                name = f.get("name")
                if not isinstance(name, str) or not _NAME_RE.match(name):
                    raise InvalidSchema(f"{node['name']}: {name!r} is not a valid field name")
                if name in taken:
                    raise InvalidSchema(f"{node['name']}: field {name!r} is declared twice")
                taken.add(name)
                self._walk(f["type"], seen)
                if "default" in f:
                    try:
                        _Converter(self.names, tag=False).default(
                            f["type"], f["default"], f"{node['name']}.{name}"
                        )
                    except _DataError as e:
                        raise InvalidSchema(
                            f"invalid default for {e.path}: {e.message}", field="schema"
                        ) from None
        elif kind == "fixed":
            size = node.get("size")
            if not isinstance(size, int) or isinstance(size, bool) or size < 0:
                raise InvalidSchema(f"fixed {node['name']} needs a size >= 0 (got {size!r})")
        elif kind == "array":
            self._walk(node["items"], seen)
            if self._zero_width(node["items"]):
                raise InvalidSchema(
                    "arrays of items that encode to zero bytes (null, empty records) are not "
                    "accepted: their length is unbounded by the data size"
                )
        elif kind == "map":
            self._walk(node["values"], seen)
        elif kind != "enum":
            raise InvalidSchema(f"unknown type {kind!r}")

    def _union(self, branches: list[Any]) -> None:
        # spec "Unions": no union directly in a union; one branch per unnamed type.
        taken: set[str] = set()
        for b in branches:
            if isinstance(b, list):
                raise InvalidSchema("a union may not immediately contain another union")
            d = _deref(b, self.names)
            kind = _kind(d)
            key = d["name"] if kind in ("record", "enum", "fixed") else kind
            if key in taken:
                raise InvalidSchema(f"a union holds {key} twice")
            taken.add(key)

    def _zero_width(self, node: Any) -> bool:
        d = _deref(node, self.names)
        kind = _kind(d)
        if kind == "null":
            return True
        if kind == "fixed":
            return bool(d["size"] == 0)
        if kind == "record":
            return all(self._zero_width(f["type"]) for f in d["fields"])
        return False

    def _reaches(self, target: str, node: Any, seen: set[str] | None = None) -> bool:
        """Whether ``node`` refers back to the named type ``target``."""
        seen = set() if seen is None else seen

        def refs(n: Any, top: bool) -> Iterator[str]:
            if isinstance(n, str):
                if n not in PRIMITIVES:
                    yield n
            elif isinstance(n, list):
                for b in n:
                    yield from refs(b, False)
            elif isinstance(n, dict):
                kind = _kind(n)
                if kind in ("record", "enum", "fixed") and not top:
                    yield n["name"]
                elif kind == "record":
                    for f in n.get("fields", ()):
                        yield from refs(f["type"], False)
                elif kind == "array":
                    yield from refs(n["items"], False)
                elif kind == "map":
                    yield from refs(n["values"], False)
                elif not isinstance(n["type"], str) or n["type"] not in PRIMITIVES:
                    yield from refs(n["type"], False)

        for ref in refs(node, True):
            if ref == target:
                return True
            if ref not in seen and ref in self.names:
                seen.add(ref)
                if self._reaches(target, self.names[ref], seen):
                    return True
        return False


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
        except _PARSE_ERRORS as e:
            raise InvalidSchema(f"invalid schema: {_reason(e)}") from None
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
        raise InvalidSchema(f"schema is not a JSON value: {_reason(e)}") from None
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


# -- object container files (spec "Object Container Files") ----------------------------------

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
        meta = _read(fo, _META)
    except _DECODE_ERRORS as e:
        raise InvalidAvroData(f"{path}: malformed file header ({_reason(e)})", field=path) from None
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
            count = _read(fo, "long")
            size = _read(fo, "long")
        except _DECODE_ERRORS:
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
    """An object container file of ``records`` (values as this module decodes them) written
    by ``fastavro.writer``; the header carries the schema as given."""
    if codec not in _CODECS:
        raise InvalidArgument(f"codec must be null or deflate (got {codec!r})", field="codec")
    out = io.BytesIO()
    options: dict[str, Any] = {"codec": codec, "metadata": dict(metadata or {})}
    if sync_marker is not None:
        options["sync_marker"] = sync_marker
    try:
        fastavro.writer(out, fastavro.parse_schema(schema.definition), records, **options)
    except _WRITE_ERRORS as e:
        raise InvalidAvroData(f"records: cannot be written: {e}", field="records") from None
    return out.getvalue()
