"""The values that cross between a worker and the hub, as msgpack.

A worker calls the hub's ``IQueueService`` with the same arguments a protocol would pass
in one process, and gets back the same values: the ``core.model`` types (``Message``,
``Claim``, ``Queue``, ...), tuples (kept apart from lists), and the typed errors of
``core.errors``, re-raised as the same class with the same fields so a protocol answers
exactly as it would in one process. msgpack does the bytes; this module only says how
each of our types becomes an extension type and back.
"""

from __future__ import annotations

import builtins
import dataclasses
import threading
from types import MappingProxyType
from typing import Any

import msgpack

from qgate.core import model
from qgate.core.admin import DepthReport, QueueDepth
from qgate.core.errors import QGateError
from qgate.core.jsonsafe import StrictJSON
from qgate.core.push_policy import PushOptions, RetryPolicy
from qgate.core.usage import TenantUsage

_TUPLE = 1
_MESSAGE = 2
_OVERFLOW = 3
_ERROR = 4
#: A body ``jsonsafe.dumps`` wrote (a worker parsed and re-wrote it): it stays one, so the
#: hub's core does not parse it again to check that it is JSON.
_STRICT_JSON = 5


#: Extension codes of the frozen dataclasses of ``core.model``, fields in order. New codes
#: go at the end: both sides of a channel run the same code, so order is all they share.
def _model_types() -> tuple[type, ...]:
    """Every value type a core call may take or answer: each dataclass of ``core.model``
    (found, so a new one crosses the channel without a line here), and those of the core
    modules beside it; ordered by name, so the hub and its workers (the same code) agree
    on their codes."""
    found = [
        obj
        for obj in vars(model).values()
        if isinstance(obj, type)
        and dataclasses.is_dataclass(obj)
        and obj.__module__ == model.__name__
    ]
    found += [TenantUsage, QueueDepth, DepthReport, RetryPolicy, PushOptions]
    return tuple(sorted(set(found), key=lambda cls: f"{cls.__module__}.{cls.__qualname__}"))


_DATACLASSES: tuple[type, ...] = _model_types()
_FIRST_DATACLASS = 16
_CODES = {cls: _FIRST_DATACLASS + i for i, cls in enumerate(_DATACLASSES)}
_FIELDS = {cls: tuple(f.name for f in dataclasses.fields(cls)) for cls in _DATACLASSES}


class RemoteError(Exception):
    """An error of the hub that is not one of qgate's types (a bug, or a library's
    exception): the worker sees its class name and message, as a 500 would show them."""


def _error_classes() -> dict[str, type[BaseException]]:
    """Every QGateError subclass by qualified name (including those defined after this
    module was imported, e.g. by other core modules)."""
    found: dict[str, type[BaseException]] = {}
    todo: list[type[BaseException]] = [QGateError]
    while todo:
        cls = todo.pop()
        found[f"{cls.__module__}.{cls.__qualname__}"] = cls
        todo.extend(cls.__subclasses__())
    return found


def _encode_error(error: BaseException) -> list[Any]:
    cls = type(error)
    state = {k: v for k, v in vars(error).items() if _packable(v)}
    return [f"{cls.__module__}.{cls.__qualname__}", [a for a in error.args if _packable(a)], state]


def _packable(value: Any) -> bool:
    return value is None or isinstance(value, str | int | float | bool | bytes | list | dict)


def decode_error(name: str, args: list[Any], state: dict[str, Any]) -> BaseException:
    """The exception ``_encode_error`` described: the same class when it is one of ours
    (or a builtin one), built without calling its ``__init__`` (whose signature varies),
    with the same ``args`` and attributes."""
    cls = _error_classes().get(name)
    if cls is None and name.startswith("builtins."):
        found = getattr(builtins, name.removeprefix("builtins."), None)
        if isinstance(found, type) and issubclass(found, Exception):
            cls = found
    if cls is None:
        return RemoteError(f"{name}: {args[0] if args else ''}")
    error = cls.__new__(cls)
    error.args = tuple(args)
    vars(error).update(state)
    return error


class _Mark:
    """What an empty extension value of ``code`` decodes to: the head of an array that
    holds one of our values (``[mark, field, ...]``), rebuilt when the array ends."""

    __slots__ = ("code",)

    def __init__(self, code: int) -> None:
        self.code = code


#: One empty extension value per code: the head of an array holding one of our values.
#: Fields are packed by the same packer in the same pass (no nested packing).
_HEADS = {code: msgpack.ExtType(code, b"") for code in range(128)}
_MARKS = {code: _Mark(code) for code in range(128)}


def _default(value: Any) -> Any:
    kind = type(value)
    if kind is model.Message:
        return [_HEADS[_MESSAGE], *value]
    if kind is tuple:
        return [_HEADS[_TUPLE], *value]
    if kind is StrictJSON:
        return [_HEADS[_STRICT_JSON], bytes(value)]
    code = _CODES.get(kind)
    if code is not None:
        return [_HEADS[code], *[getattr(value, f) for f in _FIELDS[kind]]]
    if kind is model.Overflow:
        return [_HEADS[_OVERFLOW], value.value]
    if isinstance(value, MappingProxyType | dict):
        return dict(value)
    if isinstance(value, BaseException):
        return [_HEADS[_ERROR], *_encode_error(value)]
    # Subclasses of plain types (enums) go as their plain value.
    if isinstance(value, str):
        return str(value)
    if isinstance(value, int):
        return int(value)
    if isinstance(value, float):
        return float(value)
    if isinstance(value, bytes):
        return bytes(value)
    if isinstance(value, list | tuple | frozenset | set):
        return list(value)
    raise TypeError(f"cannot send a {kind.__qualname__} to another process")


def _ext_hook(code: int, data: bytes) -> Any:
    return _MARKS[code]


def _list_hook(items: list[Any]) -> Any:
    if not items or type(items[0]) is not _Mark:
        return items
    code = items[0].code
    if code == _MESSAGE:
        return model.Message._make(items[1:])
    if code == _TUPLE:
        return tuple(items[1:])
    if code == _STRICT_JSON:
        return StrictJSON(items[1])
    if code == _OVERFLOW:
        return model.Overflow(items[1])
    if code == _ERROR:
        return decode_error(*items[1:])
    return _DATACLASSES[code - _FIRST_DATACLASS](*items[1:])


_local = threading.local()


def packb(value: Any) -> bytes:
    """``value`` as msgpack bytes, our types as arrays headed by an extension value."""
    packer = getattr(_local, "packer", None)
    if packer is None:  # one per thread: a Packer keeps its buffer between calls
        packer = _local.packer = msgpack.Packer(
            default=_default, use_bin_type=True, strict_types=True
        )
    out: bytes = packer.pack(value)  # resets itself when packing fails
    return out


def unpackb(data: bytes) -> Any:
    """The value ``packb`` wrote."""
    return msgpack.unpackb(
        data, ext_hook=_ext_hook, list_hook=_list_hook, raw=False, strict_map_key=False
    )
