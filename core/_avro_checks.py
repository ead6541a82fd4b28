"""Strict schema checks: the spec's rules that fastavro does not enforce, and qgate's own.

``fastavro.parse_schema`` accepts schemas the Avro specification forbids (duplicate field
names, bad names, nested unions, invalid defaults). Schemas come from clients, so they are
checked per the spec ("Schema Declaration") before use. Two more refusals protect the
process: *recursive* named types (fastavro's C decoder has no depth guard; a 10 kB body
nesting a recursive record segfaults it) and *arrays of zero-size items* (a crafted block
count of 2**62 ``null`` items loops for ever). Both are refused with a reason.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from typing import Any

from qgate.core._avro_errors import InvalidSchema, _DataError
from qgate.core._avro_json import _Converter
from qgate.core._avro_nodes import _NAME_RE, _NAMED, PRIMITIVES, _deref, _kind, _show


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
