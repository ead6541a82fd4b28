"""The STOMP adapter: one client session translated into ``IQueueService`` calls.

It knows frames and the core API, not sockets: the Twisted side (``protocol.py`` for TCP,
``websocket.py`` for WebSocket) hands it parsed frames through ``frame_received`` and gives
it a ``Link`` (``link.py``) to send frames, negotiate heart-beats and learn about output
back-pressure.

``StompSession`` does CONNECT (version, heart-beats, tenant), dispatches every other frame
to the part whose job it is, and owns the session's life: RECEIPTs, ERROR then close,
DISCONNECT, the end of the connection. The parts, each knowing the session only through a
small protocol of what it needs:

- ``headers.py``: the rules header values follow (pure functions of a frame);
- ``destinations.py``: ``/queue/``, ``/topic/``, ``/temp-queue/``, ``/reply-queue/`` and
  the queues a connection makes;
- ``sending.py``: SENDs to the core, batched, with producer flow control;
- ``consumers.py`` and ``subscriptions.py``: SUBSCRIBE, the delivery loops, ACK/NACK;
- ``transactions.py``: BEGIN, COMMIT, ABORT.

Batching: the SENDs (per destination) and ACKs of one chunk of input reach the core as one
``publish`` / ``ack`` call each, when the link says the chunk is done (``input_done``);
any other frame first flushes what is queued, so frames still take effect in order.
"""

from __future__ import annotations

import enum
import uuid
from collections.abc import Callable, Sequence
from dataclasses import replace
from typing import Any

from twisted.internet.defer import CancelledError, Deferred, DeferredList
from twisted.internet.interfaces import IDelayedCall
from twisted.internet.task import deferLater
from twisted.logger import Logger
from twisted.python.failure import Failure

from qgate.core.errors import QGateError, Unauthorized
from qgate.core.sessions import TenantSession, open_session
from qgate.protocols.context import ProtocolContext
from qgate.protocols.stomp.codec import V10, VERSIONS, Frame, FrameError
from qgate.protocols.stomp.consumers import Consumers
from qgate.protocols.stomp.destinations import Destinations
from qgate.protocols.stomp.errors import StompError, error_of
from qgate.protocols.stomp.headers import (
    accepted_version,
    heart_beat,
    new_message,
    require,
    trim_10,
)
from qgate.protocols.stomp.link import Link
from qgate.protocols.stomp.sending import Sender
from qgate.protocols.stomp.settings import StompSettings
from qgate.protocols.stomp.transactions import PendingAck, PendingNack, PendingSend, Transactions

log = Logger()

SERVER = "qgate/0.1"
#: The tenant of a client that names no virtual host, where the authenticator believes
#: what clients name and has no default of its own.
DEFAULT_TENANT = "default"

#: Frames whose effects in the core are batched per chunk of input (in order among them).
BATCHED = frozenset({"SEND", "ACK", "NACK"})


class SessionState(enum.Enum):
    """Where a session is: NEW -> CONNECTING (authenticating) -> CONNECTED, then CLOSING
    (an ERROR frame, or the DISCONNECT's RECEIPT after DISCONNECTING) and CLOSED (the
    connection has ended, from any state)."""

    NEW = "new"
    CONNECTING = "connecting"
    CONNECTED = "connected"
    #: DISCONNECT received: no frame is handled and nothing more is delivered; its RECEIPT
    #: waits for what earlier frames asked of the core.
    DISCONNECTING = "disconnecting"
    #: ERROR (or the DISCONNECT's RECEIPT) written: nothing else goes out; closing.
    CLOSING = "closing"
    CLOSED = "closed"


#: Plain names for the states: the state is checked on every frame, and an Enum attribute
#: lookup costs several times a global one.
NEW = SessionState.NEW
CONNECTING = SessionState.CONNECTING
CONNECTED = SessionState.CONNECTED
DISCONNECTING = SessionState.DISCONNECTING
CLOSING = SessionState.CLOSING
CLOSED = SessionState.CLOSED
#: No frame is handled any more.
ENDING = (DISCONNECTING, CLOSING, CLOSED)
#: No frame is written any more (but ERROR or the final RECEIPT that got it there).
CLOSED_OR_CLOSING = (CLOSING, CLOSED)


class StompSession:
    """One STOMP connection's state: version, tenant, subscriptions, transactions."""

    def __init__(
        self, ctx: ProtocolContext[StompSettings], link: Link, versions: Sequence[str] = VERSIONS
    ) -> None:
        # What the session takes from the protocol context, all of it here.
        self.service = ctx.service
        self.auth = ctx.auth
        self.config = ctx.settings
        self.metrics = ctx.metrics
        self.link = link
        self.versions = tuple(v for v in VERSIONS if v in versions)
        self.session_id = uuid.uuid4().hex
        self.version = V10
        self.tenant = ""
        #: This connection in the core (counted against the tenant's quotas), once
        #: CONNECTED; ``tenant`` is then its principal.
        self.quota: TenantSession | None = None
        self.state: SessionState = NEW
        self.destinations = Destinations(self)
        limits = self.service.limits
        # Seconds a queue subscription's claim is leased for (``[stomp] lease`` within the
        # core's bounds). Renewed every third of it while the connection lives, so the
        # messages of a crashed process come back within one lease.
        self.lease = float(min(max(self.config.lease, limits.min_lease), limits.max_lease))
        self.consumers = Consumers(
            self, self.config.prefetch, self.lease, self.config.max_subscriptions
        )
        self.sender = Sender(self)
        self.transactions = Transactions(
            limits.max_batch, self.config.max_transactions, self.config.max_transaction_bytes
        )
        self._pending: set[Deferred[Any]] = set()
        self._renewer: IDelayedCall | None = None
        self.batching = False

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
        if self.consumers.queued:
            self.consumers.flush()

    # -- frames in -------------------------------------------------------------------------

    def frame_received(self, frame: Frame) -> Deferred[Any] | None:
        """Handle one frame. A Deferred returned means: read no further frame until it
        fires (CONNECT, SUBSCRIBE, COMMIT, DISCONNECT, and SEND past the flow bound)."""
        if self.state in ENDING:
            return None
        if self.version == V10 and self.state is CONNECTED:
            frame = trim_10(frame)
        if frame.command not in BATCHED and (self.sender.queued or self.consumers.queued):
            # Frames take effect in order: what SENDs and ACKs queued goes first.
            self.flush()
        handler = HANDLERS.get(frame.command)
        try:
            if handler is None:
                raise StompError(f"unknown command {frame.command[:40]!r}")
            connecting = frame.command in ("CONNECT", "STOMP")
            if self.state is NEW and not connecting:
                raise StompError(f"{frame.command} before CONNECT")
            if self.state is not NEW and connecting:
                raise StompError("already connected")
            if frame.command == "NACK" and self.version == V10:
                raise StompError("NACK is not part of STOMP 1.0")
            d = handler(self, frame)
        except (StompError, QGateError) as e:
            self.fail_with(e, frame)
            return None
        except Exception as e:  # noqa: BLE001 - a bug of ours: an ERROR, logged, not a crash
            log.failure("handling a {command} frame failed", command=frame.command)
            self.fail_with(e, frame)
            return None
        if d is None:
            return None
        return self.guard(d, frame)

    def guard(self, d: Deferred[Any], frame: Frame | None) -> Deferred[Any]:
        """Track ``d`` until it fires; a failure becomes an ERROR frame."""
        self._pending.add(d)
        d.addBoth(self._unguard, d, frame)
        return d

    def track(self, d: Deferred[Any]) -> None:
        """Follow a core call nobody waits for: DISCONNECT waits for it, a failure is an
        ERROR frame."""
        self.guard(d, None)

    def _unguard(self, result: Any, d: Deferred[Any], frame: Frame | None) -> Any:
        self._pending.discard(d)
        if isinstance(result, Failure):
            if not result.check(CancelledError):
                self.fail_with(error_of(result), frame)
            return None
        return result

    def receipt(self, frame: Frame) -> None:
        receipt = frame.get("receipt")
        if receipt is not None and self.state not in CLOSED_OR_CLOSING:
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
        if self.state in CLOSED_OR_CLOSING:
            return
        self.state = CLOSING
        self._stop_all()
        out = [("message", message)]
        if frame is not None and frame.get("receipt") is not None:
            out.append(("receipt-id", frame.headers["receipt"]))
        out.extend((headers or {}).items())
        body = (detail or message).encode("utf-8")
        out += [("content-type", "text/plain;charset=utf-8"), ("content-length", str(len(body)))]
        self.link.send("ERROR", out, body)
        self.link.close()

    def protocol_error(self, error: FrameError) -> None:
        self.fail(str(error), None, f"{type(error).__name__}: {error}")

    def heartbeat_timeout(self) -> None:
        self.fail("heart-beat timeout: nothing received from the client in time")

    def timed_out(self, why: str) -> None:
        self.fail(why)

    def output_overflow(self) -> None:
        self.fail(
            "slow consumer: the client does not read its messages",
            detail=f"more than {self.config.max_output_buffer} bytes wait to be read",
        )

    def output_resumed(self) -> None:
        self.consumers.kick_all()

    def _stop_all(self) -> None:
        """Stop every subscription (unacked messages go back) and drop transactions; what
        earlier frames queued for the core still goes to it."""
        self.flush()
        if self._renewer is not None and self._renewer.active():
            self._renewer.cancel()
        self._renewer = None
        self.consumers.stop_all()
        # STOMP 1.2: transactions still open when the connection ends are aborted.
        self.transactions.clear()

    def connection_lost(self) -> None:
        if self.state is CLOSED:
            return
        self.state = CLOSED
        self._stop_all()
        self.destinations.delete_temp_queues()
        self.sender.release()
        if self.quota is not None:
            self.quota.close()

    def key_revoked(self, why: str) -> None:
        """The API key this connection authenticated with was revoked: ERROR, close."""
        self.fail("Authentication failed", None, why)

    # -- CONNECT ---------------------------------------------------------------------------

    def _on_connect(self, frame: Frame) -> Deferred[Any]:
        version = accepted_version(frame, self.versions)
        client_send = client_want = 0
        if version != V10:
            client_send, client_want = heart_beat(frame.get("heart-beat", "0,0") or "0,0")
        self.version = version
        host = frame.get("host") or ""
        if self.auth.needs_token:
            # The passcode is the API key; a login, when given, must be the key's tenant.
            claimed: str | None = frame.get("login") or None
            token = frame.get("passcode")
        else:
            # The virtual host names the tenant; "/" is RabbitMQ's default vhost.
            claimed = host if host not in ("", "/") else None
            token = None
        self.state = CONNECTING
        peer = getattr(self.link, "peer", None)
        d: Deferred[str] = self.auth.authenticate(
            claimed, token, assumed=DEFAULT_TENANT, peer=peer
        )
        return d.addCallback(self._connected, version, client_send, client_want)

    def _connected(self, tenant: str, version: str, client_send: int, client_want: int) -> None:
        if self.state is not CONNECTING:
            return
        self.quota = open_session(self.service, tenant, self.key_revoked)
        self.tenant = self.quota.principal
        self.state = CONNECTED
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

    def _schedule_renew(self) -> None:
        self._renewer = self.service.clock.callLater(self.lease / 3, self._renew)

    def _renew(self) -> None:
        self._renewer = None
        if self.state is not CONNECTED:
            return
        self.consumers.renew()
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
        send = PendingSend(kind, name, message, options)
        reply_to = frame.get("reply-to")
        if kind == "temp-queue" or (reply_to or "").startswith("/temp-queue/"):
            # Temporary queues are made first, so the rest waits for them (input held).
            return Deferred.fromCoroutine(self._send_temp(frame, send))
        self._send(frame, send)
        held = self.sender.hold()
        if held is None and self.quota is not None:
            # The tenant's publish rate: stop reading this producer until it may go on.
            delay = self.quota.publish_delay()
            if delay > 0:
                return deferLater(self.service.clock, delay, lambda: None)
        return held

    async def _send_temp(self, frame: Frame, send: PendingSend) -> None:
        reply_to = frame.get("reply-to") or ""
        if reply_to.startswith("/temp-queue/"):
            _, temp = self.destinations.parse(reply_to)
            core = await self.destinations.temp_queue(temp)
            await self.consumers.auto_subscribe(temp, core)
            headers = dict(send.message.headers)
            headers["reply-to"] = f"/reply-queue/{core}"
            send = replace(send, message=replace(send.message, headers=headers))
        if send.kind == "temp-queue":
            send = replace(send, kind="queue", name=await self.destinations.temp_queue(send.name))
        self._send(frame, send)

    def _send(self, frame: Frame, send: PendingSend) -> None:
        tx = frame.get("transaction")
        if tx is not None:
            # STOMP 1.2: a SEND in a transaction takes effect on COMMIT.
            self.transactions.keep(tx, send)
            self.receipt(frame)
            return
        self.sender.queue(frame, (send.kind, send.name), send.message, send.options)

    # -- SUBSCRIBE, UNSUBSCRIBE, ACK, NACK -------------------------------------------------

    def _on_subscribe(self, frame: Frame) -> Deferred[Any]:
        return self.consumers.on_subscribe(frame)

    def _on_unsubscribe(self, frame: Frame) -> None:
        self.consumers.on_unsubscribe(frame)

    def _on_ack(self, frame: Frame) -> None:
        self._settle_frame(frame, True)

    def _on_nack(self, frame: Frame) -> None:
        self._settle_frame(frame, False)

    def _settle_frame(self, frame: Frame, positive: bool) -> None:
        tag = self.consumers.tag_of(frame)
        tx = frame.get("transaction")
        if tx is not None:
            # STOMP 1.2: an ACK in a transaction takes effect on COMMIT.
            self.transactions.keep(tx, PendingAck(tag) if positive else PendingNack(tag))
            self.receipt(frame)
            return
        self.guard(self._then_receipt(self.consumers.settle(tag, positive), frame), frame)

    # -- transactions ----------------------------------------------------------------------

    def _on_begin(self, frame: Frame) -> None:
        self.transactions.begin(require(frame, "transaction"))
        self.receipt(frame)

    def _on_abort(self, frame: Frame) -> None:
        self.transactions.abort(require(frame, "transaction"))
        self.receipt(frame)

    def _on_commit(self, frame: Frame) -> Deferred[Any]:
        tx = require(frame, "transaction")
        d = self.transactions.commit(tx, self.sender.publish, self.consumers.settle)
        return d.addCallback(self._receipt_cb(frame))

    # -- DISCONNECT ------------------------------------------------------------------------

    def _on_disconnect(self, frame: Frame) -> Deferred[Any]:
        """STOMP 1.2: graceful shutdown; the RECEIPT comes once every earlier frame has
        taken effect, then the server closes."""
        pending = list(self._pending)
        self.state = DISCONNECTING
        self.consumers.halt_all()
        d: Deferred[Any] = DeferredList(pending, consumeErrors=True)

        def finish(_: Any) -> None:
            if self.state is not DISCONNECTING:
                return
            self.receipt_final(frame)

        return d.addCallback(finish)

    def receipt_final(self, frame: Frame) -> None:
        receipt = frame.get("receipt")
        self.state = CLOSING
        self._stop_all()
        if receipt is not None:
            self.link.send("RECEIPT", [("receipt-id", receipt)])
        self.link.close()


#: The handler of each client frame: one table for every session (a table of bound
#: methods would cost each connection about a kilobyte).
HANDLERS: dict[str, Callable[[StompSession, Frame], Deferred[Any] | None]] = {
    "CONNECT": StompSession._on_connect,
    "STOMP": StompSession._on_connect,
    "SEND": StompSession._on_send,
    "SUBSCRIBE": StompSession._on_subscribe,
    "UNSUBSCRIBE": StompSession._on_unsubscribe,
    "ACK": StompSession._on_ack,
    "NACK": StompSession._on_nack,
    "BEGIN": StompSession._on_begin,
    "COMMIT": StompSession._on_commit,
    "ABORT": StompSession._on_abort,
    "DISCONNECT": StompSession._on_disconnect,
}
