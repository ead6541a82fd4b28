"""``QueueWaits``: "wait until the queue has something for me, then claim, pop or observe".

Long polls, STOMP subscriptions and pushes all wait the same way: they park on a per-queue
``WakeupRegistry`` and are woken by publishes and releases (``notify``), or when the
queue's next delayed or leased message is due (storage's ``next_wake``), never by polling
storage. A generation count per queue closes the race between an attempt that found
nothing and the wait that follows it: a notify in between makes the wait return at once.

Hand-off (``core.handoff``): a parked claim or pop is offered to the next publish to its
queue (``offer``); the store leases (or, for a pop, never stores) the publish's first
messages for it in the publish's own transaction, and ``published`` hands them over once
that has committed. What the queue is known to hold is remembered per generation
(``_empty``: nothing claimable until a time), so a waiter that comes back after a hand-off,
and the others a publish woke, park again without asking storage.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Hashable
from typing import Any, TypeVar

from twisted.internet.defer import CancelledError, Deferred
from twisted.internet.interfaces import IReactorTime
from twisted.logger import Logger

from qgate.core._claims import to_claim
from qgate.core._ids import new_claim_id
from qgate.core.errors import QueueNotFound
from qgate.core.handoff import Handoff, earliest
from qgate.core.interfaces import IQueueStorage
from qgate.core.model import Claim, Message
from qgate.core.wakeup import WakeupRegistry

T = TypeVar("T")

log = Logger()


def _due(until: float | None, now: float) -> bool:
    return until is not None and now >= until


class _Park:
    """One parked claim or pop: its wakeup, its offer, and what a publish handed it."""

    __slots__ = ("handoff", "wakeup", "reserved", "settled", "result", "cancelled")

    def __init__(self, handoff: Handoff, wakeup: Deferred[bool]) -> None:
        self.handoff = handoff
        self.wakeup = wakeup
        self.reserved = False  # a publish holds the offer; its outcome is not known yet
        self.settled: Deferred[None] | None = None  # the waiter waits for that outcome
        self.result: list[Message] | None = None  # the outcome: what was handed over
        self.cancelled = False


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
        #: Per queue: (generation, until): at that generation the queue has nothing
        #: claimable before ``until`` (None: nothing due at all).
        self._empty: dict[Hashable, tuple[int, float | None]] = {}
        #: Parked claims and pops that a publish may be offered to, first parked first.
        self._parked: dict[Hashable, dict[Handoff, _Park]] = {}
        #: Offers a publish holds, until ``published`` or ``unsettled``.
        self._reserved: dict[Handoff, tuple[tuple[str, str], _Park]] = {}
        self._closing = False

    def notify(self, tenant: str, name: str) -> None:
        """Wake waiters of a queue: it may have something claimable or observable."""
        key = (tenant, name)
        self._generations[key] = self._generations.get(key, 0) + 1
        self._wakeups.notify(key)

    def waiting(self, tenant: str, name: str) -> int:
        """How many callers are parked waiting on this queue right now."""
        return self._wakeups.waiting((tenant, name))

    def forget(self, tenant: str, name: str) -> None:
        """The queue was deleted."""
        self._generations.pop((tenant, name), None)
        self._empty.pop((tenant, name), None)

    def close(self) -> None:
        """Shutting down: every waiter answers now with what it has, and none parks again."""
        self._closing = True
        self._wakeups.release_all()

    # -- hand-off --------------------------------------------------------------------------

    def offer(self, tenant: str, name: str, now: float) -> Handoff | None:
        """The first parked claim or pop of the queue, reserved for a publish at ``now``
        (which must end in ``published`` or ``unsettled``); None when none is parked."""
        parked = self._parked.get((tenant, name))
        if not parked:
            return None
        for handoff, park in parked.items():
            if not park.wakeup.called:
                del parked[handoff]
                park.reserved = True
                handoff.now = now
                self._reserved[handoff] = ((tenant, name), park)
                return handoff
        return None

    def published(self, tenant: str, name: str, handoff: Handoff | None = None) -> None:
        """A publish to the queue committed (with the offer ``handoff``, if any): wake its
        waiters, and hand the offer's waiter what the store gave it."""
        key = (tenant, name)
        generation = self._generations.get(key, 0)
        known = self._empty.get(key)
        generation += 1
        self._generations[key] = generation
        if (
            handoff is not None
            and handoff.drained
            and known is not None
            and known[0] == generation - 1
        ):
            # Nothing was claimable before, and nothing this publish stored is now.
            self._empty[key] = (generation, earliest(known[1], handoff.wake_at))
        self._wakeups.notify(key)
        if handoff is not None:
            self._settle(handoff, handoff.messages)

    def unsettled(self, handoff: Handoff | None) -> None:
        """The publish holding ``handoff`` failed or stored nothing: its waiter retries."""
        if handoff is not None:
            self._settle(handoff, [])

    def _settle(self, handoff: Handoff, messages: list[Message]) -> None:
        found = self._reserved.pop(handoff, None)
        if found is None:
            return
        (tenant, name), park = found
        if park.cancelled:
            self._give_back(tenant, name, handoff, messages)
            return
        park.result = messages
        if park.settled is not None:
            park.settled.callback(None)
        elif not park.wakeup.called:
            self._wakeups.wake((tenant, name), park.wakeup)

    def _give_back(self, tenant: str, name: str, handoff: Handoff, messages: list[Message]) -> None:
        """A waiter gave up after a store took its offer: a claim goes back to the queue
        (not counted toward dead-lettering); popped messages are gone."""
        if not messages:
            return
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

    # -- the wait loop ---------------------------------------------------------------------

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
        offer: Callable[[], Handoff] | None = None,
        handed: Callable[[Handoff, list[Message]], T] | None = None,
        nothing: Any = None,
    ) -> T:
        """``attempt(store)`` until it finds something (a true result) or ``wait`` seconds
        have passed, parking in between; the last result when nothing was found. With
        ``timed`` a wait also ends when the queue's next message after the marker
        ``after`` becomes due (delay or lease over).

        Claims and pops pass ``offer`` (a new offer for each park), ``handed`` (their
        result of what a publish handed over) and ``nothing`` (their empty result): they
        skip the attempt while the queue is known to hold nothing claimable."""
        key = (tenant, name)
        deadline = self._clock.seconds() + wait
        while True:
            generation = self._generations.get(key, 0)
            now = self._clock.seconds()
            known = self._empty.get(key) if offer is not None else None
            if (
                known is not None
                and known[0] == generation
                and (known[1] is None or now < known[1])
            ):
                found, nxt = nothing, known[1]
            else:
                found = await attempt(store)
                if found:
                    return found
                nxt = None
                if timed:
                    # From the attempt's time: a lease that ended since counts as due.
                    nxt = await self._next_wake(store, tenant, name, now, after)
                if offer is not None and self._generations.get(key, 0) == generation:
                    self._empty[key] = (generation, nxt)
                now = self._clock.seconds()
            if now >= deadline:
                return found
            until = deadline if nxt is None else min(deadline, nxt)
            if offer is None or handed is None:
                if not await self._wait(key, generation, until):
                    return found
            else:
                park = await self._park(key, generation, until, offer())
                if park is None:
                    return found
                if park.result:
                    return handed(park.handoff, park.result)
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

    async def _park(
        self, key: tuple[str, str], generation: int, until: float, handoff: Handoff
    ) -> _Park | None:
        """``_wait``, offered to publishes meanwhile: the park (with what a publish handed
        over, if any), or None when shutting down with nothing handed over."""
        if self._closing:
            return None
        park = _Park(handoff, Deferred())
        if self._generations.get(key, 0) != generation:
            return park
        park.wakeup = self._wakeups.wait(key, until - self._clock.seconds())
        parked = self._parked.setdefault(key, {})
        parked[handoff] = park
        try:
            await park.wakeup
            if park.reserved and park.result is None:
                park.settled = Deferred()
                await park.settled
        except CancelledError:
            park.cancelled = True
            if not handoff.cancel() and park.result:
                # Handed over already, and nobody takes it now.
                tenant, name = key
                self._give_back(tenant, name, handoff, park.result)
            raise
        finally:
            if parked.get(handoff) is park:
                del parked[handoff]
            if not parked and self._parked.get(key) is parked:
                del self._parked[key]
        if self._closing and not park.result:
            return None
        return park

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

        def offer() -> Handoff:
            return Handoff(limit, ttl, grace, new_claim_id())

        def handed(handoff: Handoff, found: list[Message]) -> Claim | None:
            assert handoff.claim_id is not None
            return to_claim(found, handoff.claim_id, name, ttl, grace, handoff.now)

        return await self.poll(
            store, tenant, name, wait, attempt, offer=offer, handed=handed, nothing=None
        )

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

        def handed(handoff: Handoff, found: list[Message]) -> list[Message]:
            return found

        return await self.poll(
            store,
            tenant,
            name,
            wait,
            attempt,
            offer=lambda: Handoff(limit),
            handed=handed,
            nothing=[],
        )

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
