"""Avro bodies for STOMP subscribers: JSON or Avro single-object encoding, as they ask.

A schema-checked queue stores each body as the bare Avro datum under ``avro/binary;
fingerprint=<hex>`` (``docs/avro.md``). Few STOMP clients can use that, so a subscription
converts such bodies into the format its SUBSCRIBE ``accept`` header chose:

- ``application/json`` (the default): the value as JSON, resolved into the queue's current
  schema, in the JSON convention of ``core.schemas``;
- ``avro/binary``: Avro single-object encoding (spec "Single object encoding": ``C3 01``,
  the writer schema's 8-byte CRC-64-AVRO fingerprint, the datum), written by the queue's
  current schema, which a client can look up by that fingerprint.

Only the content type marks a body as Avro (bodies are never sniffed), and a queue without
a schema delivers everything as published. The queue's schema comes from the service
(``get_schema``, parsed by the service's cache: ``parse_schema``) and is kept per
subscription: read on the first Avro message, again when a message names a writer not
seen since the last read, and after ``SCHEMA_TTL`` (the core's readers' bound). Messages
written by an earlier schema of the queue go through the service's ``decode_bodies`` /
``resolve_bodies``, which know the writer schemas. A body that cannot be converted is
delivered as stored, with a ``qgate-body-error`` header saying why: one bad message
neither stalls the subscription (as a NACK loop would) nor ends the connection (as an
ERROR frame would).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from qgate.core import jsonsafe
from qgate.core.avro_bodies import SCHEMA_TTL, avro_writer, format_fingerprint, media_type
from qgate.core.errors import InvalidArgument, QueueNotFound
from qgate.core.model import Message
from qgate.core.schemas import AvroSchema, to_json, to_single_object

JSON = "application/json"
AVRO = "avro/binary"
#: The format of a subscription whose SUBSCRIBE names none.
DEFAULT = JSON
#: What a SUBSCRIBE ``accept`` header may name, and the format each one means.
ACCEPTED = {
    JSON: JSON,
    AVRO: AVRO,
    "application/vnd.apache.avro+binary": AVRO,
    "*/*": DEFAULT,
}
#: The header of a message delivered as stored because its body could not be converted.
ERROR_HEADER = "qgate-body-error"


def parse_accept(value: str | None) -> str | None:
    """The format an ``accept`` header asks for: the first media type of its
    comma-separated list that qgate knows (parameters ignored); None when there is none."""
    if value is None or not value.strip():
        return DEFAULT
    for item in value.split(","):
        found = ACCEPTED.get(media_type(item))
        if found is not None:
            return found
    return None


def _stored_writer(message: Message) -> tuple[int, bytes] | None:
    """(writer fingerprint, datum) of a body stored as Avro binary, by its content type
    only: an opaque body that happens to start with ``C3 01`` stays opaque."""
    found = avro_writer(message.content_type, b"")
    return None if found is None else (found[0], message.body)


def _dump(value: Any) -> bytes:
    return jsonsafe.dumps_lenient(to_json(value))


def _as_stored(message: Message, reason: str) -> Message:
    # One line, bounded: STOMP 1.0 cannot escape a line break in a header value.
    text = " ".join(reason.split())[:200]
    return message._replace(headers={**message.headers, ERROR_HEADER: text})


class SubscriptionBodies:
    """One subscription's conversion of Avro bodies, with the queue's schema it last read."""

    def __init__(self, service: Any, accept: str) -> None:
        self.service = service
        self.accept = accept
        self._schema: AvroSchema | None = None
        #: When the schema (or its absence) was read; None before the first read.
        self._read_at: float | None = None
        #: Writers other than the schema read, seen since that read: a backlog written by
        #: an earlier schema does not make every batch read the schema again.
        self._others: set[int] = set()

    async def convert(self, tenant: str, queue: str, messages: Sequence[Message]) -> list[Message]:
        """``messages`` in this subscription's format; the common case (no Avro body)
        costs one scan and no call."""
        writers = [_stored_writer(m) for m in messages]
        if all(w is None for w in writers):
            return list(messages)
        read = self._read_at is None or self.service.clock.seconds() - self._read_at >= SCHEMA_TTL
        if read:
            await self._read(tenant, queue)
        others = self._others_in(writers)
        if not read and not others <= self._others:
            # A message names a writer new to this subscription: the queue's schema may
            # have changed since it was read.
            await self._read(tenant, queue)
            others = self._others_in(writers)
        self._others |= others
        schema = self._schema
        if schema is None:
            return list(messages)  # a queue without a schema: everything as published
        out = list(messages)
        older: list[int] = []
        for i, (m, w) in enumerate(zip(messages, writers, strict=True)):
            if w is None:
                continue  # not Avro (published before the queue had its schema)
            if w[0] == schema.fingerprint:
                out[i] = self._from_current(schema, m, w[1])
            else:
                older.append(i)
        if older:
            converted = await self._from_older(tenant, queue, [messages[i] for i in older])
            for i, m in zip(older, converted, strict=True):
                out[i] = m
        return out

    async def _read(self, tenant: str, queue: str) -> None:
        """Read the queue's schema (None: it has none, or the queue is gone)."""
        try:
            found = await self.service.get_schema(tenant, queue)
        except QueueNotFound:
            found = None
        self._schema = None if found is None else self.service.parse_schema(found[1])
        self._read_at = self.service.clock.seconds()
        self._others.clear()

    def _others_in(self, writers: Sequence[tuple[int, bytes] | None]) -> set[int]:
        current = None if self._schema is None else self._schema.fingerprint
        return {w[0] for w in writers if w is not None and w[0] != current}

    def _from_current(self, schema: AvroSchema, message: Message, datum: bytes) -> Message:
        """A body written by the queue's current schema, in this subscription's format."""
        if self.accept == AVRO:
            # Already written by the schema the fingerprint names: frame it, no decoding.
            body = to_single_object(schema.fingerprint, datum)
            return message._replace(body=body, content_type=AVRO)
        try:
            value = schema.decode(datum)
        except InvalidArgument as e:
            return _as_stored(message, f"not decoded: {e.description}")
        return message._replace(body=_dump(value), content_type=JSON)

    async def _from_older(self, tenant: str, queue: str, messages: list[Message]) -> list[Message]:
        """Bodies written by an earlier schema of the queue: the service knows the writers
        and resolves them into the queue's current schema."""
        if self.accept == AVRO:
            resolved: list[Message] = await self.service.resolve_bodies(tenant, queue, messages)
            out = []
            for m in resolved:
                w = _stored_writer(m)
                if w is not None:
                    # Normally the queue's schema; the writer's when that cannot read it.
                    m = m._replace(body=to_single_object(*w), content_type=AVRO)
                out.append(m)
            return out
        decoded = await self.service.decode_bodies(tenant, queue, messages)
        out = []
        for m in messages:
            if m.marker in decoded:
                body = jsonsafe.dumps_lenient(decoded[m.marker])
                out.append(m._replace(body=body, content_type=JSON))
            else:
                w = _stored_writer(m)
                writer = format_fingerprint(w[0]) if w is not None else "?"
                reason = f"not decoded: writer schema {writer} is unknown or the body is malformed"
                out.append(_as_stored(m, reason))
        return out
