"""Hand-off in the service, on memory: a publish to a queue where a claim or pop waits
gives it the messages in its own store call, and the waiter has them once that is done.

``HeldPublishes`` stands in for the SQL writer: it answers a publish when the test says,
and does the store's part at once (``now``), only then (``later``, the writer had not got
to it), or not at all (``fail``: the transaction took the offer and then failed)."""

from __future__ import annotations

from typing import Any

import pytest
from twisted.internet.defer import CancelledError, Deferred, fail, maybeDeferred
from twisted.internet.task import Clock
from zope.interface import implementer

from qgate.core.errors import QueueFull, StorageUnavailable
from qgate.core.interfaces import IHandoffStorage, IQueueStorage
from qgate.core.model import NewMessage, QueueOptions
from qgate.core.service import QueueService
from qgate.storage.memory import MemoryStorage
from tests.support.core import TEST_LIMITS, msgs
from tests.support.deferreds import fired, has_result

T = "tenant-a"


@implementer(IQueueStorage, IHandoffStorage)
class HeldPublishes:
    """A memory store (not synchronous to the service) whose publishes are answered by
    ``answer()``; claims and pops are counted."""

    def __init__(self, target: MemoryStorage, mode: str = "now") -> None:
        self.target = target
        self.mode = mode
        self.held: list[tuple[Deferred[Any], Any]] = []
        self.claims = 0
        self.pops = 0
        #: Also hold ``next_wake`` reads until ``answer()`` (a read thread's answer).
        self.hold_reads = False

    def __getattr__(self, name: str) -> Any:
        return getattr(self.target, name)

    def publish(self, *args: Any, **kwargs: Any) -> Deferred[Any]:
        d: Deferred[Any] = Deferred()
        if self.mode == "now":
            done = maybeDeferred(self.target.publish_now, *args, **kwargs)
            self.held.append((d, lambda done=done: done))
        elif self.mode == "later":
            self.held.append((d, lambda: maybeDeferred(self.target.publish_now, *args, **kwargs)))
        else:
            handoff = kwargs.get("handoff")
            if handoff is not None:
                handoff.take()
            self.held.append((d, lambda: fail(StorageUnavailable("COMMIT failed"))))
        return d

    def answer_one(self, index: int) -> None:
        d, outcome = self.held.pop(index)
        outcome().chainDeferred(d)

    def answer(self) -> None:
        held, self.held = self.held, []
        for d, outcome in held:
            outcome().chainDeferred(d)

    def next_wake(self, *args: Any) -> Deferred[Any]:
        if not self.hold_reads:
            return self.target.next_wake(*args)
        d: Deferred[Any] = Deferred()
        done = self.target.next_wake(*args)
        self.held.append((d, lambda: done))
        return d

    def claim(self, *args: Any, **kwargs: Any) -> Deferred[Any]:
        self.claims += 1
        return self.target.claim(*args, **kwargs)

    def pop_messages(self, *args: Any, **kwargs: Any) -> Deferred[Any]:
        self.pops += 1
        return self.target.pop_messages(*args, **kwargs)


@pytest.fixture
def memory() -> MemoryStorage:
    return MemoryStorage()


@pytest.fixture
def service(clock: Clock, memory: MemoryStorage) -> QueueService:
    service = QueueService(clock, memory, MemoryStorage(), limits=TEST_LIMITS)
    fired(service.create_queue(T, "q"))
    return service


def held_service(clock: Clock, mode: str = "now") -> tuple[QueueService, HeldPublishes]:
    store = HeldPublishes(MemoryStorage(), mode)
    service = QueueService(clock, store, MemoryStorage(), limits=TEST_LIMITS)
    fired(service.create_queue(T, "q"))
    return service, store


def stats(service: QueueService) -> tuple[int, int, int]:
    found = fired(service.queue_stats(T, "q"))
    return found.total, found.available, found.claimed


def test_a_waiting_claim_is_handed_the_message_leased_for_the_ttl_and_grace_it_asked(
    service, clock
):
    d = service.claim(T, "q", limit=5, ttl=20, grace=5, wait=30)
    published_at = clock.seconds()
    [marker] = fired(service.publish(T, "q", msgs(b"a")))
    claim = fired(d)
    assert [(m.id, m.body, m.claim_count) for m in claim.messages] == [(marker, b"a", 1)]
    assert (claim.ttl, claim.grace, claim.created_at) == (20, 5, published_at)
    assert claim.expires_at == published_at + 20
    assert claim.messages[0].expires_at >= published_at + 25
    assert fired(service.get_claim(T, "q", claim.id)).messages == claim.messages
    assert stats(service) == (1, 0, 1)
    clock.advance(20)  # the lease ends: claimable again, a second claim of it
    again = fired(service.claim(T, "q"))
    assert (again.messages[0].id, again.messages[0].claim_count) == (marker, 2)


def test_a_waiting_claim_gets_its_limit_in_claim_order_and_the_rest_stays_available(service):
    d = service.claim(T, "q", limit=2, wait=30)
    sent = [(b"p1", 1), (b"p9", 9), (b"p5", 5), (b"p0", 0)]
    fired(service.publish(T, "q", [NewMessage(b, priority=p) for b, p in sent]))
    assert [m.body for m in fired(d).messages] == [b"p9", b"p5"]
    assert [m.body for m in fired(service.claim(T, "q")).messages] == [b"p1", b"p0"]


def test_waiters_are_handed_publishes_in_the_order_they_started_waiting(service):
    first = service.claim(T, "q", wait=30)
    second = service.pop_messages(T, "q", 5, wait=30)
    fired(service.publish(T, "q", msgs(b"one")))
    assert [m.body for m in fired(first).messages] == [b"one"]
    assert not has_result(second)
    fired(service.publish(T, "q", msgs(b"two")))
    assert [m.body for m in fired(second)] == [b"two"]


def test_a_message_available_before_is_claimed_before_a_new_one_is_handed_over(clock):
    service, store = held_service(clock, "later")
    early = service.publish(T, "q", msgs(b"early"))  # on its way to the store
    d = service.claim(T, "q", limit=1, wait=30)  # its first attempt finds nothing yet
    late = service.publish(T, "q", msgs(b"late"))  # offered to the waiter
    store.answer()
    fired(early), fired(late)
    assert [m.body for m in fired(d).messages] == [b"early"]
    assert [m.body for m in fired(service.claim(T, "q")).messages] == [b"late"]


def test_a_delayed_message_is_not_handed_over_and_wakes_the_waiter_when_due(service, clock):
    d = service.claim(T, "q", wait=30)
    fired(service.publish(T, "q", [NewMessage(b"later", delay=5)]))
    assert not has_result(d)
    assert service.waiting(T, "q") == 1
    clock.advance(5)
    assert [m.body for m in fired(d).messages] == [b"later"]


def test_a_waiter_comes_back_after_a_hand_off_without_asking_storage_again(clock):
    service, store = held_service(clock)
    d = service.claim(T, "q", wait=30)
    assert store.claims == 1  # found nothing: parked
    p = service.publish(T, "q", msgs(b"a"))
    store.answer()
    fired(p)
    assert [m.body for m in fired(d).messages] == [b"a"]
    second = service.claim(T, "q", wait=30)
    pop = service.pop_messages(T, "q", 5, wait=30)
    assert (store.claims, store.pops) == (1, 0)  # known to hold nothing: parked at once
    p = service.publish(T, "q", msgs(b"b"))
    store.answer()
    fired(p)
    assert [m.body for m in fired(second).messages] == [b"b"]
    assert not has_result(pop)
    # The leases ending make both claimable: the waiters knew when, and the pop takes them.
    clock.advance(60)
    assert [m.body for m in fired(pop)] == [b"a", b"b"]


def test_a_waiting_pop_is_handed_messages_that_are_never_stored(service, memory):
    d = service.pop_messages(T, "q", 5, wait=30)
    markers = fired(service.publish(T, "q", msgs(b"a", b"b")))
    popped = fired(d)
    assert [(m.id, m.body) for m in popped] == list(zip(markers, [b"a", b"b"]))
    assert stats(service) == (0, 0, 0)
    assert memory._get(T, "q").msgs == {}


def test_a_publish_is_answered_only_once_the_waiter_has_its_messages(clock):
    service, store = held_service(clock)
    order: list[str] = []
    d = service.pop_messages(T, "q", 5, wait=30)
    d.addCallback(lambda popped: order.append(f"delivered {len(popped)}"))
    p = service.publish(T, "q", msgs(b"a"))
    p.addCallback(lambda ids: order.append("answered"))
    assert order == []  # not committed yet: nothing delivered, nothing answered
    store.answer()
    assert order == ["delivered 1", "answered"]


def test_a_waiter_cancelled_before_the_store_took_its_offer_leaves_the_message_available(clock):
    service, store = held_service(clock, "later")
    d = service.claim(T, "q", wait=30)
    p = service.publish(T, "q", msgs(b"a"))
    d.cancel()
    with pytest.raises(CancelledError):
        fired(d)
    store.answer()
    fired(p)
    assert stats(service) == (1, 1, 0)
    [msg] = fired(service.claim(T, "q")).messages
    assert (msg.body, msg.claim_count) == (b"a", 1)


def test_a_waiter_cancelled_after_the_store_took_its_offer_has_the_claim_given_back(clock):
    service, store = held_service(clock, "now")
    d = service.claim(T, "q", wait=30)
    p = service.publish(T, "q", msgs(b"a"))
    assert stats(service) == (1, 0, 1)  # leased in the store call, not committed yet
    d.cancel()
    with pytest.raises(CancelledError):
        fired(d)
    store.answer()
    fired(p)
    assert stats(service) == (1, 1, 0)
    [msg] = fired(service.claim(T, "q")).messages
    assert (msg.body, msg.claim_count) == (b"a", 1)  # the abandoned lease did not count


def test_a_pop_cancelled_after_the_store_took_its_offer_loses_the_messages(clock):
    service, store = held_service(clock, "now")
    d = service.pop_messages(T, "q", 5, wait=30)
    p = service.publish(T, "q", msgs(b"a"))
    d.cancel()
    with pytest.raises(CancelledError):
        fired(d)
    store.answer()
    fired(p)
    assert stats(service) == (0, 0, 0)  # at-most-once, as any pop in flight (logged)


def test_a_waiter_whose_wait_ends_while_a_publish_holds_its_offer_gets_the_messages(clock):
    service, store = held_service(clock, "now")
    d = service.pop_messages(T, "q", 5, wait=3)
    p = service.publish(T, "q", msgs(b"a"))
    clock.advance(3)  # the wait is over, but the store has popped "a" for it
    assert not has_result(d)
    store.answer()
    fired(p)
    assert [m.body for m in fired(d)] == [b"a"]


def test_a_waiter_whose_wait_ends_while_it_reads_its_next_wake_gets_what_it_was_handed(clock):
    service, store = held_service(clock, "now")
    store.hold_reads = True
    first = service.pop_messages(T, "q", 5, wait=3)  # found nothing, reading when to look
    second = service.pop_messages(T, "q", 5, wait=30)
    store.answer_one(1)  # the second learns that nothing is claimable, and parks
    p = service.publish(T, "q", msgs(b"a"))  # offered to the first in line, still reading
    clock.advance(3)
    store.answer()
    fired(p)
    assert [m.body for m in fired(first)] == [b"a"]
    assert not has_result(second)


def test_a_failed_commit_hands_the_waiter_nothing_and_it_keeps_waiting(clock):
    service, store = held_service(clock, "fail")
    d = service.claim(T, "q", wait=30)
    p = service.publish(T, "q", msgs(b"lost"))
    store.answer()
    with pytest.raises(StorageUnavailable):
        fired(p)
    assert not has_result(d)
    assert service.waiting(T, "q") == 1
    store.mode = "now"
    service.publish(T, "q", msgs(b"kept"))
    store.answer()
    assert [m.body for m in fired(d).messages] == [b"kept"]


def test_a_handed_claim_counts_toward_dead_lettering(clock):
    service = QueueService(clock, MemoryStorage(), MemoryStorage(), limits=TEST_LIMITS)
    options = QueueOptions(max_claim_count=1, dead_letter_queue="dlq")
    fired(service.create_queue(T, "q", options))
    d = service.claim(T, "q", wait=30)
    fired(service.publish(T, "q", msgs(b"poison")))
    claim = fired(d)
    assert fired(service.release(T, "q", claim.id)) == 1  # a NACK
    assert fired(service.claim(T, "q")) is None  # claimed once: it moves instead
    assert [m.body for m in fired(service.claim(T, "dlq")).messages] == [b"poison"]


def test_a_publish_refused_by_the_queue_bounds_hands_nothing_over(clock):
    service = QueueService(clock, MemoryStorage(), MemoryStorage(), limits=TEST_LIMITS)
    fired(service.create_queue(T, "q", QueueOptions(max_messages=1)))
    fired(service.publish(T, "q", msgs(b"held")))
    fired(service.claim(T, "q"))
    d = service.pop_messages(T, "q", 5, wait=30)
    with pytest.raises(QueueFull):
        fired(service.publish(T, "q", msgs(b"refused")))
    assert not has_result(d)
    assert service.waiting(T, "q") == 1


def test_observers_wake_on_a_publish_handed_to_a_claimer(service):
    claim = service.claim(T, "q", wait=30)
    observe = service.observe(T, "q", include_claimed=True, wait=30)
    fired(service.publish(T, "q", msgs(b"a")))
    assert [m.body for m in fired(claim).messages] == [b"a"]
    assert [m.body for m in fired(observe)] == [b"a"]
