from __future__ import annotations

from twisted.internet.defer import CancelledError
from twisted.internet.task import Clock

from qgate.core.model import NewMessage
from qgate.core.service import QueueService
from qgate.core.wakeup import WakeupRegistry
from qgate.storage.memory import MemoryStorage
from tests.support.core import TEST_LIMITS
from tests.support.deferreds import fired
from tests.support.doubles import DownStorage


def test_notify_wakes_every_waiter_of_that_queue_only():
    registry = WakeupRegistry(Clock())
    a1, a2, b = registry.wait("a", 10), registry.wait("a", 10), registry.wait("b", 10)
    assert registry.notify("a") == 2
    assert a1.result is True and a2.result is True
    assert not b.called
    assert len(registry) == 1


def test_a_wait_times_out_on_the_clock_with_false():
    clock = Clock()
    registry = WakeupRegistry(clock)
    d = registry.wait("a", 5)
    clock.advance(4.9)
    assert not d.called
    clock.advance(0.1)
    assert d.result is False
    assert len(registry) == 0
    assert registry.notify("a") == 0


def test_cancel_removes_the_waiter_and_its_timer():
    clock = Clock()
    registry = WakeupRegistry(clock)
    d = registry.wait("a", 5)
    d.cancel()
    failures = []
    d.addErrback(failures.append)
    assert failures[0].check(CancelledError)
    assert len(registry) == 0
    assert clock.getDelayedCalls() == []


def test_notify_cancels_the_timers_of_woken_waiters():
    clock = Clock()
    registry = WakeupRegistry(clock)
    registry.wait("a", 5)
    registry.notify("a")
    assert clock.getDelayedCalls() == []


def test_the_reaper_carries_on_after_a_failed_round():
    clock = Clock()
    durable = DownStorage("reap", times=1)
    service = QueueService(clock, durable, MemoryStorage(), limits=TEST_LIMITS, reap_interval=5)
    fired(service.publish("t", "q", [NewMessage(b"x", ttl=1)]))
    service.start()
    clock.advance(5)  # the first round fails
    assert durable.failures == 0
    assert fired(service.queue_stats("t", "q")).total == 0  # expired, not yet reaped
    assert fired(durable.get_messages("t", "q", [1], 0.0)) != []
    clock.advance(5)  # the next round runs and reaps
    assert fired(durable.get_messages("t", "q", [1], 0.0)) == []
    fired(service.stop())


def test_waits_begun_together_end_spread_over_the_last_part_of_their_wait():
    """With ``wait_jitter`` 0.2 (the gateway's default, ``[queues] wait_jitter``) 200
    claims of ``wait=10`` begun at once end between 8 and 10 s, not all in one instant;
    without it every wait is exact."""
    for jitter, first, last in ((0.2, 8.0, 10.0), (0.0, 10.0, 10.0)):
        clock = Clock()
        service = QueueService(
            clock, MemoryStorage(), MemoryStorage(), limits=TEST_LIMITS, wait_jitter=jitter
        )
        fired(service.create_queue("t", "q"))
        claims = [service.claim("t", "q", limit=1, ttl=60, grace=60, wait=10) for _ in range(200)]
        ended_at: list[float] = []
        for d in claims:
            d.addCallback(lambda _, out=ended_at, c=clock: out.append(c.seconds()))
        while len(ended_at) < 200 and clock.seconds() < 11:
            clock.advance(0.05)
        assert len(ended_at) == 200
        assert first - 0.05 <= min(ended_at) and max(ended_at) <= last + 0.05
        if jitter:
            assert len(set(ended_at)) >= 20  # spread over at least 20 of the 40 steps
