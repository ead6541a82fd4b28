"""Avro message bodies: the content-type convention, and the checks of schema-checked queues.

Pure code over ``core.schemas`` (no storage, no Twisted); ``QueueService`` feeds it the
schemas it fetched. See ``docs/avro.md`` for the user's view.

**Where the writer schema lives.** A body stored as Avro binary is the bare datum, and its
content type names the schema that wrote it::

    avro/binary; fingerprint=<16 hex digits>

The fingerprint is the writer schema's CRC-64-AVRO, written as the 8 little-endian bytes
that single-object encoding carries, in lower-case hex. It sits in the content type (not in
a header) because every protocol already carries the content type, and because a queue's
writer schemas are then one ``SELECT DISTINCT content_type`` away (``set_schema`` checks
that a new schema reads them all).

**What a schema-checked queue stores.** Every body is checked and rewritten into the
queue's schema at publish time: JSON (``application/json`` or ``*/*+json``) is encoded with
the JSON convention of ``core.schemas``; Avro (the content type above, or single-object
encoding ``C3 01`` + fingerprint + datum under any non-JSON type) is resolved from its
writer schema into the queue's. So the writers of a queue's messages are always schemas the
queue had, which keeps ``set_schema``'s check exact and consumers' lives simple.

**Reader schemas are texts, not fingerprints.** The fingerprint ignores field defaults and
aliases, which resolution uses; two schemas with one fingerprint may resolve differently.
Writers are therefore looked up by fingerprint (any text with that fingerprint decodes the
same bytes), while a queue's reader schema is its own text, and compatibility results are
cached by (reader text, writer fingerprint).
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import replace
from typing import Any

from qgate.core import jsonsafe
from qgate.core.errors import InvalidArgument
from qgate.core.jsonsafe import is_json_type
from qgate.core.model import Message, NewMessage
from qgate.core.schemas import (
    AvroSchema,
    Compatibility,
    IncompatibleSchema,
    InvalidAvroData,
    SchemaCodec,
    fingerprint_bytes,
    is_single_object,
    to_json,
)

__all__ = [
    "AVRO_BINARY",
    "SCHEMA_TTL",
    "QueueBodies",
    "avro_content_type",
    "avro_writer",
    "format_fingerprint",
    "is_json_type",
    "media_type",
    "parse_fingerprint",
]

#: The media type of Avro binary (the Avro specification's, for RPC over HTTP).
AVRO_BINARY = "avro/binary"
_PREFIX = AVRO_BINARY + "; fingerprint="
#: Writer schemas kept parsed before the cache starts over (each is at most 64 kB).
MAX_CACHED_SCHEMAS = 4096
#: Seconds a queue's schema, as a reader last read it, is trusted (the core's readers and
#: publishers, STOMP subscriptions): a change that nothing else reveals (made by another
#: process, or a new text with the same fingerprint) is seen within this time.
SCHEMA_TTL = 5.0


def format_fingerprint(fingerprint: int) -> str:
    """A fingerprint as qgate shows it: single-object encoding's 8 bytes, in hex."""
    return fingerprint_bytes(fingerprint).hex()


def parse_fingerprint(text: str) -> int | None:
    """The fingerprint in ``format_fingerprint``'s form, or None when ``text`` is not one."""
    text = text.strip().strip('"').lower()
    if len(text) != 16:
        return None
    try:
        return int.from_bytes(bytes.fromhex(text), "little", signed=True)
    except ValueError:
        return None


def avro_content_type(fingerprint: int) -> str:
    """The content type of a body written as Avro binary by the schema ``fingerprint``."""
    return _PREFIX + format_fingerprint(fingerprint)


def media_type(content_type: str) -> str:
    return content_type.split(";", 1)[0].strip().lower()


def _content_fingerprint(content_type: str) -> int | None:
    if content_type.startswith(_PREFIX) and len(content_type) == len(_PREFIX) + 16:
        return parse_fingerprint(content_type[len(_PREFIX) :])  # our own form, fast
    media, _, params = content_type.partition(";")
    if media.strip().lower() != AVRO_BINARY:
        return None
    for param in params.split(";"):
        key, _, value = param.partition("=")
        if key.strip().lower() == "fingerprint":
            return parse_fingerprint(value)
    return None


def avro_writer(content_type: str, body: bytes) -> tuple[int, bytes] | None:
    """(writer fingerprint, datum) of an Avro body: ``avro/binary; fingerprint=...``, or
    single-object encoding under any type that is not JSON. None for anything else."""
    fingerprint = _content_fingerprint(content_type)
    if fingerprint is not None:
        return fingerprint, body
    if is_single_object(body) and not is_json_type(content_type):
        return int.from_bytes(body[2:10], "little", signed=True), body[10:]
    return None


class QueueBodies:
    """Writer schemas by fingerprint, and the conversions between a queue's schema and the
    bodies its publishers and consumers use."""

    def __init__(self) -> None:
        self._writers = SchemaCodec()
        self._compat: dict[tuple[str, int], Compatibility] = {}

    # -- writer schemas --------------------------------------------------------------------

    def __contains__(self, fingerprint: object) -> bool:
        return fingerprint in self._writers

    def add(self, schema: AvroSchema) -> AvroSchema:
        """Keep ``schema`` as the writer of its fingerprint (a kept one is not replaced)."""
        if len(self._writers) >= MAX_CACHED_SCHEMAS:
            self._writers = SchemaCodec()
            self._compat.clear()
        return self._writers.add(schema)

    def missing(self, fingerprints: Iterable[int]) -> set[int]:
        """The fingerprints of ``fingerprints`` with no writer schema here yet."""
        return {fp for fp in fingerprints if fp not in self._writers}

    def writer(self, fingerprint: int) -> AvroSchema:
        """The writer schema of ``fingerprint``; UnknownSchema when there is none here."""
        return self._writers.get(fingerprint)

    def can_read(self, reader: AvroSchema, writer: AvroSchema, path: str) -> Compatibility:
        key = (reader.text, writer.fingerprint)
        result = self._compat.get(key)
        if result is None:
            result = reader.can_read(writer, path)
            if len(self._compat) >= MAX_CACHED_SCHEMAS * 4:
                self._compat.clear()
            self._compat[key] = result
        return result

    def check_reads(self, reader: AvroSchema, writer: AvroSchema) -> None:
        """IncompatibleSchema naming the field when ``reader`` cannot read ``writer``."""
        result = self.can_read(reader, writer, "body")
        if not result:
            raise IncompatibleSchema(
                f"the new schema cannot read messages written with schema "
                f"{format_fingerprint(writer.fingerprint)}: {result}",
                path=result.path,
            )

    # -- publishing ------------------------------------------------------------------------

    def writers_of(self, messages: Sequence[NewMessage], reader: AvroSchema) -> set[int]:
        """The writer fingerprints that ``messages`` name, other than ``reader``'s."""
        found = set()
        for m in messages:
            avro = avro_writer(m.content_type, m.body)
            if avro is not None and avro[0] != reader.fingerprint:
                found.add(avro[0])
        return found

    def to_queue_schema(
        self, reader: AvroSchema, messages: Sequence[NewMessage]
    ) -> list[NewMessage]:
        """``messages`` checked against the queue's schema ``reader`` and rewritten as Avro
        binary written by it; the first bad one fails the batch naming its index and field
        (``messages[2].body.address.zip``). Writer schemas must have been ``add``-ed."""
        content_type = avro_content_type(reader.fingerprint)
        return [
            replace(m, body=self._encode(reader, m, f"messages[{i}]"), content_type=content_type)
            for i, m in enumerate(messages)
        ]

    def _encode(self, reader: AvroSchema, m: NewMessage, where: str) -> bytes:
        path = f"{where}.body"
        if is_json_type(m.content_type):
            try:
                value = jsonsafe.loads(m.body)
            except jsonsafe.JSONValueError as e:
                raise InvalidAvroData(f"{path} is not JSON: {e.reason}", field=path) from None
            return reader.encode_json(value, path)
        avro = avro_writer(m.content_type, m.body)
        if avro is None:
            raise InvalidArgument(
                f"{where}: a queue with a schema takes JSON (application/json) or Avro "
                "(avro/binary; fingerprint=..., or single-object encoding) bodies, "
                f"not {m.content_type!r:.80}",
                field=f"{where}.content_type",
            )
        fingerprint, datum = avro
        if fingerprint == reader.fingerprint:
            reader.decode(datum, None, path)  # well formed and whole
            return datum
        if fingerprint not in self._writers:
            raise InvalidArgument(
                f"{where}: writer schema {format_fingerprint(fingerprint)} is not registered "
                "(register it, or post a container file that carries it)",
                field=f"{where}.content_type",
            )
        writer = self._writers.get(fingerprint)
        result = self.can_read(reader, writer, path)
        if not result:
            raise IncompatibleSchema(
                f"{where}: the queue's schema cannot read writer schema "
                f"{format_fingerprint(fingerprint)}: {result}",
                path=result.path,
                field=result.path,
            )
        return reader.write(reader.decode(datum, writer, path), path)

    # -- consuming -------------------------------------------------------------------------

    def _resolved(self, reader: AvroSchema | None, fingerprint: int, datum: bytes) -> Any:
        """The value of a body, resolved into ``reader`` when it can read the writer, else
        as written; ``(value, schema it is now in)``."""
        if reader is not None and reader.fingerprint == fingerprint:
            return reader.decode(datum, None), reader
        writer = self._writers.get(fingerprint)
        if reader is not None and self.can_read(reader, writer, "body"):
            return reader.decode(datum, writer), reader
        return writer.decode(datum, None), writer

    def decode_json(self, reader: AvroSchema | None, message: Message) -> Any:
        """The JSON value of an Avro message (see ``_resolved``); InvalidArgument when it
        is not Avro or cannot be decoded."""
        avro = avro_writer(message.content_type, message.body)
        if avro is None:
            raise InvalidArgument("not an Avro body", field="body")
        value, _ = self._resolved(reader, *avro)
        return to_json(value)

    def rewrite(self, reader: AvroSchema | None, message: Message) -> Message:
        """An Avro message with its body written by ``reader`` (when it can read it), as
        ``avro/binary; fingerprint=...`` either way; others unchanged."""
        avro = avro_writer(message.content_type, message.body)
        if avro is None:
            return message
        fingerprint, datum = avro
        try:
            value, target = self._resolved(reader, fingerprint, datum)
        except InvalidArgument:
            return message  # cannot decode it: hand it over as stored
        if target.fingerprint != fingerprint:
            datum = target.write(value)
        return message._replace(body=datum, content_type=avro_content_type(target.fingerprint))
