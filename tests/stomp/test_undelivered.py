"""A queue subscription's claim that never reached the client does not count: given
back when the client left before the MESSAGE frame was written, the message is neither
``redelivered`` nor dead-lettered because of it."""

from __future__ import annotations

import pytest
from twisted.internet.task import Clock

from qgate.core.model import NewMessage, QueueOptions
from qgate.core.service import QueueService
from qgate.protocols.stomp.codec import Frame
from qgate.storage.memory import MemoryStorage
from tests.support.core import TEST_LIMITS
from tests.support.deferreds import fired
from tests.support.doubles import HeldClaims
from tests.support.stomp import Client, make_ctx

#: One claim too many and the message is dead: any miscounted claim shows.
ONCE = QueueOptions(max_claim_count=1, dead_letter_queue="dead")


@pytest.fixture
def store() -> HeldClaims:
    return HeldClaims(MemoryStorage())


@pytest.fixture
def service(clock: Clock, store: HeldClaims) -> QueueService:
    return QueueService(clock, store, MemoryStorage(), limits=TEST_LIMITS)


def _queue_with(service: QueueService, *bodies: bytes) -> None:
    fired(service.create_queue("default", "q", ONCE))
    fired(service.publish("default", "q", [NewMessage(b) for b in bodies]))


def _subscribed(service: QueueService, **headers: str) -> Client:
    client = Client(make_ctx(service, heartbeat_ms=0))
    client.connect()
    client.send("SUBSCRIBE", {"destination": "/queue/q", "id": "s", "ack": "client", **headers})
    return client


def _delivered_again(service: QueueService, store: HeldClaims, count: int) -> list[Frame]:
    """What a new consumer gets: ``count`` MESSAGE frames, none of them dead-lettered."""
    other = _subscribed(service, **{"prefetch-count": str(count)})
    store.answer()
    frames = other.messages()
    assert fired(service.queue_stats("default", "q")).claimed == count
    assert fired(store.get_queue("default", "dead")) is None  # nothing was dead-lettered
    return frames


def test_a_claim_given_back_after_disconnect_before_any_message_does_not_count(
    service, store
):
    _queue_with(service, b"job")
    client = _subscribed(service)
    client.send("DISCONNECT", {"receipt": "bye"})
    assert store.answer() == 1  # the claim comes back after the client has left
    assert [f.command for f in client.read()] == ["RECEIPT"]
    assert client.closing
    [again] = _delivered_again(service, store, 1)
    assert again.body == b"job"
    assert "redelivered" not in again.headers


def test_a_claim_given_back_after_the_connection_dropped_does_not_count(service, store):
    _queue_with(service, b"a", b"b")
    client = _subscribed(service)
    client.lose()
    assert store.answer() == 1
    frames = _delivered_again(service, store, 2)
    assert [(f.body, "redelivered" in f.headers) for f in frames] == [(b"a", False), (b"b", False)]


def test_a_message_written_then_given_back_counts_and_comes_back_redelivered(
    service, store
):
    """The other side of the rule: a MESSAGE the client was sent counts (at-least-once)."""
    fired(service.create_queue("default", "q", QueueOptions(max_claim_count=2)))
    fired(service.publish("default", "q", [NewMessage(b"job")]))
    client = _subscribed(service)
    store.answer()
    [first] = client.messages()
    assert "redelivered" not in first.headers
    client.lose()
    other = _subscribed(service)
    store.answer()
    [again] = other.messages()
    assert again.body == b"job" and again.headers["redelivered"] == "true"
