"""Strict JSON, shared by every protocol: what qgate accepts it can always serve back.

Python's ``json`` reads more than JSON (RFC 8259) and writes back what it read: ``NaN``,
``Infinity`` and ``-Infinity``; numbers that overflow a double (``1e400`` becomes ``inf``);
lone UTF-16 surrogates (``"\\ud800"``), which no UTF-8 encoder can write. Integer literals
past the interpreter's int/str limit (4300 digits by default) raise a bare ``ValueError``.
:func:`loads` refuses all of these with :class:`JSONValueError`, so a value it returns can
be written back by :func:`dumps`, which refuses them too (``allow_nan=False``, strict UTF-8).

Values that did not come through :func:`loads` (stored by an older version, decoded from
Avro, built by a caller) are written by :func:`dumps_lenient` where an answer must not
fail: lone surrogates become U+FFFD (what a UTF-8 decoder makes of bad bytes) and
non-finite numbers become ``null`` (as JavaScript's ``JSON.stringify`` writes them).

The standard library rather than orjson: orjson refuses surrogates and non-finite input
natively, but reads integers past 64 bits as floats (silently lossy), writes ``NaN`` as
``null`` without a word and would be one more compiled dependency. The checks here cost a
hook call per float literal and a regular-expression scan for surrogate escapes.
"""

from __future__ import annotations

import base64
import json
import math
import re
import sys
from collections.abc import Callable
from typing import Any

__all__ = [
    "IntegerTooLarge",
    "JSONValueError",
    "StrictJSON",
    "body_document",
    "check_value",
    "dumps",
    "dumps_lenient",
    "is_json_type",
    "loads",
]

#: A ``\u`` escape of a UTF-16 surrogate (high or low) in JSON text: the only way JSON
#: text decoded from UTF-8 can hold one. Pairs are fine (json joins them into one
#: character), so a match only means the decoded strings must be looked at.
_SURROGATE_ESCAPE = re.compile(r"\\u[dD][89abcdefABCDEF]")
_SURROGATE = re.compile("[\ud800-\udfff]")
#: Integers of fewer bits than this always have fewer digits than any int/str limit
#: Python allows (640 at least).
_LONGEST_INT_BITS = 2000


class JSONValueError(ValueError):
    """A document that is not strict JSON, or a value that cannot be written as JSON."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


class IntegerTooLarge(JSONValueError):
    """An integer literal past the interpreter's int/str limit or the caller's bound."""


def is_json_type(content_type: str) -> bool:
    """Whether a content type says its body is JSON: ``application/json`` or ``*/*+json``
    (RFC 6839), parameters and case aside. Every protocol decides by this test."""
    media = content_type.split(";", 1)[0].strip().lower()
    return media == "application/json" or media.endswith("+json")


def _no_constant(name: str) -> Any:
    raise JSONValueError(f"{name} is not a JSON number")


def _finite_float(text: str) -> float:
    value = float(text)
    if value - value != 0.0:  # inf - inf is nan; float() of JSON text is never nan
        raise JSONValueError(f"number {text[:40]} is too large for a double")
    return value


def _int_reader(bound: int) -> Callable[[str], int]:
    def read(text: str) -> int:
        value = int(text)
        if not -bound <= value < bound:
            raise IntegerTooLarge(f"integer {text[:40]} is out of range")
        return value

    return read


def loads(data: bytes | str, *, int_bound: int | None = None) -> Any:
    """The value of the JSON document ``data`` (UTF-8 when bytes), or JSONValueError
    saying why it is not strict JSON. ``int_bound`` refuses integers outside
    ``[-int_bound, int_bound)`` with IntegerTooLarge (Zaqar refuses past 64 bits)."""
    if isinstance(data, str):
        text = data
        if _SURROGATE.search(text):
            raise JSONValueError("the document holds a lone UTF-16 surrogate")
    else:
        try:
            text = bytes(data).decode("utf-8")
        except UnicodeDecodeError:
            raise JSONValueError("the document is not valid UTF-8") from None
    try:
        value = json.loads(
            text,
            parse_constant=_no_constant,
            parse_float=_finite_float,
            parse_int=None if int_bound is None else _int_reader(int_bound),
        )
    except JSONValueError:
        raise
    except RecursionError:
        raise JSONValueError("the document is nested too deeply") from None
    except json.JSONDecodeError as e:
        raise JSONValueError(f"not JSON: {e}") from None
    except ValueError:
        # int() past the interpreter's int/str limit (4300 digits by default); that limit
        # bounds str() the same way, so every integer read here can be written back.
        raise IntegerTooLarge(
            f"an integer has more than {sys.get_int_max_str_digits()} digits"
        ) from None
    if _SURROGATE_ESCAPE.search(text):
        check_value(value)
    return value


class StrictJSON(bytes):
    """Bytes that :func:`dumps` wrote: strict JSON by construction, so the core's check of
    a JSON body (:func:`loads` again) can skip them. Only ``dumps`` makes them."""

    __slots__ = ()


def dumps(value: Any) -> StrictJSON:
    """``value`` as compact UTF-8 JSON; JSONValueError when it holds a lone surrogate, a
    non-finite number or an integer too long to write."""
    try:
        return StrictJSON(
            json.dumps(value, ensure_ascii=False, separators=(",", ":"), allow_nan=False).encode(
                "utf-8"
            )
        )
    except UnicodeEncodeError:
        raise JSONValueError("a string holds a lone UTF-16 surrogate") from None
    except ValueError as e:
        # allow_nan=False, or int() past the interpreter's int/str limit.
        raise JSONValueError(f"not JSON: {e}") from None


def check_value(value: Any) -> None:
    """JSONValueError when :func:`dumps` cannot write ``value``."""
    dumps(value)


def _clean(value: Any) -> Any:
    if isinstance(value, str):
        return _SURROGATE.sub("\ufffd", value)
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, int) and value.bit_length() > _LONGEST_INT_BITS:
        try:
            str(value)
        except ValueError:
            return None  # past the interpreter's int/str limit: its digits cannot be written
    if isinstance(value, dict):
        return {_clean(k) if isinstance(k, str) else k: _clean(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_clean(v) for v in value]
    return value


def dumps_lenient(value: Any) -> StrictJSON:
    """``value`` as compact UTF-8 JSON, made writable first when it must be: lone
    surrogates become U+FFFD and non-finite numbers ``null``."""
    try:
        return dumps(value)
    except JSONValueError:
        return dumps(_clean(value))


def body_document(body: bytes, content_type: str) -> Any:
    """A message body as the Zaqar API shows it (HTTP answers, push payloads): a JSON body
    as its document, other UTF-8 as a string, other bytes as ``{"$binary": base64,
    "content_type": ...}``; never fails, whatever storage holds."""
    if is_json_type(content_type):
        try:
            return loads(body)
        except JSONValueError:
            pass
    try:
        return body.decode("utf-8")
    except UnicodeDecodeError:
        return {"$binary": base64.b64encode(body).decode("ascii"), "content_type": content_type}
