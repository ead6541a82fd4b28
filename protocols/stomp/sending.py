"""SEND to the core: publishes batched per chunk of input, and producer flow control.

Batching: the SENDs (per destination) of one chunk of input reach the core as one
``publish`` call each, when the link says the chunk is done (the session's
``input_done``). Any other frame first flushes what is queued, so frames still take
effect in order; a batch the core refuses is retried SEND by SEND, so the error lands on
the SEND that caused it. RECEIPTs still come per frame, after the core has stored what
the frame asked for.

Flow control: while too many publishes (or bytes) are in flight, the session holds the
producer's input (``hold``) until half of them have been committed.
"""

from __future__ import annotations

from typing import Any, Protocol

from twisted.internet.defer import CancelledError, Deferred
from twisted.logger import Logger
from twisted.python.failure import Failure

from qgate.core.errors import QGateError, QueueNotFound
from qgate.core.model import NewMessage, QueueOptions
from qgate.protocols.stomp.codec import Frame
from qgate.protocols.stomp.destinations import Destinations, QueueOwner
from qgate.protocols.stomp.errors import error_of

log = Logger()

#: Producer flow control: input is paused while this many publishes (or bytes) are in
#: flight, and resumed once half of them have been committed.
MAX_INFLIGHT_PUBLISHES = 512
MAX_INFLIGHT_BYTES = 8 * 1024 * 1024


class SendingSession(QueueOwner, Protocol):
    """What the sender needs from its session."""

    @property
    def destinations(self) -> Destinations: ...

    @property
    def batching(self) -> bool:
        """True while the link hands over the frames of one chunk of input."""

    def receipt(self, frame: Frame) -> None: ...

    def fail_with(self, error: BaseException, frame: Frame | None = None) -> None: ...

    def track(self, d: Deferred[Any]) -> None: ...


class _SendBatch:
    """SENDs to one destination received in one chunk of input, published as one batch."""

    __slots__ = ("kind", "name", "options", "messages", "frames", "receipts")

    def __init__(self, to: tuple[str, str], options: QueueOptions | None) -> None:
        self.kind, self.name = to
        self.options = options
        self.messages: list[NewMessage] = []
        self.frames: list[Frame] = []
        self.receipts = False

    def add(self, message: NewMessage, frame: Frame, options: QueueOptions | None) -> None:
        self.messages.append(message)
        self.frames.append(frame)
        if "receipt" in frame.headers:
            self.receipts = True
        if self.options is None:
            self.options = options  # the queue is made (on first use) as any SEND says


class Sender:
    """One connection's SENDs on their way to the core."""

    __slots__ = (
        "session",
        "service",
        "_known",
        "_sends",
        "_inflight",
        "_inflight_bytes",
        "_drained",
    )

    def __init__(self, session: SendingSession) -> None:
        self.session = session
        self.service = session.service
        self._known = session.destinations.known
        self._sends: dict[tuple[str, str], _SendBatch] = {}
        self._inflight = 0
        self._inflight_bytes = 0
        self._drained: Deferred[None] | None = None

    @property
    def queued(self) -> bool:
        """Whether SENDs wait for the end of the chunk of input."""
        return bool(self._sends)

    def queue(
        self, frame: Frame, to: tuple[str, str], message: NewMessage, options: QueueOptions | None
    ) -> None:
        """Publish a SEND's message to ``to`` (kind, name), with the SENDs of this chunk
        of input to the same destination."""
        # Consecutive SENDs to one destination go to the core as one publish: the ones
        # in this chunk of input are stored when it is done (``input_done``).
        self._inflight += 1
        self._inflight_bytes += len(message.body)
        batch = self._sends.get(to)
        if batch is None:
            batch = self._sends[to] = _SendBatch(to, options)
        batch.add(message, frame, options)
        if not self.session.batching:
            self.flush()
        elif len(batch.messages) >= self.service.limits.max_batch:
            del self._sends[to]
            self._publish_batch(batch)

    def flush(self) -> None:
        """Hand the queued SENDs to the core now."""
        sends, self._sends = self._sends, {}
        for batch in sends.values():
            self._publish_batch(batch)

    def _publish_batch(self, batch: _SendBatch) -> None:
        d = self.publish(batch.kind, batch.name, batch.messages, batch.options, True)
        d.addCallbacks(self._sent, self._send_failed, callbackArgs=(batch,), errbackArgs=(batch,))
        self.session.track(d)

    def _sent(self, _: object, batch: _SendBatch) -> None:
        if batch.receipts:
            for frame in batch.frames:
                self.session.receipt(frame)

    def _send_failed(self, failure: Failure, batch: _SendBatch) -> Deferred[None] | None:
        if len(batch.messages) > 1 and failure.check(QGateError):
            # A batch is stored whole or not at all; SENDs are one by one: store them one
            # by one up to the one that fails, as if they had never been batched.
            return Deferred.fromCoroutine(self._send_one_by_one(batch))
        if not failure.check(CancelledError):
            self.session.fail_with(error_of(failure), batch.frames[0])
        return None

    async def _send_one_by_one(self, batch: _SendBatch) -> None:
        for message, frame in zip(batch.messages, batch.frames, strict=True):
            try:
                await self.publish(batch.kind, batch.name, [message], batch.options)
            except QGateError as e:
                self.session.fail_with(e, frame)
                return
            self.session.receipt(frame)

    def publish(
        self,
        kind: str,
        name: str,
        messages: list[NewMessage],
        options: QueueOptions | None,
        counted: bool = False,
    ) -> Deferred[Any]:
        """Publish ``messages`` (counted in flight until stored, for flow control)."""
        size = sum(len(m.body) for m in messages)
        if not counted:
            self._inflight += len(messages)
            self._inflight_bytes += size
        if kind != "reply-queue" and name in self._known:
            # The hot path: a plain Deferred chain, no coroutine.
            d = self.service.publish(self.session.tenant, name, messages)
        else:
            d = Deferred.fromCoroutine(self._publish_first(kind, name, messages, options))
        return d.addBoth(self._published, len(messages), size)

    async def _publish_first(
        self, kind: str, name: str, messages: list[NewMessage], options: QueueOptions | None
    ) -> None:
        tenant = self.session.tenant
        if kind == "reply-queue":
            try:
                await self.service.publish(tenant, name, messages, create=False)
            except QueueNotFound:
                # RabbitMQ: a reply to a requester that has gone is dropped.
                log.debug("reply to a closed temporary queue {name} dropped", name=name)
            return
        await self.session.destinations.ensure_queue(name, options)
        await self.service.publish(tenant, name, messages)

    def _published(self, result: Any, count: int, size: int) -> Any:
        self._inflight -= count
        self._inflight_bytes -= size
        self._maybe_drained()
        return result

    def hold(self) -> Deferred[None] | None:
        """Back-pressure on a producer faster than storage: hold its input while too
        many publishes are in flight (the link pauses the transport meanwhile)."""
        if self._inflight < MAX_INFLIGHT_PUBLISHES and self._inflight_bytes < MAX_INFLIGHT_BYTES:
            return None
        if self._drained is None:
            self._drained = Deferred()
        return self._drained

    def _maybe_drained(self) -> None:
        if (
            self._drained is not None
            and self._inflight <= MAX_INFLIGHT_PUBLISHES // 2
            and self._inflight_bytes <= MAX_INFLIGHT_BYTES // 2
        ):
            drained, self._drained = self._drained, None
            drained.callback(None)

    def release(self) -> None:
        """The connection has ended: input held for flow control is let go."""
        drained, self._drained = self._drained, None
        if drained is not None:
            drained.callback(None)
