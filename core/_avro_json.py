"""The JSON convention: JSON values in, the Python values fastavro writes out, and back.

JSON bodies use the convention of Avro field *default values* (spec "Complex Types /
Records", the table of field default values): records and maps are objects, arrays are
arrays, enums are their symbol, ``bytes`` and ``fixed`` are strings whose code points 0-255
are the byte values, unions are *not* wrapped (the first branch that accepts the value is
used; a number goes to the first numeric branch that holds it exactly), and logical types
are their underlying type (a ``timestamp-millis`` is a number). ``to_json`` writes the same
convention, so JSON -> Avro -> JSON is the identity; the only extension is that non-finite
floats are the strings ``"NaN"``, ``"Infinity"`` and ``"-Infinity"`` (JSON has no such
numbers), accepted on input too.
"""

from __future__ import annotations

import math
import struct
from collections.abc import Mapping
from typing import Any

from qgate.core._avro_errors import _DataError
from qgate.core._avro_nodes import _branch_name, _deref, _describe, _key_path, _kind, _show

_INT_RANGE = (-(2**31), 2**31 - 1)
_LONG_RANGE = (-(2**63), 2**63 - 1)
_FLOAT_MAX = 3.4028234663852886e38
_NON_FINITE = {"NaN": math.nan, "Infinity": math.inf, "-Infinity": -math.inf}


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
