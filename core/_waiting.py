"""``QueueWaits``: "wait until the queue has something for me, then claim, pop or observe".

Long polls, STOMP subscriptions and pushes all wait the same way: they park on a per-queue
``WakeupRegistry`` and are woken by publishes and releases (``notify``), or when the
queue's next delayed or leased message is due (storage's ``next_wake``), never by polling
storage. A generation count per queue closes the race between an attempt that found
nothing and the wait that follows it: a notify in between makes the wait return at once.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Hashable
from typing import Any, TypeVar

from twisted.internet.defer import Deferred
from twisted.internet.interfaces import IReactorTime
from twisted.logger import Logger

from qgate.core._claims import to_claim
from qgate.core._ids import new_claim_id
from qgate.core.errors import QueueNotFound
from qgate.core.interfaces import IQueueStorage
from qgate.core.model import Claim, Message
from qgate.core.wakeup import WakeupRegistry

T = TypeVar("T")

log = Logger()


class QueueWaits:
    """Waiters by queue, the loop they wait in (``poll``), and the claim that waits in it
    (``claim``; an observe that waits brings its own attempt). ``store_for`` picks a
    queue's store again after each wait (a queue a waiter waited for may have been created
    meanwhile)."""

    def __init__(self, clock: IReactorTime, store_for: Callable[[str, str], IQueueStorage]) -> None:
        self._clock = clock
        self._store_for = store_for
        self._wakeups = WakeupRegistry(clock)
        self._generations: dict[Hashable, int] = {}
        self._closing = False

    def notify(self, tenant: str, name: str) -> None:
        """Wake waiters of a queue: it may have something claimable or observable."""
        key = (tenant, name)
        self._generations[key] = self._generations.get(key, 0) + 1
        self._wakeups.notify(key)

    def waiting(self, tenant: str, name: str) -> int:
        """How many callers are parked waiting on this queue right now."""
        return self._wakeups.waiting((tenant, name))

    def total(self) -> int:
        """How many callers are parked waiting on any queue."""
        return len(self._wakeups)

    def forget(self, tenant: str, name: str) -> None:
        """The queue was deleted."""
        self._generations.pop((tenant, name), None)

    def close(self) -> None:
        """Shutting down: every waiter answers now with what it has, and none parks again."""
        self._closing = True
        self._wakeups.release_all()

    async def poll(
        self,
        store: IQueueStorage,
        tenant: str,
        name: str,
        wait: float,
        attempt: Callable[[IQueueStorage], Awaitable[T]],
        *,
        timed: bool = True,
        after: int | None = None,
    ) -> T:
        """``attempt(store)`` until it finds something (a true result) or ``wait`` seconds
        have passed, parking in between; the last result when nothing was found. With
        ``timed`` a wait also ends when the queue's next message after the marker
        ``after`` becomes due (delay or lease over)."""
        key = (tenant, name)
        deadline = self._clock.seconds() + wait
        while True:
            generation = self._generations.get(key, 0)
            found = await attempt(store)
            if found:
                return found
            now = self._clock.seconds()
            if now >= deadline:
                return found
            until = deadline
            if timed:
                nxt = await self._next_wake(store, tenant, name, now, after)
                if nxt is not None:
                    until = min(until, nxt)
            if not await self._wait(key, generation, until):
                return found
            store = self._store_for(tenant, name)

    async def _wait(self, key: tuple[str, str], generation: int, until: float) -> bool:
        """Park until the queue is woken or ``until``; False when shutting down (the
        waiter should answer with what it has, now)."""
        if self._closing:
            return False
        if self._generations.get(key, 0) != generation:
            return True
        await self._wakeups.wait(key, until - self._clock.seconds())
        return not self._closing

    async def _next_wake(
        self, store: IQueueStorage, tenant: str, name: str, now: float, after: int | None
    ) -> float | None:
        try:
            return await store.next_wake(tenant, name, now, after)
        except QueueNotFound:
            return None

    async def claim(
        self,
        store: IQueueStorage,
        tenant: str,
        name: str,
        limit: int,
        ttl: float,
        grace: float,
        wait: float,
    ) -> Claim | None:
        """A claim that waits up to ``wait`` seconds for messages, and for a queue that does
        not exist yet (the publish that creates it wakes it); None when nothing came. Each
        attempt is a new claim, shielded from cancellation (``_claim_once``)."""

        async def attempt(store: IQueueStorage) -> Claim | None:
            now = self._clock.seconds()
            claim_id = new_claim_id()
            try:
                found = await self._claim_once(store, tenant, name, claim_id, limit, ttl, grace)
            except QueueNotFound:
                found = []  # wait for the publish that creates the queue
            return to_claim(found, claim_id, name, ttl, grace, now)

        return await self.poll(store, tenant, name, wait, attempt)

    def _claim_once(
        self,
        store: IQueueStorage,
        tenant: str,
        name: str,
        claim_id: str,
        limit: int,
        ttl: float,
        grace: float,
    ) -> Deferred[list[Message]]:
        """Claim, shielded from cancellation: a caller that gives up while the store is
        working gets CancelledError at once, and whatever the store then leases to it goes
        straight back to the queue instead of waiting out the lease."""
        result: Deferred[list[Message]] = Deferred(lambda d: None)

        def done(found: list[Message]) -> None:
            if not result.called:
                result.callback(found)
            elif found:
                now = self._clock.seconds()
                # Nobody received these: the claim does not count toward dead-lettering.
                store.release(tenant, name, claim_id, None, 0, now, True).addCallbacks(
                    lambda _: self.notify(tenant, name),
                    lambda f: log.failure("releasing an abandoned claim failed", f),
                )

        def failed(f: Any) -> None:
            if not result.called:
                result.errback(f)

        store.claim(tenant, name, claim_id, limit, ttl, grace, self._clock.seconds()).addCallbacks(
            done, failed
        )
        return result

    async def pop(
        self, store: IQueueStorage, tenant: str, name: str, limit: int, wait: float
    ) -> list[Message]:
        """A pop (claim and delete in one step) that waits up to ``wait`` seconds for
        messages, and for a queue that does not exist yet; [] when nothing came. Each
        attempt is shielded from cancellation (``_pop_once``): once the caller gives up, no
        further attempt takes anything."""

        async def attempt(store: IQueueStorage) -> list[Message]:
            try:
                return await self._pop_once(store, tenant, name, limit)
            except QueueNotFound:
                return []  # wait for the publish that creates the queue

        return await self.poll(store, tenant, name, wait, attempt)

    def _pop_once(
        self, store: IQueueStorage, tenant: str, name: str, limit: int
    ) -> Deferred[list[Message]]:
        """Pop, shielded from cancellation: a caller that gives up while the store is
        working gets CancelledError at once. What that store call then takes is gone
        (there is no claim to give back): at-most-once, which is what a pop promises; it
        is logged."""
        result: Deferred[list[Message]] = Deferred(lambda d: None)

        def done(found: list[Message]) -> None:
            if not result.called:
                result.callback(found)
            elif found:
                log.warn(
                    "{count} popped message(s) of {tenant}/{name} had no taker left",
                    count=len(found),
                    tenant=tenant,
                    name=name,
                )

        def failed(f: Any) -> None:
            if not result.called:
                result.errback(f)

        store.pop_messages(tenant, name, limit, self._clock.seconds()).addCallbacks(done, failed)
        return result
