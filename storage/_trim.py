"""Giving freed heap back to the system after large transient queues go.

CPython frees a deleted queue's messages at once, but glibc's allocator keeps the freed
heap pages for reuse: a process that held 1 GB of transient messages stays at 1 GB of
resident memory after the queue is deleted (``bench/transient_memory.py``).
``malloc_trim(0)`` returns those pages; it costs tens of milliseconds on a heap of a
gigabyte, so it runs only once ``TRIM_AFTER`` bytes have been freed since the last time,
and never on the reactor thread: ``HeapTrimmer`` runs it in the reactor's thread pool
(ctypes releases the GIL for the call, so the reactor goes on meanwhile), one at a time.

Freeing itself takes the GIL: dropping a queue of 200,000 messages of 1 KiB at once
stalled the reactor for ~50 ms. ``HeapTrimmer.discard`` therefore takes the containers of
a deleted or purged queue and frees them ``RELEASE_SLICE`` entries per reactor turn; a trim
asked for meanwhile runs once they are all freed.
"""

from __future__ import annotations

import ctypes
import ctypes.util
from collections import deque
from collections.abc import Callable
from typing import Any

from twisted.internet.threads import deferToThreadPool
from twisted.logger import Logger
from twisted.python.failure import Failure

log = Logger()

#: Bytes of messages freed (as ``Usage`` counts them) before the heap is trimmed.
TRIM_AFTER = 64 * 1024 * 1024
#: Entries (messages, index entries) of discarded containers freed per reactor turn.
RELEASE_SLICE = 5_000

#: What ``discard`` frees: a queue's dicts, lists and deques.
Container = dict[Any, Any] | list[Any] | deque[Any]


def _malloc_trim() -> Callable[[], None] | None:
    name = ctypes.util.find_library("c")
    if name is None:
        return None
    try:
        trim = ctypes.CDLL(name).malloc_trim
    except (OSError, AttributeError):
        return None  # not glibc (musl, macOS): nothing to do
    trim.argtypes = [ctypes.c_size_t]
    trim.restype = ctypes.c_int
    return lambda: trim(0)


#: None where the C library has no ``malloc_trim``.
trim_heap = _malloc_trim()


class HeapTrimmer:
    """``trim()`` asks for ``malloc_trim`` in ``reactor``'s thread pool and returns at
    once. At most one runs at a time; asked again meanwhile, it runs once more after."""

    def __init__(
        self,
        reactor: Any,
        trim: Callable[[], object] | None = trim_heap,
        release_slice: int = RELEASE_SLICE,
    ) -> None:
        self._reactor = reactor
        self._trim = trim
        self._running = False
        self._again = False
        self._slice = release_slice
        self._discarded: list[Container] = []
        self._releasing: Any = None  # the reactor's next call of _release
        self._trim_after = False
        #: Trims started (for tests and stats).
        self.started = 0

    def discard(self, *containers: Container) -> None:
        """Free ``containers`` (nobody else holds them any more) a slice per reactor turn."""
        self._discarded.extend(c for c in containers if c)
        if self._discarded and self._releasing is None:
            self._releasing = self._reactor.callLater(0, self._release)

    @property
    def discarding(self) -> int:
        """Entries still to free."""
        return sum(len(c) for c in self._discarded)

    def _release(self) -> None:
        self._releasing = None
        budget = self._slice
        while self._discarded and budget > 0:
            container = self._discarded[-1]
            n = min(budget, len(container))
            if isinstance(container, dict):
                for _ in range(n):
                    container.popitem()
            elif isinstance(container, list):
                del container[len(container) - n :]
            else:
                for _ in range(n):
                    container.pop()
            budget -= n
            if not container:
                self._discarded.pop()
        if self._discarded:
            self._releasing = self._reactor.callLater(0, self._release)
        elif self._trim_after:
            self._trim_after = False
            self()

    def __call__(self) -> None:
        if self._trim is None:
            return
        if self._discarded:
            self._trim_after = True  # once what is being freed is freed
            return
        if self._running:
            self._again = True
            return
        self._running = True
        self.started += 1
        d = deferToThreadPool(self._reactor, self._reactor.getThreadPool(), self._trim)
        d.addBoth(self._done)

    def _done(self, result: object) -> None:
        if isinstance(result, Failure):
            log.failure("malloc_trim failed", result)
        self._running = False
        if self._again:
            self._again = False
            self()
