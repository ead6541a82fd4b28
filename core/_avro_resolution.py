"""Schema resolution, checked before reading (spec "Schema Resolution").

``AvroType.can_read`` implements the spec's rules statically (promotions, record fields and
defaults, enum symbols and defaults, unions, aliases as fastavro applies them) and names
the first offending field path, so a schema change that could not read stored messages is
refused with a reason instead of failing later, message by message.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from qgate.core._avro_nodes import PRIMITIVES, _deref, _describe, _kind, _unqualified


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
