"""Zaqar's JSON patch of queue metadata (``PATCH /v2/queues/{q}``): the draft-10 subset
Zaqar's ``queue_patching`` validates (``add``, ``remove``, ``replace`` of ``/metadata/<key>``)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from qgate.protocols.http.errors import HTTPError, bad_body
from qgate.protocols.http.wire import RESERVED_KEYS

#: The only media type Zaqar takes for a queue PATCH.
PATCH_TYPE = "application/openstack-messaging-v2.0-json-patch"

PATCH_OPS = ("add", "remove", "replace")


@dataclass(frozen=True, slots=True)
class Change:
    op: str
    key: str
    value: Any = None


def _pointer(pointer: Any) -> list[str]:
    # Zaqar's _validate_json_pointer / _decode_json_pointer.
    if not isinstance(pointer, str) or not pointer.startswith("/"):
        raise bad_body(f'Pointer `{pointer}` does not start with "/".')
    if "//" in pointer or (len(pointer) > 1 and pointer.endswith("/")):
        raise bad_body(f'Pointer `{pointer}` contains adjacent or trailing "/".')
    text = pointer.replace("~0", "").replace("~1", "")
    if "~" in text:
        raise bad_body(
            f'Pointer `{pointer}` contains "~" not part of a recognized escape sequence.'
        )
    return [p.replace("~1", "/").replace("~0", "~") for p in pointer[1:].split("/")]


def parse_patch(document: Any) -> list[Change]:
    """The changes of a queue PATCH body, validated like Zaqar's ``queue_patching``."""
    if not isinstance(document, list):
        raise bad_body("Request body must be a JSON array of operation objects.")
    changes = []
    ops = ", ".join(PATCH_OPS)
    for raw in document:
        if not isinstance(raw, dict):
            raise bad_body("Operations must be JSON objects.")
        op = raw.get("op")
        if op is None:
            raise bad_body(
                "Unable to find `op` in JSON Schema change. "
                f"It must be one of the following: {ops}."
            )
        if op not in PATCH_OPS:
            raise bad_body(f"Invalid operation: `{op}`. It must be one of the following: {ops}.")
        if "path" not in raw:
            raise bad_body("Unable to find 'path' in JSON Schema change")
        path = _pointer(raw["path"])
        if len(path) != 2:
            raise bad_body(
                f"Invalid JSON pointer for this resource: '/{'/'.join(path)}, e.g /metadata/key'"
            )
        if path[0].lower() != "metadata":
            raise bad_body("The root of path must be metadata, e.g /metadata/key.")
        if op != "remove" and "value" not in raw:
            raise bad_body(f'Operation "{op}" requires a member named "value".')
        changes.append(Change(op, path[1], raw.get("value")))
    return changes


def apply_patch(metadata: Mapping[str, Any], changes: Sequence[Change]) -> dict[str, Any]:
    """``metadata`` after ``changes``; replacing or removing a key that is neither set nor
    reserved is a 409, as in Zaqar's ``_do_replace``/``_do_remove``."""
    out = dict(metadata)
    for change in changes:
        if change.op == "add":
            out[change.key] = change.value
        elif change.op == "replace":
            if change.key not in out and change.key not in RESERVED_KEYS:
                raise HTTPError(
                    409, "Resource conflict", f"Can't replace non-existent object {change.key}."
                )
            out[change.key] = change.value
        elif change.key in out:
            del out[change.key]
        elif change.key not in RESERVED_KEYS:
            raise HTTPError(
                409, "Resource conflict", f"Can't remove non-existent object {change.key}."
            )
    return out
