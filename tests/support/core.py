"""The queue core as tests drive it: small limits, a clock far from zero, a memory-only
service, and batches of new messages."""

from __future__ import annotations

from typing import Any

from twisted.internet.task import Clock

from qgate.core.limits import Limits
from qgate.core.model import NewMessage
from qgate.core.service import QueueService
from qgate.storage.memory import MemoryStorage

#: Small bounds so tests can use short TTLs and leases on the clock.
TEST_LIMITS = Limits(min_ttl=1, min_lease=1, max_wait=120)

#: Where test clocks start: far from zero, like a real epoch.
EPOCH = 1_000_000.0


def make_clock(start: float = EPOCH) -> Clock:
    clock = Clock()
    clock.advance(start)
    return clock


def memory_service(clock: Any) -> QueueService:
    """A queue service whose durable and transient stores are both in memory."""
    return QueueService(clock, MemoryStorage(), MemoryStorage(), limits=TEST_LIMITS)


def msgs(*bodies: bytes, **kw: Any) -> list[NewMessage]:
    """One new message per body, each with the same keyword arguments."""
    return [NewMessage(b, **kw) for b in bodies]
