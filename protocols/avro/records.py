"""The records of ``qgate.avpr`` ⇄ core values (no I/O): queue options, queues, messages,
claims, stats and the declared error.

Which queue options exist, their types and their defaults come from ``core.options``; here
is only Avro RPC's name for each (the camelCase of the core's, the record's ``schema`` being
the queue's schema text) and the enum's spelling (``REJECT``, the core's ``reject``). A null
option takes the server's default, as the protocol's doc says.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping, Sequence
from typing import Any

from qgate.core import jsonsafe
from qgate.core.errors import InvalidArgument, QGateError
from qgate.core.model import (
    DEFAULT_PRIORITY,
    Claim,
    Message,
    NewMessage,
    Queue,
    QueueOptions,
    QueueStats,
)
from qgate.core.options import OPTIONS, with_values
from qgate.protocols.avro.ipc import AvroError


def _camel(name: str) -> str:
    head, *rest = name.split("_")
    return head + "".join(word.title() for word in rest)


#: The ``QueueOptions`` record's field of each core option, by the option's name.
OPTION_FIELDS: Mapping[str, str] = {option.name: _camel(option.name) for option in OPTIONS}
#: The record's field for the queue's schema (JSON text), beside the options.
SCHEMA_FIELD = "schema"


def error(error: QGateError) -> AvroError:
    """A core error as the protocol's declared error."""
    return AvroError(
        "QGateError",
        {"title": error.title, "description": error.description, "field": error.field},
    )


def options(record: Mapping[str, Any] | None, defaults: QueueOptions) -> QueueOptions | None:
    """The core options of a ``QueueOptions`` record (None for none); nulls take
    ``defaults``."""
    if record is None:
        return None
    values = {name: record.get(field) for name, field in OPTION_FIELDS.items()}
    overflow = values["overflow"]
    if isinstance(overflow, str):
        values["overflow"] = overflow.lower()
    found = with_values(defaults, values, defaults)
    return dataclasses.replace(found, schema_text=record.get(SCHEMA_FIELD))


def options_record(options: QueueOptions) -> dict[str, Any]:
    record = {field: getattr(options, name) for name, field in OPTION_FIELDS.items()}
    record["overflow"] = options.overflow.value.upper()
    record[SCHEMA_FIELD] = options.schema_text
    return record


def metadata(text: str | None) -> dict[str, Any] | None:
    """Queue metadata, a JSON object as text (strict JSON, as every protocol can show)."""
    if text is None:
        return None
    try:
        value = jsonsafe.loads(text)
    except jsonsafe.JSONValueError:
        value = None
    if not isinstance(value, dict):
        raise InvalidArgument("metadata must be a JSON object, as text", field="metadata")
    return value


def queue_record(queue: Queue) -> dict[str, Any]:
    return {
        "name": queue.name,
        "options": options_record(queue.options),
        "metadata": jsonsafe.dumps_lenient(dict(queue.metadata)).decode("utf-8"),
    }


def new_message(record: Mapping[str, Any]) -> NewMessage:
    priority = record["priority"]
    return NewMessage(
        body=record["body"],
        content_type=record["contentType"],
        headers=record["headers"],
        ttl=record["ttl"],
        delay=record["delay"],
        priority=DEFAULT_PRIORITY if priority is None else priority,
    )


def message_record(message: Message, now: float, claim_id: str | None = None) -> dict[str, Any]:
    return {
        "id": message.id,
        "age": message.age(now),
        "ttl": message.ttl,
        "claimId": message.shown_claim(now, claim_id),
        "claimCount": message.claim_count,
        "priority": message.priority,
        "body": message.body,
        "contentType": message.content_type,
        "headers": dict(message.headers),
    }


def claim_record(claim: Claim, messages: Sequence[Message], now: float) -> dict[str, Any]:
    """A claim with ``messages`` (its messages, their bodies resolved for the reader)."""
    return {
        "id": claim.id,
        "ttl": claim.ttl,
        "grace": claim.grace,
        "age": claim.age(now),
        "messages": [message_record(m, now, claim.id) for m in messages],
    }


def stats_record(stats: QueueStats, now: float) -> dict[str, Any]:
    return {
        "total": stats.total,
        "available": stats.available,
        "claimed": stats.claimed,
        "delayed": stats.delayed,
        "oldestAge": None if stats.oldest is None else stats.oldest.age(now),
        "newestAge": None if stats.newest is None else stats.newest.age(now),
    }
