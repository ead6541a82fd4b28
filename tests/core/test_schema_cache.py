"""The service's one cache of parsed schemas, ``IQueueService.parse_schema``: a schema text
is parsed once, and what the core holds is what a protocol that converts bodies gets."""

from __future__ import annotations

import json
from typing import Any

from twisted.internet.task import Clock

from qgate.core.service import QueueService
from qgate.storage.memory import MemoryStorage
from tests.support.core import TEST_LIMITS
from tests.support.deferreds import fired

V1: dict[str, Any] = {
    "type": "record",
    "name": "User",
    "namespace": "test",
    "fields": [{"name": "id", "type": "long"}, {"name": "name", "type": "string"}],
}


def memory_service() -> QueueService:
    return QueueService(Clock(), MemoryStorage(), MemoryStorage(), limits=TEST_LIMITS)


def test_a_schema_text_is_parsed_once_per_service():
    service = memory_service()
    text = json.dumps(V1, indent=2)
    first = service.parse_schema(text)
    assert service.parse_schema(text) is first
    assert service.parse_schema(text.encode()) is first
    # A JSON value is the schema of its compact text; an equal value is the same object.
    compact = service.parse_schema(V1)
    assert compact.text == json.dumps(V1, separators=(",", ":"))
    assert service.parse_schema(dict(V1)) is compact is service.parse_schema(compact.text)


def test_the_queue_schema_get_schema_names_is_the_one_the_service_holds():
    service = memory_service()
    fired(service.create_queue("t", "q"))
    fired(service.set_schema("t", "q", V1))
    fingerprint, text = fired(service.get_schema("t", "q"))
    schema = service.parse_schema(text)
    assert schema.fingerprint == fingerprint
    assert service.parse_schema(V1) is schema
