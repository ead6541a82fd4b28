"""The STOMP adapter: one client session translated into ``IQueueService`` calls.

It knows frames and the core API, not sockets: the Twisted side (``protocol.py`` for TCP,
``websocket.py`` for WebSocket) hands it parsed frames through ``frame_received`` and gives
it a ``Link`` to send frames, negotiate heart-beats and learn about output back-pressure.

Destinations and the queues they name: ``destinations.py``.

Batching: the SENDs (per destination) and ACKs of one chunk of input reach the core as one
``publish`` / ``ack`` call each, when the link says the chunk is done (``input_done``);
any other frame first flushes what is queued, so frames still take effect in order
(``sending.py``, ``subscriptions.py``).
"""

from __future__ import annotations

import uuid
from collections import deque
from collections.abc import Callable, Coroutine, Iterable, Sequence
from dataclasses import replace
from typing import Any, Protocol, TypeVar

from twisted.internet.defer import (
    CancelledError,
    Deferred,
    DeferredList,
    gatherResults,
    succeed,
)
from twisted.internet.interfaces import IDelayedCall
from twisted.logger import Logger
from twisted.python.failure import Failure

from qgate.core.errors import ClaimNotFound, QGateError, QueueNotFound, Unauthorized
from qgate.core.model import DEFAULT_PRIORITY, Claim, Message, NewMessage, QueueOptions
from qgate.protocols.stomp.bodies import DEFAULT, SubscriptionBodies
from qgate.protocols.stomp.codec import V10, V12, VERSIONS, Frame, FrameError
from qgate.protocols.stomp.destinations import Destinations
from qgate.protocols.stomp.errors import StompError, error_of
from qgate.protocols.stomp.headers import (
    accepted_version,
    ack_mode,
    ack_tag,
    body_format,
    digits,
    heart_beat,
    new_message,
    prefetch_count,
    require,
    subscription_id,
    trim_10,
)
from qgate.protocols.stomp.sending import Sender
from qgate.protocols.stomp.transactions import (
    PendingAck,
    PendingNack,
    PendingSend,
    Transactions,
)

log = Logger()
T = TypeVar("T")

SERVER = "qgate/0.1"

#: Longest single wait on the core; a subscription waits again after it (no busy loop).
WAIT = 30.0
#: Frames whose effects in the core are batched per chunk of input (in order among them).
BATCHED = frozenset({"SEND", "ACK", "NACK"})


class Link(Protocol):
    """What the session needs from the Twisted side of a connection."""

    @property
    def output_paused(self) -> bool:
        """True while the peer does not read fast enough (the transport paused us)."""

    def send(self, command: str, headers: Iterable[tuple[str, str]], body: bytes = b"") -> None:
        """Encode a frame for the negotiated version and write it."""

    def set_version(self, version: str) -> None:
        """Use ``version``'s header escaping from the next frame on, both ways."""

    def start_heartbeat(self, send_every: float, expect_every: float) -> None:
        """Send EOLs every ``send_every`` s; close if nothing arrives for longer than
        ``expect_every`` s plus a grace margin (0 disables either)."""

    def close(self) -> None:
        """Close once what was written is flushed."""


def _as_deferred(
    f: Callable[..., Coroutine[Any, Any, Any]],
) -> Callable[..., Deferred[Any]]:
    def wrapper(*args: Any, **kwargs: Any) -> Deferred[Any]:
        return Deferred.fromCoroutine(f(*args, **kwargs))

    wrapper.__name__ = f.__name__
    wrapper.__doc__ = f.__doc__
    return wrapper


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
        session: StompSession,
        sub_id: str,
        destination: str,
        queue: str,
        ack: str,
        prefetch: int,
        options: QueueOptions | None,
        accept: str = DEFAULT,
    ) -> None:
        self.session = session
        self.id = sub_id
        self.destination = destination
        self.queue = queue
        self.ack = ack
        self.prefetch = prefetch
        self.options = options
        #: Avro bodies of a schema-checked queue in the format SUBSCRIBE's accept chose.
        self.bodies = SubscriptionBodies(session.service, accept)
        self.unacked: dict[str, _Delivery] = {}
        self.active = False
        self.stopped = False
        self._waiting: Deferred[Any] | None = None
        self._kick: Deferred[None] | None = None
        self._ack_waiters: list[Deferred[None]] = []

    @property
    def service(self) -> Any:
        return self.session.service

    @property
    def tenant(self) -> str:
        return self.session.tenant

    # -- life cycle ------------------------------------------------------------------------

    @_as_deferred
    async def start(self) -> None:
        await self.session.destinations.ensure_queue(self.queue, self.options)
        await self.setup()

    def begin(self, _: object = None) -> None:
        """Start the delivery loop (after the SUBSCRIBE's RECEIPT has gone out)."""
        if self.stopped or self.active:
            return
        self.active = True
        task = Deferred.fromCoroutine(self._run())
        task.addErrback(self._crashed)

    async def setup(self) -> None:
        """Where the subscription starts reading (topics)."""

    def _crashed(self, failure: Failure) -> None:
        if failure.check(CancelledError) or not self.active:
            return
        self.active = False
        self.session.subscription_failed(self, failure)

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
            self.session.forget(d.tag)
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
            if self.room() <= 0 or self.session.output_paused:
                self._kick = Deferred()
                await self.wait_on(self._kick)
                continue
            await self.fetch_and_deliver(self.room())

    async def fetch_and_deliver(self, room: int) -> None:
        raise NotImplementedError

    def deliver(self, message: Message, claim_id: str | None, redelivered: bool = False) -> str:
        tag = self.session.new_tag()
        if self.ack != "auto":
            # Tracked before the write: a write can end the session (slow consumer), and
            # stop() must then give this message back too.
            self.unacked[tag] = _Delivery(tag, message, claim_id)
            self.session.track_delivery(tag, self)
        self.session.send_message(self, tag, message, redelivered)
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
            self.session.forget(d.tag)
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
        self.session.flush_later(self)
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

    async def fetch_and_deliver(self, room: int) -> None:
        limits = self.service.limits
        lease = self.session.lease
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

    async def _deliver_claim(self, claim: Claim) -> None:
        try:
            messages = await self.bodies.convert(self.tenant, self.queue, claim.messages)
        except Exception:
            # Not delivered, so not left claimed until the lease ends.
            await self.service.release(self.tenant, self.queue, claim.id)
            raise
        delivered: list[str] = []
        for message in messages:
            if not self.active:
                break
            self.deliver(message, claim.id, redelivered=message.claim_count > 1)
            delivered.append(message.id)
        rest = [m.id for m in messages[len(delivered) :]]
        if rest:
            # Stopped in the middle of a batch: the rest goes straight back.
            await self.service.release(self.tenant, self.queue, claim.id, rest)
        if self.ack == "auto" and delivered:
            # ack:auto: the message counts as acknowledged once it is sent. Not awaited: the
            # next claim goes to the core meanwhile (with SQL, in the same group commit).
            self.session.track(self.service.ack(self.tenant, self.queue, claim.id, delivered))

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
        lease = self.session.lease
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


class StompSession:
    """One STOMP connection's state: version, tenant, subscriptions, transactions."""

    def __init__(self, ctx: Any, link: Link, versions: Sequence[str] = VERSIONS) -> None:
        self.ctx = ctx
        self.service = ctx.service
        self.link = link
        self.versions = tuple(v for v in VERSIONS if v in versions)
        self.config = ctx.config.stomp
        self.session_id = uuid.uuid4().hex
        self.version = V10
        self.tenant = ""
        self.state = "new"  # new -> connecting -> connected -> closing -> closed
        self.destinations = Destinations(self)
        self.subscriptions: dict[str, Subscription] = {}
        self.sender = Sender(self)
        self.transactions = Transactions(
            self.sender.publish, self._settle, self.service.limits.max_batch
        )
        self._deliveries: dict[str, Subscription] = {}
        self._next_tag = 1
        self._pending: set[Deferred[Any]] = set()
        self._renewer: IDelayedCall | None = None
        self.batching = False
        self._to_flush: list[Subscription] = []
        self._handlers: dict[str, Callable[[Frame], Deferred[Any] | None]] = {
            "CONNECT": self._on_connect,
            "STOMP": self._on_connect,
            "SEND": self._on_send,
            "SUBSCRIBE": self._on_subscribe,
            "UNSUBSCRIBE": self._on_unsubscribe,
            "ACK": self._on_ack,
            "NACK": self._on_nack,
            "BEGIN": self._on_begin,
            "COMMIT": self._on_commit,
            "ABORT": self._on_abort,
            "DISCONNECT": self._on_disconnect,
        }

    @property
    def output_paused(self) -> bool:
        return self.link.output_paused

    # -- batching: what one chunk of input asks of the core goes in as few calls as it can --

    def input_started(self) -> None:
        """The link hands over the frames of one chunk of input now."""
        self.batching = True

    def input_done(self) -> None:
        """That chunk is done (or input is held): write what it queued."""
        self.batching = False
        self.flush()

    def flush(self) -> None:
        """Hand queued SENDs and ACKs to the core now."""
        if self.sender.queued:
            self.sender.flush()
        if self._to_flush:
            subs, self._to_flush = self._to_flush, []
            for sub in subs:
                sub.flush()

    def flush_later(self, sub: Subscription) -> None:
        if not self.batching:
            sub.flush()
        elif sub not in self._to_flush:
            self._to_flush.append(sub)

    # -- frames in -------------------------------------------------------------------------

    def frame_received(self, frame: Frame) -> Deferred[Any] | None:
        """Handle one frame. A Deferred returned means: read no further frame until it
        fires (CONNECT, SUBSCRIBE, COMMIT, DISCONNECT, and SEND past the flow bound)."""
        if self.state in ("disconnecting", "closing", "closed"):
            return None
        if self.version == V10 and self.state == "connected":
            frame = trim_10(frame)
        if frame.command not in BATCHED and (self.sender.queued or self._to_flush):
            # Frames take effect in order: what SENDs and ACKs queued goes first.
            self.flush()
        handler = self._handlers.get(frame.command)
        try:
            if handler is None:
                raise StompError(f"unknown command {frame.command[:40]!r}")
            connecting = frame.command in ("CONNECT", "STOMP")
            if self.state == "new" and not connecting:
                raise StompError(f"{frame.command} before CONNECT")
            if self.state != "new" and connecting:
                raise StompError("already connected")
            if frame.command == "NACK" and self.version == V10:
                raise StompError("NACK is not part of STOMP 1.0")
            d = handler(frame)
        except (StompError, QGateError) as e:
            self.fail_with(e, frame)
            return None
        except Exception as e:  # noqa: BLE001 - a bug of ours: an ERROR, logged, not a crash
            log.failure("handling a {command} frame failed", command=frame.command)
            self.fail_with(e, frame)
            return None
        if d is None:
            return None
        return self._guard(d, frame)

    def _guard(self, d: Deferred[Any], frame: Frame | None) -> Deferred[Any]:
        """Track ``d`` until it fires; a failure becomes an ERROR frame."""
        self._pending.add(d)
        d.addBoth(self._unguard, d, frame)
        return d

    def track(self, d: Deferred[Any]) -> None:
        """Follow a core call nobody waits for: DISCONNECT waits for it, a failure is an
        ERROR frame."""
        self._guard(d, None)

    def _unguard(self, result: Any, d: Deferred[Any], frame: Frame | None) -> Any:
        self._pending.discard(d)
        if isinstance(result, Failure):
            if not result.check(CancelledError):
                self.fail_with(error_of(result), frame)
            return None
        return result

    def receipt(self, frame: Frame) -> None:
        receipt = frame.get("receipt")
        if receipt is not None and self.state not in ("closing", "closed"):
            self.link.send("RECEIPT", [("receipt-id", receipt)])

    def _receipt_cb(self, frame: Frame) -> Callable[[Any], None]:
        return lambda _: self.receipt(frame)

    def _then_receipt(self, d: Deferred[Any], frame: Frame) -> Deferred[Any]:
        """``d``, followed by the RECEIPT the frame asks for (if it asks for one)."""
        if "receipt" in frame.headers:
            d.addCallback(lambda _: self.receipt(frame))
        return d

    # -- errors and the end of the connection ----------------------------------------------

    def fail_with(self, error: BaseException, frame: Frame | None = None) -> None:
        if isinstance(error, StompError):
            self.fail(error.message, frame, error.detail, error.headers)
        elif isinstance(error, Unauthorized):
            self.fail("Authentication failed", frame, error.description)
        elif isinstance(error, QGateError):
            self.fail(error.description, frame, f"{error.title} ({type(error).__name__})")
        elif isinstance(error, FrameError):
            self.fail(str(error), frame)
        else:
            log.failure("STOMP session failed", Failure(error))
            self.fail("internal error", frame)

    def fail(
        self,
        message: str,
        frame: Frame | None = None,
        detail: str = "",
        headers: dict[str, str] | None = None,
    ) -> None:
        """Send an ERROR frame, then close: STOMP 1.2 says the server closes after ERROR."""
        if self.state in ("closing", "closed"):
            return
        self.state = "closing"
        self._stop_all()
        out = [("message", message)]
        if frame is not None and frame.get("receipt") is not None:
            out.append(("receipt-id", frame.headers["receipt"]))
        out.extend((headers or {}).items())
        body = (detail or message).encode("utf-8")
        out += [("content-type", "text/plain;charset=utf-8"), ("content-length", str(len(body)))]
        self.link.send("ERROR", out, body)
        self.link.close()

    def subscription_failed(self, sub: Subscription, failure: Failure) -> None:
        self.fail_with(error_of(failure), None)

    def protocol_error(self, error: FrameError) -> None:
        self.fail(str(error), None, f"{type(error).__name__}: {error}")

    def heartbeat_timeout(self) -> None:
        self.fail("heart-beat timeout: nothing received from the client in time")

    def output_overflow(self) -> None:
        self.fail(
            "slow consumer: the client does not read its messages",
            detail=f"more than {self.config.max_output_buffer} bytes wait to be read",
        )

    def output_resumed(self) -> None:
        for sub in list(self.subscriptions.values()):
            sub.kick()

    def _stop_all(self) -> None:
        """Stop every subscription (unacked messages go back) and drop transactions; what
        earlier frames queued for the core still goes to it."""
        self.flush()
        if self._renewer is not None and self._renewer.active():
            self._renewer.cancel()
        self._renewer = None
        for sub in list(self.subscriptions.values()):
            sub.stop().addErrback(lambda f: log.failure("releasing messages failed", f))
        self.subscriptions.clear()
        # STOMP 1.2: transactions still open when the connection ends are aborted.
        self.transactions.clear()

    def connection_lost(self) -> None:
        if self.state == "closed":
            return
        self.state = "closed"
        self._stop_all()
        self.destinations.delete_temp_queues()
        self.sender.release()

    # -- CONNECT ---------------------------------------------------------------------------

    def _on_connect(self, frame: Frame) -> Deferred[Any]:
        version = accepted_version(frame, self.versions)
        client_send = client_want = 0
        if version != V10:
            client_send, client_want = heart_beat(frame.get("heart-beat", "0,0") or "0,0")
        self.version = version
        host = frame.get("host") or ""
        if self.ctx.config.auth.mode == "keys":
            # The passcode is the API key; a login, when given, must be the key's tenant.
            claimed: str | None = frame.get("login") or None
            token = frame.get("passcode")
        else:
            # The virtual host names the tenant; "/" is RabbitMQ's default vhost.
            claimed = host if host not in ("", "/") else None
            if claimed is None:
                claimed = self.ctx.config.auth.default_tenant or "default"
            token = None
        self.state = "connecting"
        d: Deferred[str] = self.ctx.auth.authenticate(claimed, token)
        return d.addCallback(self._connected, version, client_send, client_want)

    def _connected(self, tenant: str, version: str, client_send: int, client_want: int) -> None:
        if self.state != "connecting":
            return
        self.tenant = tenant
        self.state = "connected"
        beat = self.config.heartbeat_ms if version != V10 else 0
        headers = [("version", version), ("session", self.session_id), ("server", SERVER)]
        headers.append(("heart-beat", f"{beat},{beat}"))
        self.link.send("CONNECTED", headers)
        self.link.set_version(version)
        # STOMP 1.2 heart-beating: each side sends at the slower of what one offers and
        # the other wants; 0 on either side means none.
        send_ms = max(beat, client_want) if beat and client_want else 0
        expect_ms = max(beat, client_send) if beat and client_send else 0
        self.link.start_heartbeat(send_ms / 1000.0, expect_ms / 1000.0)
        self._schedule_renew()

    @property
    def lease(self) -> float:
        """Seconds a queue subscription's claim is leased for (``[stomp] lease`` within the
        core's bounds). Renewed every third of it while the connection lives, so the
        messages of a crashed process come back within one lease."""
        limits = self.service.limits
        return float(min(max(self.config.lease, limits.min_lease), limits.max_lease))

    def _schedule_renew(self) -> None:
        self._renewer = self.service.clock.callLater(self.lease / 3, self._renew)

    def _renew(self) -> None:
        self._renewer = None
        if self.state != "connected":
            return
        for sub in list(self.subscriptions.values()):
            for d in sub.renew():
                d.addErrback(lambda f: log.failure("renewing a claim failed", f))
        self._schedule_renew()

    # -- SEND ------------------------------------------------------------------------------

    def _on_send(self, frame: Frame) -> Deferred[Any] | None:
        kind, name = self.destinations.parse(require(frame, "destination"))
        limits = self.service.limits
        message = new_message(frame, self.session_id, self.service.clock, limits.min_ttl)
        options = self.destinations.options_for(frame)
        tx = frame.get("transaction")
        if tx is not None:
            self.transactions.find(tx)
        reply_to = frame.get("reply-to")
        if kind == "temp-queue" or (reply_to or "").startswith("/temp-queue/"):
            # Temporary queues are made first, so the rest waits for them (input held).
            d = Deferred.fromCoroutine(self._send_temp(frame, kind, name, message, options))
            return d
        self._send(frame, kind, name, message, options)
        return self.sender.hold()

    async def _send_temp(
        self,
        frame: Frame,
        kind: str,
        name: str,
        message: NewMessage,
        options: QueueOptions | None,
    ) -> None:
        reply_to = frame.get("reply-to") or ""
        if reply_to.startswith("/temp-queue/"):
            _, temp = self.destinations.parse(reply_to)
            core = await self.destinations.temp_queue(temp)
            await self._auto_subscribe(temp, core)
            headers = dict(message.headers)
            headers["reply-to"] = f"/reply-queue/{core}"
            message = replace(message, headers=headers)
        if kind == "temp-queue":
            kind, name = "queue", await self.destinations.temp_queue(name)
        self._send(frame, kind, name, message, options)

    async def _auto_subscribe(self, temp: str, core: str) -> None:
        """RabbitMQ: replies to ``/temp-queue/NAME`` arrive as MESSAGEs whose subscription
        is the destination, without an explicit SUBSCRIBE."""
        destination = f"/temp-queue/{temp}"
        if destination in self.subscriptions or any(
            s.queue == core for s in self.subscriptions.values()
        ):
            return
        sub = QueueSubscription(
            self, destination, destination, core, "auto", self.config.prefetch, None
        )
        self.subscriptions[destination] = sub
        await sub.start()
        sub.begin()

    def _send(
        self,
        frame: Frame,
        kind: str,
        name: str,
        message: NewMessage,
        options: QueueOptions | None,
    ) -> None:
        tx = frame.get("transaction")
        if tx is not None:
            # STOMP 1.2: a SEND in a transaction takes effect on COMMIT.
            self.transactions.find(tx).add(PendingSend(kind, name, message, options))
            self.receipt(frame)
            return
        self.sender.queue(frame, (kind, name), message, options)

    # -- SUBSCRIBE / UNSUBSCRIBE -----------------------------------------------------------

    def _on_subscribe(self, frame: Frame) -> Deferred[Any]:
        destination = require(frame, "destination")
        kind, name = self.destinations.parse(destination)
        sub_id = subscription_id(frame, self.version)
        if sub_id in self.subscriptions:
            raise StompError(f"subscription id {sub_id[:80]!r} is already in use")
        ack = ack_mode(frame)
        prefetch = prefetch_count(frame, self.config.prefetch)
        durable = frame.get("durable") == "true"
        options = self.destinations.options_for(frame)
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
            self.subscriptions[sub_id] = sub
            d = sub.start()
        elif kind == "temp-queue":
            sub = QueueSubscription(self, sub_id, destination, "", ack, prefetch, None, accept)
            self.subscriptions[sub_id] = sub

            async def start_temp() -> None:
                sub.queue = await self.destinations.temp_queue(name)
                await sub.start()

            d = Deferred.fromCoroutine(start_temp())
        else:
            sub = QueueSubscription(self, sub_id, destination, name, ack, prefetch, options, accept)
            self.subscriptions[sub_id] = sub
            d = sub.start()
        return d.addCallback(self._receipt_cb(frame)).addCallback(sub.begin)

    def _on_unsubscribe(self, frame: Frame) -> Deferred[Any] | None:
        sub_id = subscription_id(frame, self.version)
        sub = self.subscriptions.pop(sub_id, None)
        if sub is None:
            self.receipt(frame)
            return None
        d = sub.stop()
        if isinstance(sub, TopicSubscription) and sub.durable and frame.get("durable") == "true":
            # RabbitMQ: UNSUBSCRIBE with durable:true deletes the durable subscription.
            d.addCallback(lambda _: self.service.set_cursor(self.tenant, sub.queue, sub.id, None))
        d.addCallback(self._receipt_cb(frame))
        self._guard(d, frame)
        return None

    # -- ACK / NACK ------------------------------------------------------------------------

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
        if self.version == V12 and sub.ack != "auto":
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
        self.link.send("MESSAGE", headers, message.body)

    def _on_ack(self, frame: Frame) -> None:
        self._settle_frame(frame, True)

    def _on_nack(self, frame: Frame) -> None:
        self._settle_frame(frame, False)

    def _settle_frame(self, frame: Frame, positive: bool) -> None:
        tag = ack_tag(frame, self.version)
        self._check_tag(tag)
        tx = frame.get("transaction")
        if tx is not None:
            # STOMP 1.2: an ACK in a transaction takes effect on COMMIT.
            self.transactions.find(tx).add(PendingAck(tag) if positive else PendingNack(tag))
            self.receipt(frame)
            return
        self._guard(self._then_receipt(self._settle(tag, positive), frame), frame)

    def _check_tag(self, tag: str) -> None:
        if not (digits(tag) and 0 < int(tag) < self._next_tag):
            raise StompError(f"unknown message id {tag[:80]!r} in ACK/NACK")

    def _settle(self, tag: str, positive: bool) -> Deferred[None]:
        sub = self._deliveries.get(tag)
        if sub is None:
            # Settled already (a cumulative ACK covered it) or its subscription ended.
            return succeed(None)
        return sub.settle(tag, positive)

    # -- transactions ----------------------------------------------------------------------

    def _on_begin(self, frame: Frame) -> None:
        self.transactions.begin(require(frame, "transaction"))
        self.receipt(frame)

    def _on_abort(self, frame: Frame) -> None:
        self.transactions.abort(require(frame, "transaction"))
        self.receipt(frame)

    def _on_commit(self, frame: Frame) -> Deferred[Any]:
        d = self.transactions.commit(require(frame, "transaction"))
        return d.addCallback(self._receipt_cb(frame))

    # -- DISCONNECT ------------------------------------------------------------------------

    def _on_disconnect(self, frame: Frame) -> Deferred[Any]:
        """STOMP 1.2: graceful shutdown; the RECEIPT comes once every earlier frame has
        taken effect, then the server closes."""
        pending = list(self._pending)
        self.state = "disconnecting"
        for sub in self.subscriptions.values():
            sub.halt()  # the client is leaving: deliver nothing more (given back at the end)
        d: Deferred[Any] = DeferredList(pending, consumeErrors=True)

        def finish(_: Any) -> None:
            if self.state != "disconnecting":
                return
            self.receipt_final(frame)

        return d.addCallback(finish)

    def receipt_final(self, frame: Frame) -> None:
        receipt = frame.get("receipt")
        self.state = "closing"
        self._stop_all()
        if receipt is not None:
            self.link.send("RECEIPT", [("receipt-id", receipt)])
        self.link.close()
