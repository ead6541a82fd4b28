from __future__ import annotations

from twisted.internet.defer import CancelledError
from twisted.internet.task import Clock

from core.wakeup import WakeupRegistry


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
