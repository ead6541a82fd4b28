"""Giving freed heap back to the system after large transient queues go.

CPython frees a deleted queue's messages at once, but glibc's allocator keeps the freed
heap pages for reuse: a process that held 1 GB of transient messages stays at 1 GB of
resident memory after the queue is deleted (``bench/transient_memory.py``).
``malloc_trim(0)`` returns those pages; it costs tens of milliseconds on a heap of a
gigabyte, so it runs only once ``TRIM_AFTER`` bytes have been freed since the last time,
and never on the reactor thread: ``HeapTrimmer`` runs it in the reactor's thread pool
(ctypes releases the GIL for the call, so the reactor goes on meanwhile), one at a time.
"""

from __future__ import annotations

import ctypes
import ctypes.util
from collections.abc import Callable
from typing import Any

from twisted.internet.threads import deferToThreadPool
from twisted.logger import Logger
from twisted.python.failure import Failure

log = Logger()

#: Bytes of messages freed (as ``Usage`` counts them) before the heap is trimmed.
TRIM_AFTER = 64 * 1024 * 1024


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

    def __init__(self, reactor: Any, trim: Callable[[], object] | None = trim_heap) -> None:
        self._reactor = reactor
        self._trim = trim
        self._running = False
        self._again = False
        #: Trims started (for tests and stats).
        self.started = 0

    def __call__(self) -> None:
        if self._trim is None:
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
