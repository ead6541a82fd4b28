"""Avro on the Zaqar API (no I/O): container files in, container files of envelopes out.

* ``POST .../messages`` with ``Content-Type: avro/binary``: the body is an Avro object
  container file (codec ``null`` or ``deflate``); each record is one message.
* ``GET .../messages`` and ``POST .../claims`` with ``Accept: avro/binary``: the answer
  is a container file of :data:`ENVELOPE_SCHEMA` records, one per message. An Avro body is
  in the queue's current schema (its envelope's ``content_type`` names the fingerprint)
  and the file's metadata carries that schema under :data:`QUEUE_SCHEMA_META`; any other
  body is its stored bytes, under its own content type.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from qgate.core.avro_bodies import AVRO_BINARY, media_type
from qgate.core.model import Message
from qgate.core.schemas import parse_schema
from qgate.protocols.http.container import write_container

#: One message as an Avro consumer of the HTTP API receives it. Field names follow the
#: Zaqar JSON documents; times are seconds.
ENVELOPE_SCHEMA: dict[str, Any] = {
    "type": "record",
    "name": "Envelope",
    "namespace": "org.qgate.http",
    "doc": "A queued message: its id (the marker), age and TTL in seconds, the claim that "
    "holds it, and its body with the content type that says how to read it.",
    "fields": [
        {"name": "id", "type": "string"},
        {"name": "age", "type": "double"},
        {"name": "ttl", "type": "double"},
        {"name": "claim_id", "type": ["null", "string"], "default": None},
        {"name": "claim_count", "type": "int", "default": 0},
        {"name": "content_type", "type": "string"},
        {"name": "body", "type": "bytes"},
    ],
}
ENVELOPE = parse_schema(ENVELOPE_SCHEMA)

#: Container file metadata: the JSON text of the queue's schema (when it has one).
QUEUE_SCHEMA_META = "qgate.queue.schema"


def wants_avro(accept: str | None) -> bool:
    """Whether an ``Accept`` header prefers ``avro/binary`` to JSON (RFC 9110 12.5.1:
    highest ``q`` wins; on a tie, the one listed first)."""
    if not accept or AVRO_BINARY not in accept.lower():
        return False
    best_avro = best_json = (-1.0, 0)
    for position, item in enumerate(accept.split(",")):
        media = media_type(item)
        q = 1.0
        for param in item.split(";")[1:]:
            key, _, value = param.partition("=")
            if key.strip().lower() == "q":
                try:
                    q = float(value)
                except ValueError:
                    q = 0.0
        rank = (q, -position)
        if media == AVRO_BINARY:
            best_avro = max(best_avro, rank)
        elif media in ("application/json", "application/*", "*/*") or media.endswith("+json"):
            best_json = max(best_json, rank)
    return best_avro[0] > 0 and best_avro > best_json


def envelope(message: Message, now: float, claim_id: str | None = None) -> dict[str, Any]:
    return {
        "id": message.id,
        "age": message.age(now),
        "ttl": message.ttl,
        "claim_id": message.shown_claim(now, claim_id),
        "claim_count": message.claim_count,
        "content_type": message.content_type,
        "body": message.body,
    }


def envelopes_file(
    messages: Sequence[Message],
    now: float,
    claim_id: str | None = None,
    queue_schema: str | None = None,
) -> bytes:
    """A container file (deflate) of the envelopes of ``messages``."""
    metadata = {} if queue_schema is None else {QUEUE_SCHEMA_META: queue_schema}
    return write_container(
        ENVELOPE,
        [envelope(m, now, claim_id) for m in messages],
        codec="deflate",
        metadata=metadata,
    )
