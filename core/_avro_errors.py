"""The errors of qgate's Avro code, and the exceptions fastavro raises.

**Errors name the field.** Every data error is an ``InvalidArgument`` whose ``field`` is a
path such as ``body.address.zip`` (records ``.field``, arrays ``[i]``, map entries
``.key`` or ``["key"]``); compatibility paths write array items as ``[]`` and map
values as ``{}``.
"""

from __future__ import annotations

import struct

import fastavro.validation
from fastavro.read import SchemaResolutionError
from fastavro.schema import SchemaParseException, UnknownType

from qgate.core.errors import InvalidArgument

#: What fastavro raises on malformed input (it has no common base class).

DECODE_ERRORS = (
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
#: What fastavro raises on a value it cannot write.
WRITE_ERRORS = (
    ValueError,
    TypeError,
    KeyError,
    AttributeError,
    OverflowError,
    struct.error,
    fastavro.validation.ValidationError,
)
#: What fastavro raises on a schema it cannot parse.
PARSE_ERRORS = (
    SchemaParseException,
    UnknownType,
    ValueError,
    TypeError,
    KeyError,
    AttributeError,
    RecursionError,
)


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


class _DataError(Exception):
    """Internal: a JSON value does not fit, at ``path``."""

    def __init__(self, path: str, message: str) -> None:
        super().__init__(f"{path}: {message}")
        self.path = path
        self.message = message


def describe_error(e: BaseException) -> str:
    """A short account of a fastavro error, for an error message."""
    text = str(e).strip()
    if isinstance(e, EOFError):
        return "truncated"
    if len(text) > 120:
        text = text[:117] + "..."
    return f"{type(e).__name__}: {text}" if text else type(e).__name__
