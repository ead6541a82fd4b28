"""What the storage contract's tests share: a tenant, a time, and short ways to make a
queue, publish to it and look at it. Every call goes to ``IQueueStorage`` itself with an
explicit ``now``: no service, no clock."""

from __future__ import annotations

from typing import Any

from qgate.core.model import Message, NewMessage, ObserveQuery, Queue, QueueOptions
from tests.support.core import EPOCH

T = "tenant-a"
NOW = EPOCH


async def make_queue(
    store: Any, name: str = "q", *, tenant: str = T, metadata: Any = None, **options: Any
) -> Queue:
    queue: Queue = await store.create_queue(
        tenant, name, QueueOptions(**options), metadata or {}, NOW
    )
    return queue


async def put(
    store: Any, *messages: bytes | NewMessage, queue: str = "q", tenant: str = T, now: float = NOW
) -> list[int]:
    """Publish one message per argument (bytes are bodies with the defaults)."""
    batch = [m if isinstance(m, NewMessage) else NewMessage(m) for m in messages]
    markers: list[int] = await store.publish(tenant, queue, batch, now, None)
    return markers


async def look(
    store: Any,
    queue: str = "q",
    *,
    now: float = NOW,
    after: int | None = None,
    claimed: bool = False,
    delayed: bool = False,
    exclude: str | None = None,
    tenant: str = T,
) -> list[Message]:
    """observe: what an observer sees after ``after`` at ``now`` (up to 100)."""
    query = ObserveQuery(100, after, claimed, delayed, exclude)
    found: list[Message] = await store.observe(tenant, queue, query, now)
    return found


async def bodies(store: Any, queue: str = "q", **kw: Any) -> list[bytes]:
    return [m.body for m in await look(store, queue, **kw)]


async def everything(store: Any, queue: str = "q", now: float = NOW) -> list[bytes]:
    """Bodies of every live message, claimed and delayed ones included."""
    return await bodies(store, queue, now=now, claimed=True, delayed=True)


async def lease(
    store: Any,
    claim_id: str,
    limit: int = 10,
    *,
    ttl: float = 30.0,
    grace: float = 0.0,
    now: float = NOW,
    queue: str = "q",
) -> list[Message]:
    """claim: up to ``limit`` messages for ``claim_id`` until ``now + ttl``."""
    found: list[Message] = await store.claim(T, queue, claim_id, limit, ttl, grace, now)
    return found


def markers_of(messages: list[Message]) -> list[int]:
    return [m.marker for m in messages]
