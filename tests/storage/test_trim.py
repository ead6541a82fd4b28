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
