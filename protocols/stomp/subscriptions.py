"""One STOMP subscription: a loop that waits on the core for messages, writes MESSAGE
frames and stops while its prefetch window is full or the peer does not read.

- ``QueueSubscription`` (``/queue/NAME``, ``/temp-queue/NAME``): competing consumers over
  claims (``service.claim``, leased and renewed while the connection lives); ACK deletes
  a message, NACK makes it available again. ``ack:auto`` takes its messages with one pop
  (``service.pop_messages``: claimed and deleted in one step) instead, unless the queue
  dead-letters (only claims count toward ``max_claim_count``).
- ``TopicSubscription`` (``/topic/NAME``): a reader of the queue's log from a marker on
  (``service.observe``); a durable one keeps its position in a server-side cursor
  advanced by acks, and a NACKed message is delivered again.

A subscription keeps what it delivered and was not settled yet (``ack:client`` and
``ack:client-individual``); what is left when it stops goes back to the core. It knows its
session only through an ``Owner``: delivery tags, the MESSAGE frame, the peer's
back-pressure and where failures go.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Iterable, Sequence
from typing import Any, Protocol, TypeVar

from twisted.internet.defer import CancelledError, Deferred, gatherResults, succeed
from twisted.python.failure import Failure

from qgate.core.errors import ClaimNotFound, QueueNotFound
from qgate.core.model import Claim, Message, QueueOptions
from qgate.protocols.stomp.bodies import DEFAULT, SubscriptionBodies
from qgate.protocols.stomp.destinations import TenantScope

T = TypeVar("T")

#: Longest single wait on the core; a subscription waits again after it (no busy loop).
WAIT = 30.0


class Owner(TenantScope, Protocol):
    """What a subscription needs from the session it belongs to."""

    @property
    def lease(self) -> float:
        """Seconds a claim is leased for (renewed while the connection lives)."""

    @property
    def output_paused(self) -> bool:
        """True while the peer does not read: deliver nothing more until ``kick()``."""

    def new_tag(self) -> str:
        """A new delivery tag (the MESSAGE's ``message-id``, and ``ack`` in STOMP 1.2)."""

    def track_delivery(self, tag: str, sub: Subscription) -> None:
        """An ACK/NACK of ``tag`` is for ``sub``."""

    def forget(self, tag: str) -> None:
        """``tag`` is settled or given back: an ACK/NACK of it does nothing."""

    def send_message(
        self, sub: Subscription, tag: str, message: Message, redelivered: bool
    ) -> None:
        """Write the MESSAGE frame."""

    def flush_later(self, sub: Subscription) -> None:
        """Call ``sub.flush()`` when the chunk of input is done (at once if none is)."""

    def track(self, d: Deferred[Any]) -> None:
        """Follow a core call nobody waits for (a failure ends the session)."""

    def subscription_failed(self, sub: Subscription, failure: Failure) -> None:
        """The delivery loop failed."""


class _Delivery:
    """A MESSAGE sent and not yet settled (client and client-individual modes)."""

    __slots__ = ("tag", "message", "claim_id")

    def __init__(self, tag: str, message: Message, claim_id: str | None) -> None:
        self.tag = tag
        self.message = message
        self.claim_id = claim_id


class Subscription:
    """One SUBSCRIBE: a loop that waits on the core, writes MESSAGE frames and stops when
    the prefetch window is full or the peer does not read."""

    kind = ""

    def __init__(
        self,
        owner: Owner,
        sub_id: str,
        destination: str,
        queue: str,
        ack: str,
        prefetch: int,
        options: QueueOptions | None,
        accept: str = DEFAULT,
    ) -> None:
        self.owner = owner
        # A subscription is made once the session has connected: its tenant is fixed.
        self.service: Any = owner.service
        self.tenant = owner.tenant
        self.id = sub_id
        self.destination = destination
        self.queue = queue
        self.ack = ack
        self.prefetch = prefetch
        self.options = options
        #: Avro bodies of a schema-checked queue in the format SUBSCRIBE's accept chose.
        self.bodies = SubscriptionBodies(self.service, accept)
        self.unacked: dict[str, _Delivery] = {}
        self.active = False
        self.stopped = False
        self._waiting: Deferred[Any] | None = None
        self._kick: Deferred[None] | None = None
        self._ack_waiters: list[Deferred[None]] = []

    # -- life cycle ------------------------------------------------------------------------

    def begin(self, _: object = None) -> None:
        """Start the delivery loop (after the SUBSCRIBE's RECEIPT has gone out)."""
        if self.stopped or self.active:
            return
        self.active = True
        task = Deferred.fromCoroutine(self._run())
        task.addErrback(self._crashed)

    async def setup(self) -> None:
        """Where the subscription starts reading (topics), once its queue exists."""

    def _crashed(self, failure: Failure) -> None:
        if failure.check(CancelledError) or not self.active:
            return
        self.active = False
        self.owner.subscription_failed(self, failure)

    async def wait_on(self, d: Deferred[T]) -> T:
        """Await ``d``, cancelled by ``stop()`` (core waits and the room-wait only)."""
        self._waiting = d
        try:
            return await d
        finally:
            self._waiting = None

    def halt(self) -> None:
        """Deliver nothing more; what was delivered stays unacked until ``stop()``."""
        self.active = False
        waiting, self._waiting = self._waiting, None
        if waiting is not None:
            waiting.cancel()

    def stop(self) -> Deferred[Any]:
        """Stop delivering; give back what was delivered and not acknowledged (what was
        acknowledged and not yet written goes to the core first)."""
        self.flush()
        self.active = False
        self.stopped = True
        self._kick = None
        waiting, self._waiting = self._waiting, None
        if waiting is not None:
            waiting.cancel()
        pending = list(self.unacked.values())
        self.unacked.clear()
        for d in pending:
            self.owner.forget(d.tag)
        return self.give_back(pending)

    def give_back(self, deliveries: Sequence[_Delivery]) -> Deferred[Any]:
        return succeed(None)

    def kick(self) -> None:
        """Something changed (an ack, the peer reads again): look again for room."""
        kick, self._kick = self._kick, None
        if kick is not None and not kick.called:
            kick.callback(None)

    # -- the delivery loop -----------------------------------------------------------------

    def room(self) -> int:
        if self.ack == "auto":
            return self.prefetch
        return self.prefetch - len(self.unacked)

    async def _run(self) -> None:
        while self.active:
            if self.room() <= 0 or self.owner.output_paused:
                self._kick = Deferred()
                await self.wait_on(self._kick)
                continue
            await self.fetch_and_deliver(self.room())

    async def fetch_and_deliver(self, room: int) -> None:
        raise NotImplementedError

    def deliver(self, message: Message, claim_id: str | None, redelivered: bool = False) -> str:
        tag = self.owner.new_tag()
        if self.ack != "auto":
            # Tracked before the write: a write can end the session (slow consumer), and
            # stop() must then give this message back too.
            self.unacked[tag] = _Delivery(tag, message, claim_id)
            self.owner.track_delivery(tag, self)
        self.owner.send_message(self, tag, message, redelivered)
        return tag

    # -- ACK / NACK ------------------------------------------------------------------------

    def take(self, tag: str) -> list[_Delivery]:
        """The deliveries an ACK/NACK of ``tag`` settles: in ``client`` mode every one up to
        it (STOMP 1.2: the ACK is cumulative), in ``client-individual`` mode just it."""
        if tag not in self.unacked:
            return []
        if self.ack == "client-individual":
            taken = [self.unacked.pop(tag)]
        else:
            taken = []
            while self.unacked:  # oldest first, up to and including ``tag``
                t = next(iter(self.unacked))
                taken.append(self.unacked.pop(t))
                if t == tag:
                    break
        for d in taken:
            self.owner.forget(d.tag)
        return taken

    def settle(self, tag: str, positive: bool) -> Deferred[None]:
        """ACK or NACK ``tag``; fires once that has taken effect in the core."""
        taken = self.take(tag)
        if not taken:
            self.kick()
            return succeed(None)
        if not positive:
            d = Deferred.fromCoroutine(self.nacked(taken))
            return d.addBoth(self._kicked)
        # The window has room again now; the acks themselves go to the core in one call
        # per input chunk (see ``flush``), not one per ACK frame.
        self.queue_acks(taken)
        waiter: Deferred[None] = Deferred()
        self._ack_waiters.append(waiter)
        self.owner.flush_later(self)
        self.kick()
        return waiter

    def _kicked(self, result: T) -> T:
        self.kick()
        return result

    def flush(self) -> None:
        """Hand the queued acks to the core; their waiters fire once it is done."""
        if not self._ack_waiters:
            return
        waiters, self._ack_waiters = self._ack_waiters, []
        self.write_acks().addBoth(_fire_all, waiters)

    def queue_acks(self, deliveries: Sequence[_Delivery]) -> None:
        raise NotImplementedError

    def write_acks(self) -> Deferred[Any]:
        raise NotImplementedError

    async def nacked(self, deliveries: Sequence[_Delivery]) -> None:
        raise NotImplementedError

    def renew(self) -> list[Deferred[Any]]:
        return []


def _fire_all(result: object, waiters: list[Deferred[None]]) -> None:
    for waiter in waiters:
        if isinstance(result, Failure):
            waiter.errback(result)
        else:
            waiter.callback(None)


def _by_claim(deliveries: Iterable[_Delivery]) -> dict[str, list[str]]:
    out: dict[str, list[str]] = {}
    for d in deliveries:
        if d.claim_id is not None:
            out.setdefault(d.claim_id, []).append(d.message.id)
    return out


class QueueSubscription(Subscription):
    """``/queue/NAME`` and ``/temp-queue/NAME``: competing consumers over claims."""

    kind = "queue"

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        #: Acknowledged message ids not yet written, by claim.
        self._acks: dict[str, list[str]] = {}
        #: Take messages with pop instead of claim + ack (ack:auto, see ``setup``).
        self.pops = False

    async def setup(self) -> None:
        if self.ack != "auto":
            return
        queue = await self.service.get_queue(self.tenant, self.queue)
        # At-most-once anyway, so one DELETE per batch instead of claim, then ack. Not on
        # a queue that dead-letters: a pop does not count claims, so a message other
        # consumers have NACKed to its limit would be delivered instead of moved. Not on a
        # schema-checked queue either: its bodies are converted for the subscriber after
        # they are taken, and a batch that fails to convert must go back, not be lost.
        options = queue.options
        self.pops = options.max_claim_count is None and options.schema is None

    async def fetch_and_deliver(self, room: int) -> None:
        limits = self.service.limits
        if self.pops:
            popped = await self.wait_on(
                self.service.pop_messages(
                    self.tenant,
                    self.queue,
                    min(room, limits.max_claim),
                    wait=min(WAIT, limits.max_wait),
                    # Delivered, never read back: no need to wait for the commit.
                    prompt=True,
                )
            )
            if popped:
                await self._deliver_popped(popped)
            return
        lease = self.owner.lease
        claim = await self.wait_on(
            self.service.claim(
                self.tenant,
                self.queue,
                limit=min(room, limits.max_claim),
                ttl=lease,
                wait=min(WAIT, limits.max_wait),
            )
        )
        if claim is not None:
            await self._deliver_claim(claim)

    async def _deliver_popped(self, popped: list[Message]) -> None:
        """Messages popped are already gone from the queue: what the subscription no
        longer writes because it stopped meanwhile is lost, as ack:auto allows."""
        messages = await self.bodies.convert(self.tenant, self.queue, popped)
        for message in messages:
            if not self.active:
                break
            # A message claimed before (and given back) was delivered before.
            self.deliver(message, None, redelivered=message.claim_count > 0)

    async def _deliver_claim(self, claim: Claim) -> None:
        try:
            messages = await self.bodies.convert(self.tenant, self.queue, claim.messages)
        except Exception:
            # Not delivered, so not left claimed until the lease ends, and not counted.
            await self.service.release(self.tenant, self.queue, claim.id, undelivered=True)
            raise
        delivered: list[str] = []
        for message in messages:
            if not self.active:
                break
            self.deliver(message, claim.id, redelivered=message.claim_count > 1)
            delivered.append(message.id)
        rest = [m.id for m in messages[len(delivered) :]]
        if rest:
            # Stopped before (or in the middle of) the batch: the rest goes straight back,
            # and as no MESSAGE frame carried it, this claim does not count for it.
            await self.service.release(self.tenant, self.queue, claim.id, rest, undelivered=True)
        if self.ack == "auto" and delivered:
            # ack:auto: the message counts as acknowledged once it is sent. Not awaited: the
            # next claim goes to the core meanwhile (with SQL, in the same group commit).
            self.owner.track(self.service.ack(self.tenant, self.queue, claim.id, delivered))

    def queue_acks(self, deliveries: Sequence[_Delivery]) -> None:
        acks = self._acks
        for d in deliveries:
            if d.claim_id is not None:
                ids = acks.get(d.claim_id)
                if ids is None:
                    acks[d.claim_id] = [d.message.id]
                else:
                    ids.append(d.message.id)

    def write_acks(self) -> Deferred[Any]:
        acks, self._acks = self._acks, {}
        ds = [self.service.ack(self.tenant, self.queue, c, ids) for c, ids in acks.items()]
        if len(ds) == 1:
            return ds[0]
        return gatherResults(ds, consumeErrors=True)

    async def nacked(self, deliveries: Sequence[_Delivery]) -> None:
        # NACK: the message is available again and the claim counts toward dead-lettering.
        for claim_id, ids in _by_claim(deliveries).items():
            await self.service.release(self.tenant, self.queue, claim_id, ids)

    def give_back(self, deliveries: Sequence[_Delivery]) -> Deferred[Any]:
        ds = [
            self.service.release(self.tenant, self.queue, claim_id, ids)
            for claim_id, ids in _by_claim(deliveries).items()
        ]
        return gatherResults(ds, consumeErrors=True)

    def renew(self) -> list[Deferred[Any]]:
        lease = self.owner.lease
        out = []
        for claim_id in _by_claim(self.unacked.values()):
            d = self.service.renew_claim(self.tenant, self.queue, claim_id, lease)
            d.addErrback(lambda f: f.trap(ClaimNotFound, QueueNotFound))
            out.append(d)
        return out


class TopicSubscription(Subscription):
    """``/topic/NAME``: a reader of the queue's log from a marker on (fan-out)."""

    kind = "topic"

    def __init__(self, *args: Any, durable: bool = False, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.durable = durable
        #: The marker of the last message delivered ("0": before every message).
        self.after = 0
        self.saved: int | None = None
        self.redeliver: deque[Message] = deque()

    async def setup(self) -> None:
        if self.durable:
            cursor = await self.service.get_cursor(self.tenant, self.queue, self.id)
            if cursor is not None:
                self.after = self.saved = int(cursor)
                return
        stats = await self.service.queue_stats(self.tenant, self.queue)
        # Only messages published after SUBSCRIBE: start after the newest one there, or
        # before every message (marker 0) on an empty queue.
        self.after = stats.newest.marker if stats.newest is not None else 0
        if self.durable:
            # Stored at once, even on an empty queue: a message published while this
            # subscriber is away is delivered when it comes back.
            await self._save(self.after)

    async def _save(self, marker: int) -> None:
        if self.saved is None or marker > self.saved:
            self.saved = marker
            await self.service.set_cursor(self.tenant, self.queue, self.id, str(marker))

    async def fetch_and_deliver(self, room: int) -> None:
        if self.redeliver:
            while self.redeliver and room > 0 and self.active:
                self.deliver(self.redeliver.popleft(), None, redelivered=True)
                room -= 1
            return
        found = await self.wait_on(
            self.service.observe(
                self.tenant,
                self.queue,
                after=str(self.after),
                limit=min(room, self.service.limits.max_page),
                include_claimed=True,
                include_delayed=True,
                wait=min(WAIT, self.service.limits.max_wait),
            )
        )
        if not found or not self.active:
            return
        found = await self.bodies.convert(self.tenant, self.queue, found)
        for message in found:
            if not self.active:
                break
            self.deliver(message, None)
            self.after = message.marker
        if self.ack == "auto" and self.durable:
            await self._save(self.after)

    def _position(self) -> int:
        """The marker everything at or below which has been acknowledged."""
        pending = [d.message.marker for d in self.unacked.values()]
        pending += [m.marker for m in self.redeliver]
        if pending:
            return min(pending) - 1
        return self.after

    def queue_acks(self, deliveries: Sequence[_Delivery]) -> None:
        pass  # the position is worked out when written

    def write_acks(self) -> Deferred[Any]:
        if not self.durable:
            return succeed(None)
        return Deferred.fromCoroutine(self._save(self._position()))

    async def nacked(self, deliveries: Sequence[_Delivery]) -> None:
        # NACK on a topic: the subscriber gets the message again (it stays in its log).
        merged = sorted([*self.redeliver, *(d.message for d in deliveries)], key=_marker)
        self.redeliver = deque(merged)


def _marker(m: Message) -> int:
    return m.marker
