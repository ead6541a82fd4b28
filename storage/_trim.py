"""Giving freed heap back to the system after large transient queues go.

CPython frees a deleted queue's messages at once, but glibc's allocator keeps the freed
heap pages for reuse: a process that held 1 GB of transient messages stays at 1 GB of
resident memory after the queue is deleted (``bench/transient_memory.py``).
``malloc_trim(0)`` returns those pages; it costs tens of milliseconds on a heap of a
gigabyte, so it runs only once ``TRIM_AFTER`` bytes have been freed since the last time.
"""

from __future__ import annotations

import ctypes
import ctypes.util
from collections.abc import Callable

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
