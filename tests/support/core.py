"""The queue core as tests drive it: small limits, a clock far from zero, a memory-only
service, and batches of new messages."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, TypeVar

from twisted.internet.task import Clock
from twisted.web.resource import IResource

from qgate.core.auth import TrustedTenant
from qgate.core.limits import Limits
from qgate.core.model import NewMessage
from qgate.core.service import QueueService
from qgate.protocols.context import ProtocolContext
from qgate.storage.memory import MemoryStorage

S = TypeVar("S")

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


def protocol_ctx(
    service: QueueService,
    settings: S,
    *,
    reactor: Any = None,
    auth: Any = None,
    mounts: Mapping[bytes, IResource] | None = None,
) -> ProtocolContext[S]:
    """The context a protocol is built from: on the service's clock and trusting every
    tenant unless told otherwise."""
    return ProtocolContext(
        reactor=reactor if reactor is not None else service.clock,
        service=service,
        auth=auth or TrustedTenant(),
        settings=settings,
        web_mounts=dict(mounts or {}),
    )


def msgs(*bodies: bytes, **kw: Any) -> list[NewMessage]:
    """One new message per body, each with the same keyword arguments."""
    return [NewMessage(b, **kw) for b in bodies]
