"""A STOMP session's consuming side: SUBSCRIBE and UNSUBSCRIBE, the MESSAGE frames its
subscriptions write, and ACK/NACK routed to the subscription that sent the message.

Every MESSAGE carries a connection-wide delivery tag as ``message-id`` (and, in STOMP 1.2,
as ``ack``); an ACK or NACK names it. The ACKs of one chunk of input reach the core as one
``ack`` call per subscription, when the chunk is done (``flush``).
"""

from __future__ import annotations

from typing import Any, Protocol

from twisted.internet.defer import Deferred, succeed
from twisted.logger import Logger
from twisted.python.failure import Failure

from qgate.core.metrics import SUBSCRIPTIONS, IMetrics
from qgate.core.model import DEFAULT_PRIORITY, Message
from qgate.core.sessions import TenantSession
from qgate.protocols.stomp.codec import V12, Frame
from qgate.protocols.stomp.destinations import Destinations, QueueOwner
from qgate.protocols.stomp.errors import StompError, error_of
from qgate.protocols.stomp.headers import (
    ack_mode,
    ack_tag,
    body_format,
    digits,
    prefetch_count,
    require,
    subscription_id,
)
from qgate.protocols.stomp.link import Link
from qgate.protocols.stomp.subscriptions import (
    QueueSubscription,
    Subscription,
    TopicSubscription,
)

log = Logger()


class ConsumerSession(QueueOwner, Protocol):
    """What the consumers need from their session."""

    @property
    def version(self) -> str: ...

    @property
    def link(self) -> Link: ...

    @property
    def destinations(self) -> Destinations: ...

    @property
    def batching(self) -> bool:
        """True while the link hands over the frames of one chunk of input."""

    def receipt(self, frame: Frame) -> None: ...

    def guard(self, d: Deferred[Any], frame: Frame | None) -> Deferred[Any]:
        """Follow ``d`` for ``frame``: a failure is an ERROR frame."""

    def track(self, d: Deferred[Any]) -> None: ...

    def fail_with(self, error: BaseException, frame: Frame | None = None) -> None: ...

    @property
    def quota(self) -> TenantSession | None:
        """The connection in the core, which counts its subscriptions."""

    @property
    def metrics(self) -> IMetrics:
        """Where open subscriptions are counted (the operators' gauge)."""


class Consumers:
    """A session's subscriptions by id and its unsettled deliveries by tag; the
    ``Owner`` every one of its subscriptions talks to."""

    __slots__ = (
        "session",
        "service",
        "prefetch",
        "lease",
        "max_subscriptions",
        "subscriptions",
        "_link",
        "_deliveries",
        "_next_tag",
        "_to_flush",
    )

    def __init__(
        self, session: ConsumerSession, prefetch: int, lease: float, max_subscriptions: int = 1000
    ) -> None:
        self.session = session
        self.service = session.service
        #: ``prefetch-count`` of a SUBSCRIBE that names none.
        self.prefetch = prefetch
        self.lease = lease
        #: Subscriptions one connection may hold (``[stomp] max_subscriptions``).
        self.max_subscriptions = max_subscriptions
        self.subscriptions: dict[str, Subscription] = {}
        self._link = session.link
        self._deliveries: dict[str, Subscription] = {}
        self._next_tag = 1
        self._to_flush: list[Subscription] = []

    # -- what a subscription needs (subscriptions.Owner) -----------------------------------

    @property
    def tenant(self) -> str:
        return self.session.tenant

    @property
    def output_paused(self) -> bool:
        return self._link.output_paused

    def new_tag(self) -> str:
        tag = str(self._next_tag)
        self._next_tag += 1
        return tag

    def track_delivery(self, tag: str, sub: Subscription) -> None:
        self._deliveries[tag] = sub

    def forget(self, tag: str) -> None:
        self._deliveries.pop(tag, None)

    def send_message(
        self, sub: Subscription, tag: str, message: Message, redelivered: bool
    ) -> None:
        headers = [
            ("subscription", sub.id),
            ("destination", sub.destination),
            ("message-id", tag),
        ]
        if self.session.version == V12 and sub.ack != "auto":
            headers.append(("ack", tag))
        headers.append(("content-type", message.content_type))
        headers.append(("content-length", str(len(message.body))))
        if message.priority != DEFAULT_PRIORITY:
            headers.append(("priority", str(message.priority)))
        if redelivered:
            headers.append(("redelivered", "true"))
        # The publisher's own headers come last: the first of a repeated header wins, so
        # they cannot override the ones above.
        headers.extend(message.headers.items())
        self._link.send("MESSAGE", headers, message.body)

    def flush_later(self, sub: Subscription) -> None:
        if not self.session.batching:
            sub.flush()
        elif sub not in self._to_flush:
            self._to_flush.append(sub)

    def track(self, d: Deferred[Any]) -> None:
        self.session.track(d)

    def subscription_failed(self, sub: Subscription, failure: Failure) -> None:
        self.session.fail_with(error_of(failure), None)

    # -- SUBSCRIBE / UNSUBSCRIBE -----------------------------------------------------------

    def on_subscribe(self, frame: Frame) -> Deferred[Any]:
        destinations = self.session.destinations
        destination = require(frame, "destination")
        kind, name = destinations.parse(destination)
        sub_id = subscription_id(frame, self.session.version)
        if sub_id in self.subscriptions:
            raise StompError(f"subscription id {sub_id[:80]!r} is already in use")
        self._check_room()
        ack = ack_mode(frame)
        prefetch = prefetch_count(frame, self.prefetch)
        durable = frame.get("durable") == "true"
        options = destinations.options_for(frame)
        accept = body_format(frame)
        if kind == "reply-queue":
            raise StompError("cannot SUBSCRIBE to a /reply-queue/ destination")
        sub: Subscription
        if kind == "topic":
            if durable and not frame.get("id"):
                raise StompError("a durable subscription needs an id header")
            sub = TopicSubscription(
                self, sub_id, destination, name, ack, prefetch, options, accept, durable=durable
            )
        elif kind == "temp-queue":
            sub = QueueSubscription(self, sub_id, destination, "", ack, prefetch, None, accept)
        else:
            sub = QueueSubscription(self, sub_id, destination, name, ack, prefetch, options, accept)
        self._count_subscription()
        self.subscriptions[sub_id] = sub
        d = Deferred.fromCoroutine(self._start(sub, name if kind == "temp-queue" else None))
        return d.addCallback(lambda _: self.session.receipt(frame)).addCallback(sub.begin)

    def _check_room(self) -> None:
        if len(self.subscriptions) >= self.max_subscriptions:
            raise StompError(
                f"too many subscriptions on this connection "
                f"(max_subscriptions {self.max_subscriptions})"
            )

    async def _start(self, sub: Subscription, temp: str | None = None) -> None:
        """Make the subscription's queue (``temp``: this connection's ``/temp-queue/``)
        and find where it starts reading."""
        destinations = self.session.destinations
        if temp is not None:
            sub.queue = await destinations.temp_queue(temp)
        await destinations.ensure_queue(sub.queue, sub.options)
        await sub.setup()

    async def auto_subscribe(self, temp: str, core: str) -> None:
        """RabbitMQ: replies to ``/temp-queue/NAME`` arrive as MESSAGEs whose subscription
        is the destination, without an explicit SUBSCRIBE."""
        destination = f"/temp-queue/{temp}"
        if destination in self.subscriptions or any(
            s.queue == core for s in self.subscriptions.values()
        ):
            return
        self._check_room()  # each /temp-queue/ replied to is a subscription too
        sub = QueueSubscription(self, destination, destination, core, "auto", self.prefetch, None)
        self._count_subscription()
        self.subscriptions[destination] = sub
        await self._start(sub)
        sub.begin()

    def on_unsubscribe(self, frame: Frame) -> None:
        sub_id = subscription_id(frame, self.session.version)
        sub = self.subscriptions.pop(sub_id, None)
        if sub is None:
            self.session.receipt(frame)
            return
        if self.session.quota is not None:
            self.session.quota.unsubscribe()
        self.session.metrics.adjust(SUBSCRIPTIONS, -1, protocol="stomp")
        d = sub.stop()
        if isinstance(sub, TopicSubscription) and sub.durable and frame.get("durable") == "true":
            # RabbitMQ: UNSUBSCRIBE with durable:true deletes the durable subscription.
            d.addCallback(lambda _: self.service.set_cursor(self.tenant, sub.queue, sub.id, None))
        d.addCallback(lambda _: self.session.receipt(frame))
        self.session.guard(d, frame)

    # -- ACK / NACK ------------------------------------------------------------------------

    def tag_of(self, frame: Frame) -> str:
        """The delivery an ACK or NACK names: one this connection has sent."""
        tag = ack_tag(frame, self.session.version)
        if not (digits(tag) and 0 < int(tag) < self._next_tag):
            raise StompError(f"unknown message id {tag[:80]!r} in ACK/NACK")
        return tag

    def settle(self, tag: str, positive: bool) -> Deferred[None]:
        """ACK (``positive``) or NACK ``tag``; fires once that has taken effect."""
        sub = self._deliveries.get(tag)
        if sub is None:
            # Settled already (a cumulative ACK covered it) or its subscription ended.
            return succeed(None)
        return sub.settle(tag, positive)

    # -- every subscription ----------------------------------------------------------------

    @property
    def queued(self) -> bool:
        """Whether ACKs wait for the end of the chunk of input."""
        return bool(self._to_flush)

    def flush(self) -> None:
        """Hand the queued ACKs to the core now."""
        subs, self._to_flush = self._to_flush, []
        for sub in subs:
            sub.flush()

    def renew(self) -> None:
        """Extend the lease of every claim not settled yet."""
        for sub in list(self.subscriptions.values()):
            for d in sub.renew():
                d.addErrback(lambda f: log.failure("renewing a claim failed", f))

    def kick_all(self) -> None:
        """The peer reads again: every subscription looks for room."""
        for sub in list(self.subscriptions.values()):
            sub.kick()

    def halt_all(self) -> None:
        """The client is leaving: deliver nothing more (given back at the end)."""
        for sub in self.subscriptions.values():
            sub.halt()

    def stop_all(self) -> None:
        """Stop every subscription: what was delivered and not acknowledged goes back."""
        for sub in list(self.subscriptions.values()):
            sub.stop().addErrback(lambda f: log.failure("releasing messages failed", f))
        if self.session.quota is not None:
            self.session.quota.unsubscribe(len(self.subscriptions))
        if self.subscriptions:
            self.session.metrics.adjust(SUBSCRIPTIONS, -len(self.subscriptions), protocol="stomp")
        self.subscriptions.clear()

    def _count_subscription(self) -> None:
        """One more subscription of the tenant (QuotaExceeded past its quota)."""
        if self.session.quota is not None:
            self.session.quota.subscribe()
        self.session.metrics.adjust(SUBSCRIPTIONS, 1, protocol="stomp")
