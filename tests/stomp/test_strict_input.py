"""STOMP input qgate cannot serve is a protocol error: JSON bodies that are not strict JSON,
and numeric headers too long for ``int()``, each an ERROR frame naming what is wrong,
nothing stored and no traceback logged."""

from __future__ import annotations

from typing import Any

import pytest

from qgate.core.service import QueueService
from qgate.protocols.stomp.codec import V12, encode
from tests.support.deferreds import fired
from tests.support.stomp import Client

#: Longer than Python's int/str limit (4300 digits): int() of it raises ValueError.
HUGE = "7" * 5000


def failures(events: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [e for e in events if "log_failure" in e]


def queues(service: QueueService) -> list[str]:
    return [q.name for q in fired(service.list_queues("default"))]


# -- JSON bodies -----------------------------------------------------------------------------


@pytest.mark.parametrize(
    "body",
    [rb'"\ud800"', rb'{"k": "\udc00"}', b'{"x": NaN}', b"[Infinity]", b'{"x": 1e400}', b"{oops"],
)
@pytest.mark.parametrize("content_type", ["application/json", "application/vnd.acme+json"])
def test_a_json_send_that_is_not_strict_json_is_an_error_and_stores_nothing(
    client: Client, mem_service: QueueService, logged: list[Any], body: bytes, content_type: str
) -> None:
    client.connect()
    headers = {"destination": "/queue/q", "content-type": content_type, "receipt": "r1"}
    client.send("SEND", headers, body)
    frame = client.next()
    assert frame.command == "ERROR"
    assert frame.headers["receipt-id"] == "r1"
    assert "messages[0].body is not JSON" in frame.headers["message"]
    assert client.closing
    assert fired(mem_service.queue_stats("default", "q")).total == 0
    assert failures(logged) == []


def test_a_bad_json_send_in_a_batch_stores_the_ones_before_it(
    client: Client, mem_service: QueueService
) -> None:
    client.connect()
    frames = b"".join(
        encode("SEND", {"destination": "/queue/q", "content-type": "application/json"}, b, V12)
        for b in (b'{"n": 1}', rb'"\ud800"', b'{"n": 3}')
    )
    client.raw(frames)
    assert [f.command for f in client.read()] == ["ERROR"]
    # SENDs are one by one, as if never batched: the first is stored, the rest are not.
    stored = fired(mem_service.observe("default", "q", limit=10))
    assert [m.body for m in stored] == [b'{"n": 1}']


def test_strict_json_and_other_types_are_stored_as_sent(
    client: Client, mem_service: QueueService
) -> None:
    client.connect()
    sends = [
        ("application/json", rb'{"smile": "\ud83d\ude00", "n": 1e300}'),
        ("text/plain", rb'"\ud800" is just text here'),
        ("application/octet-stream", b"\xff{NaN"),
    ]
    for i, (content_type, body) in enumerate(sends):
        headers = {"destination": "/queue/q", "content-type": content_type, "receipt": str(i)}
        client.send("SEND", headers, body)
    assert [f.command for f in client.read()] == ["RECEIPT"] * 3
    stored = fired(mem_service.observe("default", "q", limit=10))
    assert [m.body for m in stored] == [b for _, b in sends]


# -- numeric headers -------------------------------------------------------------------------


def test_a_heart_beat_of_thousands_of_digits_is_a_protocol_error(
    client: Client, logged: list[Any]
) -> None:
    client.send("CONNECT", {"accept-version": "1.2", "host": "/", "heart-beat": f"{HUGE},0"})
    frame = client.next()
    assert frame.command == "ERROR"
    assert "heart-beat" in frame.headers["message"]
    assert failures(logged) == []


@pytest.mark.parametrize(
    ("header", "value"),
    [("priority", HUGE), ("priority", "1" * 19), ("expiration", HUGE), ("expires", HUGE)],
)
def test_a_send_with_an_over_long_number_is_a_protocol_error(
    client: Client, mem_service: QueueService, logged: list[Any], header: str, value: str
) -> None:
    client.connect()
    client.send("SEND", {"destination": "/queue/q", header: value}, b"x")
    frame = client.next()
    assert frame.command == "ERROR"
    assert header in frame.headers["message"]
    assert queues(mem_service) == []
    assert failures(logged) == []


@pytest.mark.parametrize(
    ("command", "headers", "named"),
    [
        ("ACK", {"id": HUGE}, "message id"),
        ("NACK", {"id": HUGE}, "message id"),
        (
            "SUBSCRIBE",
            {"destination": "/queue/q", "id": "s", "prefetch-count": HUGE},
            "prefetch-count",
        ),
    ],
    ids=["ack", "nack", "prefetch-count"],
)
def test_an_ack_id_or_prefetch_count_of_thousands_of_digits_is_a_protocol_error(
    client: Client, logged: list[Any], command: str, headers: dict[str, str], named: str
) -> None:
    client.connect()
    client.send(command, headers)
    frame = client.next()
    assert frame.command == "ERROR"
    assert named in frame.headers["message"]
    assert failures(logged) == []


def test_a_content_length_of_thousands_of_digits_is_a_protocol_error(
    client: Client, logged: list[Any]
) -> None:
    client.connect()
    client.raw(b"SEND\ndestination:/queue/q\ncontent-length:" + HUGE.encode() + b"\n\nx\x00")
    frame = client.next()
    assert frame.command == "ERROR"
    assert "content-length" in frame.headers["message"]
    assert failures(logged) == []
