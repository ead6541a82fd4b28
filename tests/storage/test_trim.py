"""``malloc_trim`` after a big transient queue goes runs in the reactor's thread pool, one
at a time, never on the thread that deleted the queue (it stalls for tens of ms)."""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import Any

from twisted.internet.task import Clock
from twisted.logger import capturedLogs
from twisted.python.failure import Failure

from qgate.core.model import NewMessage, QueueOptions
from qgate.core.service import QueueService
from qgate.storage._trim import TRIM_AFTER, HeapTrimmer
from qgate.storage.memory import MemoryStorage
from tests.support.core import TEST_LIMITS
from tests.support.deferreds import fired


class Pool:
    """A thread pool that keeps its jobs until the test runs them."""

    def __init__(self) -> None:
        self.jobs: list[tuple[Callable[..., None], Callable[[], object]]] = []

    def callInThreadWithCallback(self, on_result: Any, f: Any, *args: Any, **kw: Any) -> None:  # noqa: N802
        self.jobs.append((on_result, lambda: f(*args, **kw)))

    def run_in_a_thread(self) -> None:
        on_result, job = self.jobs.pop(0)
        out: list[Any] = []
        t = threading.Thread(target=lambda: out.append(job()))
        t.start()
        t.join()
        on_result(True, out[0])


class Reactor(Clock):
    def __init__(self) -> None:
        super().__init__()
        self.pool = Pool()

    def getThreadPool(self) -> Pool:  # noqa: N802
        return self.pool

    def callFromThread(self, f: Any, *args: Any, **kw: Any) -> None:  # noqa: N802
        f(*args, **kw)


def test_a_deleted_big_queue_is_trimmed_in_the_pool_not_on_the_calling_thread() -> None:
    reactor = Reactor()
    threads: list[threading.Thread] = []
    trimmer = HeapTrimmer(reactor, lambda: threads.append(threading.current_thread()))
    transient = MemoryStorage(trim=trimmer)
    service = QueueService(reactor, MemoryStorage(), transient, limits=TEST_LIMITS)
    fired(service.create_queue("t", "big", QueueOptions(durable=False)))
    batch = [NewMessage(b"x" * (256 * 1024))] * 100  # one body object: cheap to hold
    for _ in range(TRIM_AFTER // (100 * 256 * 1024) + 1):
        fired(service.publish("t", "big", batch))
    fired(service.delete_queue("t", "big"))
    assert threads == []  # not run on the spot
    assert len(reactor.pool.jobs) == 1
    reactor.pool.run_in_a_thread()
    assert len(threads) == 1 and threads[0] is not threading.current_thread()


def test_one_trim_runs_at_a_time_and_a_request_meanwhile_runs_once_after() -> None:
    reactor = Reactor()
    calls: list[int] = []
    trimmer = HeapTrimmer(reactor, lambda: calls.append(1))
    trimmer()
    trimmer()
    trimmer()
    assert len(reactor.pool.jobs) == 1  # the running one
    reactor.pool.run_in_a_thread()
    assert len(reactor.pool.jobs) == 1  # the two requests meanwhile: one more trim
    reactor.pool.run_in_a_thread()
    assert reactor.pool.jobs == [] and len(calls) == 2 and trimmer.started == 2


def test_a_failed_trim_is_logged_and_the_next_one_runs() -> None:
    reactor = Reactor()

    def broken() -> None:
        raise OSError("no")

    trimmer = HeapTrimmer(reactor, broken)
    trimmer()
    on_result, _ = reactor.pool.jobs.pop(0)
    with capturedLogs() as events:
        on_result(False, Failure(OSError("no")))
    assert any("malloc_trim failed" in str(e.get("log_format")) for e in events)
    trimmer()
    assert len(reactor.pool.jobs) == 1


def test_without_malloc_trim_nothing_is_asked_of_the_pool() -> None:
    reactor = Reactor()
    HeapTrimmer(reactor, None)()
    assert reactor.pool.jobs == []


def one_turn(clock: Clock) -> None:
    """Run what is due now, as one reactor iteration does: a ``callLater(0)`` made meanwhile
    waits for the next one (``Clock.advance(0)`` would run it too)."""
    due = [c for c in clock.getDelayedCalls() if c.getTime() <= clock.seconds()]
    for call in due:
        clock.calls.remove(call)
        call.func(*call.args, **call.kw)


def _filled(reactor: Reactor, trimmer: HeapTrimmer, messages: int) -> QueueService:
    transient = MemoryStorage(trim=trimmer, discard=trimmer.discard)
    service = QueueService(reactor, MemoryStorage(), transient, limits=TEST_LIMITS)
    fired(service.create_queue("t", "big", QueueOptions(durable=False)))
    body = b"x" * (256 * 1024)  # one body object: cheap to hold, counted in full
    for _ in range(messages // 100):
        fired(service.publish("t", "big", [NewMessage(body)] * 100))
    return service


def test_a_deleted_queue_is_freed_a_slice_per_reactor_turn_then_trimmed() -> None:
    """Freeing 200,000 messages at once stalled the reactor ~50 ms: a deleted queue's
    messages go a slice per turn, and the trim comes after the last slice."""
    reactor = Reactor()
    trimmer = HeapTrimmer(reactor, lambda: None, release_slice=100)
    service = _filled(reactor, trimmer, 300)  # 75 MiB counted: past TRIM_AFTER
    assert 300 * 256 * 1024 > TRIM_AFTER
    fired(service.delete_queue("t", "big"))
    left = [trimmer.discarding]
    assert left[0] >= 300  # the messages and their index entries, none freed yet
    while trimmer.discarding:
        assert reactor.pool.jobs == []  # no trim before everything is freed
        one_turn(reactor)
        left.append(trimmer.discarding)
        assert left[-2] - left[-1] <= 100  # one slice per turn
    assert len(left) > 4 and len(reactor.pool.jobs) == 1 and trimmer.started == 1
    # The queue is gone at once: a new one of the name starts empty.
    fired(service.create_queue("t", "big", QueueOptions(durable=False)))
    assert fired(service.queue_stats("t", "big")).total == 0


def test_a_purged_queue_is_freed_a_slice_per_turn_and_keeps_taking_messages() -> None:
    reactor = Reactor()
    trimmer = HeapTrimmer(reactor, None, release_slice=50)
    service = _filled(reactor, trimmer, 200)
    assert fired(service.purge_queue("t", "big")) == 200
    assert trimmer.discarding >= 200
    fired(service.publish("t", "big", [NewMessage(b"after")]))
    one_turn(reactor)
    assert 0 < trimmer.discarding
    while trimmer.discarding:
        one_turn(reactor)
    assert fired(service.queue_stats("t", "big")).total == 1
