"""A STOMP subscription converts Avro bodies with the schema the service parsed (its one
cache, ``IQueueService.parse_schema``), not with a parse or cache of its own."""

from __future__ import annotations

import json
from typing import Any

from qgate.core.model import NewMessage
from qgate.core.service import QueueService
from tests.support.deferreds import fired
from tests.support.stomp import Client, make_ctx

V1: dict[str, Any] = {
    "type": "record",
    "name": "User",
    "namespace": "test",
    "fields": [{"name": "id", "type": "long"}, {"name": "name", "type": "string"}],
}


class Recording:
    """The service as a session sees it, recording what ``parse_schema`` was asked and
    answered (everything else passes through)."""

    def __init__(self, service: QueueService) -> None:
        self._service = service
        self.parsed: list[tuple[Any, Any]] = []

    def __getattr__(self, name: str) -> Any:
        return getattr(self._service, name)

    def parse_schema(self, schema: Any) -> Any:
        parsed = self._service.parse_schema(schema)
        self.parsed.append((schema, parsed))
        return parsed


def test_a_subscription_decodes_with_the_schema_the_service_parsed(mem_service):
    fired(mem_service.create_queue("default", "q"))
    fired(mem_service.set_schema("default", "q", V1))
    recording = Recording(mem_service)
    client = Client(make_ctx(recording, heartbeat_ms=0))
    client.connect()
    client.send("SUBSCRIBE", {"destination": "/queue/q", "id": "s", "receipt": "r"})
    assert client.next().command == "RECEIPT"
    body = json.dumps({"id": 1, "name": "a"}).encode()
    fired(mem_service.publish("default", "q", [NewMessage(body, "application/json")]))
    assert json.loads(client.messages()[0].body) == {"id": 1, "name": "a"}
    _, text = fired(mem_service.get_schema("default", "q"))
    assert [asked for asked, _ in recording.parsed] == [text]
    assert recording.parsed[0][1] is mem_service.parse_schema(V1)
