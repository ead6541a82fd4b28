"""Schema nodes as fastavro parses them, and how to walk and describe them.

A "node" is a schema as fastavro.parse_schema leaves it: a primitive or full name (str), a
union (list) or a dict; a named type is defined inline once and referred to by full name.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from typing import Any

PRIMITIVES = frozenset({"null", "boolean", "int", "long", "float", "double", "bytes", "string"})
_NAMED = frozenset({"record", "error", "enum", "fixed"})
_NAME_RE = re.compile(r"[A-Za-z_][A-Za-z0-9_]*\Z")


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
