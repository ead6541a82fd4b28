"""``QueueWaits``: "wait until the queue has something for me, then claim, pop or observe".

Long polls, STOMP subscriptions and pushes all wait the same way: they park on a per-queue
``WakeupRegistry`` and are woken by publishes and releases (``notify``), or when the
queue's next delayed or leased message is due (storage's ``next_wake``), never by polling
storage. A generation count per queue closes the race between an attempt that found
nothing and the wait that follows it: a notify in between makes the wait return at once.

Claims and pops wait in ``take``, holding an offer (``core._offers``, ``core.handoff``)
from the start: a publish to their queue offers them its messages, and the store leases
(or, for a pop, never stores) them in the publish's transaction; the waiter has them once
that committed. Their race guard is the queue's ``_dirty`` count, which a publish that
left nothing claimable (every message handed over, or delayed) does not move, and what
an attempt found out is kept (``_empty``: nothing claimable until a time), so a waiter
that comes back after a hand-off parks again without asking storage.
"""

from __future__ import annotations

import random as _random
from collections.abc import Awaitable, Callable, Hashable
from typing import Any, TypeVar

from twisted.internet.defer import CancelledError, Deferred
from twisted.internet.interfaces import IReactorTime
from twisted.logger import Logger

from qgate.core._claims import to_claim
from qgate.core._ids import new_claim_id
from qgate.core._offers import Offers
from qgate.core.errors import QueueNotFound
from qgate.core.handoff import Handoff
from qgate.core.interfaces import IHandoffStorage, IQueueStorage
from qgate.core.model import Claim, Message
from qgate.core.wakeup import WakeupRegistry

T = TypeVar("T")

log = Logger()


def _names(key: Hashable) -> tuple[str, str]:
    assert isinstance(key, tuple)
    return str(key[0]), str(key[1])


def _due(until: float | None, now: float) -> bool:
    return until is not None and now >= until


class QueueWaits:
    """Waiters by queue, the loops they wait in (``poll``; ``take`` for claims and pops),
    and the claim and pop that wait in them (an observe that waits brings its own
    attempt). ``store_for`` picks a queue's store again after each wait (a queue a waiter
    waited for may have been created meanwhile).

    ``jitter``: a wait that finds nothing ends up to this fraction of its ``wait`` early, a
    random amount per wait, so waits begun together (5,000 long polls of one tenant, or
    every client after a restart) do not all end, and come back, in the same instant."""

    def __init__(
        self,
        clock: IReactorTime,
        store_for: Callable[[str, str], IQueueStorage],
        jitter: float = 0.0,
        random: Callable[[], float] = _random.random,
    ) -> None:
        self._clock = clock
        self._store_for = store_for
        self._jitter = jitter
        self._random = random
        self._wakeups = WakeupRegistry(clock)
        self._generations: dict[Hashable, int] = {}
        #: Per queue: bumped by whatever may have made a message claimable.
        self._dirty: dict[Hashable, int] = {}
        #: Per queue: (dirty count, until): then, nothing claimable before ``until``.
        self._empty: dict[Hashable, tuple[int, float | None]] = {}
        #: Queues whose last offered publish met claimable messages (see ``offer``).
        self._backlog: set[Hashable] = set()
        self._offers = Offers(self._wakeups.wake, self._give_back)
        self._takes_handoffs: dict[int, bool] = {}
        self._closing = False

    def notify(self, tenant: str, name: str) -> None:
        """Wake waiters of a queue: it may have something claimable or observable."""
        key = (tenant, name)
        self._generations[key] = self._generations.get(key, 0) + 1
        self._dirty[key] = self._dirty.get(key, 0) + 1
        self._wakeups.notify(key)

    def waiting(self, tenant: str, name: str) -> int:
        """How many callers are parked waiting on this queue right now."""
        return self._wakeups.waiting((tenant, name))

    def total(self) -> int:
        """How many callers are parked waiting on any queue."""
        return len(self._wakeups)

    def forget(self, tenant: str, name: str) -> None:
        """The queue was deleted."""
        key = (tenant, name)
        self._generations.pop(key, None)
        self._dirty.pop(key, None)
        self._empty.pop(key, None)
        self._backlog.discard(key)

    def close(self) -> None:
        """Shutting down: every waiter answers now with what it has, and none parks again."""
        self._closing = True
        self._wakeups.release_all()

    # -- hand-off --------------------------------------------------------------------------

    def handoffs(self, store: IQueueStorage) -> bool:
        """Whether ``store`` takes hand-offs (``IHandoffStorage``; remembered by identity)."""
        found = self._takes_handoffs.get(id(store))
        if found is None:
            found = self._takes_handoffs[id(store)] = IHandoffStorage.providedBy(store)
        return found

    def offer(self, tenant: str, name: str, now: float) -> Handoff | None:
        """The offer of the first claim or pop waiting on the queue, reserved for a publish
        at ``now`` (which must end in ``published`` or ``unsettled``); None if none."""
        key = (tenant, name)
        dirty = self._dirty.get(key, 0)
        known = self._empty.get(key)
        # After an offer met a backlog, and until the queue is known empty again, only a
        # parked waiter is worth one: a waiter trying a claim of its own most likely finds
        # that backlog, and the publish would pay for the hand-off checks in vain.
        parked_only = key in self._backlog and (known is None or known[0] != dirty)
        handoff = self._offers.reserve(key, now, parked_only)
        if handoff is not None:
            handoff.dirty = dirty
        return handoff

    def published(self, tenant: str, name: str, handoff: Handoff | None = None) -> None:
        """A publish to the queue committed (with the offer ``handoff``, if any): wake its
        waiters, and hand the offer's waiter what the store gave it."""
        key = (tenant, name)
        self._generations[key] = self._generations.get(key, 0) + 1
        dirty = self._dirty.get(key, 0)
        if handoff is not None and handoff.drained:
            # Nothing is claimable after this publish (its messages were handed over, or
            # are delayed): claimers need not look again, only know when to. Unless
            # something else may have made a message claimable since it was offered.
            if handoff.dirty == dirty:
                self._empty[key] = (dirty, handoff.wake_at)
        else:
            self._dirty[key] = dirty + 1
        if handoff is not None:
            if handoff.messages or handoff.drained:
                self._backlog.discard(key)
            else:
                self._backlog.add(key)
        self._wakeups.notify(key)
        if handoff is not None:
            self._offers.settle(handoff, handoff.messages)

    def unsettled(self, handoff: Handoff | None) -> None:
        """The publish holding ``handoff`` failed or stored nothing: its waiter goes on."""
        if handoff is not None:
            self._offers.settle(handoff, [])

    def _give_back(self, key: Hashable, handoff: Handoff, messages: list[Message]) -> None:
        """A waiter gave up after a store took its offer: a claim goes back to the queue
        (not counted toward dead-lettering); popped messages are gone."""
        if not messages:
            return
        tenant, name = _names(key)
        if handoff.claim_id is None:
            log.warn(
                "{count} message(s) handed to a pop of {tenant}/{name} had no taker left",
                count=len(messages),
                tenant=tenant,
                name=name,
            )
            return
        store = self._store_for(tenant, name)
        now = self._clock.seconds()
        store.release(tenant, name, handoff.claim_id, None, 0, now, True).addCallbacks(
            lambda _: self.notify(tenant, name),
            lambda f: log.failure("releasing an abandoned hand-off failed", f),
        )

    # -- the wait loops --------------------------------------------------------------------

    def _deadline(self, wait: float) -> float:
        if wait and self._jitter:
            wait *= 1.0 - self._jitter * self._random()
        return float(self._clock.seconds()) + wait

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
        deadline = self._deadline(wait)
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

    async def take(
        self,
        store: IQueueStorage,
        tenant: str,
        name: str,
        wait: float,
        attempt: Callable[[IQueueStorage, Handoff | None], Awaitable[T]],
        new_offer: Callable[[], Handoff],
        handed: Callable[[Handoff, list[Message]], T],
        nothing: T,
    ) -> T:
        """``poll`` for claims and pops: ``attempt(store, offer)`` until it finds something,
        a publish hands something over (``handed``), or ``wait`` seconds have passed
        (``nothing``). The attempt is skipped while the queue is known to hold nothing
        claimable."""
        if not self.handoffs(store):

            def plain(store: IQueueStorage) -> Awaitable[T]:
                return attempt(store, None)

            return await self.poll(store, tenant, name, wait, plain)
        key = (tenant, name)
        deadline = self._deadline(wait)
        pending = self._offers.open(key, new_offer())
        try:
            while True:
                if pending.reserved:  # a new offer for a new claim, once this one settled
                    if await self._offers.outcome(pending):
                        return handed(pending.handoff, pending.result or [])
                    self._offers.close(pending)
                    pending = self._offers.open(key, new_offer())
                dirty = self._dirty.get(key, 0)
                now = self._clock.seconds()
                known = self._empty.get(key)
                if known is not None and known[0] == dirty and not _due(known[1], now):
                    nxt = known[1]
                else:
                    found = await attempt(store, pending.handoff)
                    if found:
                        return found
                    if pending.reserved:
                        if await self._offers.outcome(pending):
                            return handed(pending.handoff, pending.result or [])
                        continue
                    # From the attempt's time: a lease that ended since counts as due.
                    nxt = await self._next_wake(store, tenant, name, now, None)
                    if self._dirty.get(key, 0) == dirty:
                        self._empty[key] = (dirty, nxt)
                        self._backlog.discard(key)
                now = self._clock.seconds()
                if now >= deadline or self._closing:
                    # A publish holding the offer may be handing it messages: wait for
                    # that (one commit), lest they go to nobody.
                    if pending.reserved and await self._offers.outcome(pending):
                        return handed(pending.handoff, pending.result or [])
                    return nothing
                if pending.reserved:
                    if await self._offers.outcome(pending):
                        return handed(pending.handoff, pending.result or [])
                    continue
                if self._dirty.get(key, 0) != dirty:
                    continue
                until = deadline if nxt is None else min(deadline, nxt)
                pending.wakeup = self._wakeups.wait(key, until - now)
                try:
                    await pending.wakeup
                finally:
                    pending.wakeup = None
                if pending.reserved and await self._offers.outcome(pending):
                    return handed(pending.handoff, pending.result or [])
                if self._closing:
                    return nothing
                store = self._store_for(tenant, name)
        except CancelledError:
            self._offers.cancel(pending)
            raise
        finally:
            if pending.reserved and pending.result is None:
                # Leaving (an error) while a publish holds the offer: what it hands over
                # goes back.
                self._offers.cancel(pending)
            else:
                self._offers.close(pending)

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

        async def attempt(store: IQueueStorage, offer: Handoff | None) -> Claim | None:
            now = self._clock.seconds()
            claim_id = new_claim_id()
            try:
                found = await self._claim_once(
                    store, tenant, name, claim_id, limit, ttl, grace, offer
                )
            except QueueNotFound:
                found = []  # wait for the publish that creates the queue
            return to_claim(found, claim_id, name, ttl, grace, now)

        def new_offer() -> Handoff:
            return Handoff(limit, ttl, grace, new_claim_id())

        def handed(handoff: Handoff, found: list[Message]) -> Claim | None:
            assert handoff.claim_id is not None
            return to_claim(found, handoff.claim_id, name, ttl, grace, handoff.now)

        return await self.take(store, tenant, name, wait, attempt, new_offer, handed, None)

    def _claim_once(
        self,
        store: IQueueStorage,
        tenant: str,
        name: str,
        claim_id: str,
        limit: int,
        ttl: float,
        grace: float,
        offer: Handoff | None = None,
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

        now = self._clock.seconds()
        if offer is None:
            d = store.claim(tenant, name, claim_id, limit, ttl, grace, now)
        else:
            d = store.claim(tenant, name, claim_id, limit, ttl, grace, now, handoff=offer)
        d.addCallbacks(done, failed)
        return result

    async def pop(
        self,
        store: IQueueStorage,
        tenant: str,
        name: str,
        limit: int,
        wait: float,
        prompt: bool = False,
    ) -> list[Message]:
        """A pop (claim and delete in one step) that waits up to ``wait`` seconds for
        messages, and for a queue that does not exist yet; [] when nothing came. Each
        attempt is shielded from cancellation (``_pop_once``): once the caller gives up, no
        further attempt takes anything."""

        async def attempt(store: IQueueStorage, offer: Handoff | None) -> list[Message]:
            try:
                return await self._pop_once(store, tenant, name, limit, offer, prompt)
            except QueueNotFound:
                return []  # wait for the publish that creates the queue

        def handed(handoff: Handoff, found: list[Message]) -> list[Message]:
            return found

        return await self.take(
            store, tenant, name, wait, attempt, lambda: Handoff(limit), handed, []
        )

    def _pop_once(
        self,
        store: IQueueStorage,
        tenant: str,
        name: str,
        limit: int,
        offer: Handoff | None = None,
        prompt: bool = False,
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

        now = self._clock.seconds()
        options: dict[str, Any] = {}
        if offer is not None:
            options["handoff"] = offer
        if prompt:
            options["prompt"] = True
        d = store.pop_messages(tenant, name, limit, now, **options)
        d.addCallbacks(done, failed)
        return result
