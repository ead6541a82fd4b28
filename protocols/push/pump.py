"""``Pump``: the delivery of one push subscription while this dispatcher holds its lease.

It takes deliveries from the subscription's position into a window (``[push] window``),
waits for publishes with the core's observe wait when the log has nothing more, and
sends each due delivery when a request slot (``max_concurrent_requests``) and a token
(``max_dispatches_per_second``) are free. Every attempt is settled in storage before
the next is planned, so what the pump holds in memory is only a cache: a pump started
on another process after a crash finds the same deliveries, due at the same times.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Sequence
from typing import Any

from twisted.internet import defer, task
from twisted.internet.interfaces import IDelayedCall, IReactorTime
from twisted.logger import Logger
from twisted.python.failure import Failure

from qgate.core.errors import QGateError
from qgate.core.interfaces import IQueueService
from qgate.core.metrics import PUSH_DELIVERED, PUSH_FAILED, IMetrics, NullMetrics
from qgate.core.model import Delivery, Message, Queue, Settlement, Subscription
from qgate.core.push_policy import PushOptions, RetryPolicy, parse_push_options, resolve
from qgate.protocols.push.client import IPusher, Outcome
from qgate.protocols.push.hooks import Task, run_after, run_before
from qgate.protocols.push.payload import build_request
from qgate.protocols.push.settings import PushSettings

log = Logger()

#: Seconds one observe wait lasts before the pump looks again.
WAIT = 30.0


class TokenBucket:
    """``rate`` tokens a second, at most ``burst`` saved; rate 0: no limit."""

    def __init__(self, clock: IReactorTime, rate: float, burst: int) -> None:
        self._clock = clock
        self.rate = rate
        self.burst = float(burst or max(1, int(rate)))
        self._tokens = self.burst
        self._last = clock.seconds()

    def take(self) -> float:
        """0 when a token was taken, else seconds until one is there."""
        if self.rate <= 0:
            return 0.0
        now = self._clock.seconds()
        self._tokens = min(self.burst, self._tokens + (now - self._last) * self.rate)
        self._last = now
        if self._tokens >= 1:
            self._tokens -= 1
            return 0.0
        return (1 - self._tokens) / self.rate


class Pump:
    """Delivers one subscription (``start`` .. ``stop``)."""

    def __init__(
        self,
        service: IQueueService,
        clock: IReactorTime,
        pusher: IPusher,
        settings: PushSettings,
        owner: str,
        tenant: str,
        subscription: Subscription,
        hooks: Sequence[Any] = (),
        metrics: IMetrics | None = None,
    ) -> None:
        self._service = service
        self._metrics: IMetrics = metrics or NullMetrics()
        self._clock = clock
        self._pusher = pusher
        self._settings = settings
        self._owner = owner
        self.tenant = tenant
        self.subscription = subscription
        self._hooks = hooks
        self._pending: dict[int, Delivery] = {}
        self._timers: dict[int, IDelayedCall] = {}
        self._ready: deque[int] = deque()
        self._flying: dict[int, defer.Deferred[None]] = {}  # attempts not settled yet
        # Attempts whose request is on the wire: what max_concurrent_requests counts. A
        # request's slot is free once its answer is in, before its settlement is committed,
        # so settlements of many attempts share one commit.
        self._sending: set[int] = set()
        self._position = subscription.marker
        self._waits: set[defer.Deferred[Any]] = set()
        self._room: defer.Deferred[None] | None = None
        self._kicker: IDelayedCall | None = None
        self._queue: Queue | None = None
        # Messages of pending deliveries, read in one call per take (not one per attempt).
        self._messages: dict[int, Message] = {}
        self._running = False
        self._configure()

    # -- life cycle ------------------------------------------------------------------------

    def start(self) -> None:
        self._running = True
        feeding = defer.Deferred.fromCoroutine(self._feed())
        feeding.addErrback(
            lambda f: (
                None
                if f.check(defer.CancelledError)
                else log.failure("push pump of {sid} stopped", f, sid=self.subscription.id)
            )
        )

    def update(self, subscription: Subscription) -> None:
        """The subscription as the last lease round read it (options may have changed);
        the queue's metadata (its retry policy) is read again too."""
        self.subscription = subscription
        self._queue = None
        self._configure()

    def stop(self) -> defer.Deferred[None]:
        """Stops planning; fires once the attempts in flight have ended."""
        self._running = False
        for timer in self._timers.values():
            timer.cancel()
        self._timers.clear()
        if self._kicker is not None and self._kicker.active():
            self._kicker.cancel()
        for wait in list(self._waits):
            wait.cancel()
        flying = list(self._flying.values())
        done = defer.DeferredList(flying, consumeErrors=True)
        return done.addCallback(lambda _: None)

    @property
    def in_flight(self) -> int:
        """Attempts started and not settled yet."""
        return len(self._flying)

    def _configure(self) -> None:
        try:
            self._options = parse_push_options(self.subscription.options)
        except QGateError:  # stored before qgate checked options
            self._options = PushOptions({})
        s = self._settings
        self._concurrency = self._options.max_concurrent_requests or s.max_concurrent_requests
        rate = self._options.max_dispatches_per_second or s.max_dispatches_per_second
        burst = self._options.max_burst_size or s.max_burst_size
        current = getattr(self, "_bucket", None)
        if current is None or current.rate != rate:
            self._bucket = TokenBucket(self._clock, rate, burst)
        self._kick()

    # -- taking deliveries -----------------------------------------------------------------

    async def _wait(self, d: defer.Deferred[Any]) -> Any:
        self._waits.add(d)
        try:
            return await d
        finally:
            self._waits.discard(d)

    async def _pause(self, seconds: float) -> None:
        await self._wait(task.deferLater(self._clock, seconds, lambda: None))

    async def _feed(self) -> None:
        sid, queue = self.subscription.id, self.subscription.queue
        while self._running:
            try:
                for d in await self._wait(
                    self._service.pending_deliveries(self.tenant, queue, sid)
                ):
                    self._add(d)
                break
            except QGateError as e:
                log.warn("push {sid}: pending deliveries not read: {e}", sid=sid, e=e)
                await self._pause(self._settings.scan_interval)
        saw_more = False
        while self._running:
            room = self._settings.window - len(self._pending)
            if room <= 0:
                self._room = defer.Deferred()
                await self._wait(self._room)
                continue
            try:
                taken = await self._wait(
                    self._service.take_deliveries(self.tenant, queue, sid, self._owner, room)
                )
                if taken:
                    saw_more = False
                    await self._read_messages([d.marker for d in taken])
                    for d in taken:
                        self._add(d)
                    continue
                if saw_more:  # the log has more, but we may not take it: lease lost?
                    await self._pause(self._settings.scan_interval)
                found = await self._wait(
                    self._service.observe(
                        self.tenant,
                        queue,
                        after=str(self._position),
                        limit=1,
                        include_claimed=True,
                        include_delayed=True,
                        wait=WAIT,
                    )
                )
                saw_more = bool(found)
            except QGateError as e:
                log.warn("push {sid}: cannot take deliveries: {e}", sid=sid, e=e)
                await self._pause(self._settings.scan_interval)
            except defer.CancelledError:
                raise
            except Exception:  # noqa: BLE001 - a bug must not stop this subscription for good
                log.failure("push {sid}: taking deliveries failed", sid=sid)
                await self._pause(self._settings.scan_interval)

    async def _read_messages(self, markers: list[int]) -> None:
        found = await self._wait(
            self._service.get_messages(
                self.tenant, self.subscription.queue, [str(m) for m in markers]
            )
        )
        for message in found:
            self._messages[message.marker] = message

    def _add(self, d: Delivery) -> None:
        self._pending[d.marker] = d
        self._position = max(self._position, d.marker)
        self._plan(d)

    def _plan(self, d: Delivery) -> None:
        if not self._running:
            return
        wait = d.next_at - self._clock.seconds()
        if wait > 0:
            self._timers[d.marker] = self._clock.callLater(wait, self._due, d.marker)
        else:
            self._due(d.marker)

    def _due(self, marker: int) -> None:
        self._timers.pop(marker, None)
        self._ready.append(marker)
        self._kick()

    def _kick(self) -> None:
        """Starts the due deliveries that a request slot and a token allow."""
        if not getattr(self, "_running", False):
            return
        while self._ready and len(self._sending) < self._concurrency:
            wait = self._bucket.take()
            if wait > 0:
                if self._kicker is None or not self._kicker.active():
                    self._kicker = self._clock.callLater(wait, self._kick)
                return
            marker = self._ready.popleft()
            if marker not in self._pending or marker in self._flying:
                continue
            self._sending.add(marker)
            attempt = defer.Deferred.fromCoroutine(self._attempt(self._pending[marker]))
            self._flying[marker] = attempt
            attempt.addErrback(self._crashed, marker)
            attempt.addBoth(self._landed, marker)

    def _crashed(self, failure: Failure, marker: int) -> None:
        log.failure("push attempt of {m} failed", failure, m=marker)
        d = self._pending.get(marker)
        if d is not None:  # tried again later, like a storage outage
            later = self._clock.seconds() + self._settings.scan_interval
            self._plan(Delivery(marker, d.attempts, later, d.taken_at))

    def _answered(self, marker: int) -> None:
        """The request of an attempt is over: its slot goes to the next due delivery."""
        if marker in self._sending:
            self._sending.discard(marker)
            self._kick()

    def _landed(self, _: object, marker: int) -> None:
        self._flying.pop(marker, None)
        self._sending.discard(marker)
        if marker not in self._pending and self._room is not None and not self._room.called:
            self._room.callback(None)
        self._kick()

    # -- one attempt -----------------------------------------------------------------------

    async def _queue_now(self) -> Queue:
        if self._queue is None:
            self._queue = await self._service.get_queue(self.tenant, self.subscription.queue)
        return self._queue

    async def _attempt(self, d: Delivery) -> None:
        sub = self.subscription
        try:
            await self._try(sub, d)
        except QGateError as e:  # storage away: the delivery stays pending, tried later
            log.warn("push {sid}: attempt not settled: {e}", sid=sub.id, e=e)
            retry = Delivery(d.marker, d.attempts, self._clock.seconds() + 1.0, d.taken_at)
            self._pending[d.marker] = retry
            self._plan(retry)

    async def _try(self, sub: Subscription, d: Delivery) -> None:
        tenant, queue = self.tenant, sub.queue
        message = self._messages.get(d.marker)
        if message is None:
            found = await self._service.get_messages(tenant, queue, [str(d.marker)])
            message = found[0] if found else None
        if message is None or message.expires_at <= self._clock.seconds():
            # expired or deleted before it could be delivered
            self._answered(d.marker)
            await self._settle(d, Settlement.GIVEN_UP, error="message gone before delivery")
            return
        decoded: dict[int, Any] = {}
        if message.content_type.startswith("avro/"):
            decoded = dict(await self._service.decode_bodies(tenant, queue, [message]))
        number = d.attempts + 1
        request = build_request(
            sub.subscriber, queue, sub.id, message, number, self._options, decoded
        )
        job = Task(tenant, queue, sub.id, d.marker, number, request)
        changed = run_before(self._hooks, job)
        if changed is None:
            self._answered(d.marker)
            outcome = Outcome(None, skipped=True)
            await self._settle(d, Settlement.DELIVERED)
            run_after(self._hooks, job, outcome)
            return
        job = changed
        outcome = await self._pusher.push(job.request)
        self._answered(d.marker)
        run_after(self._hooks, job, outcome)
        if outcome.delivered:
            self._metrics.count(PUSH_DELIVERED, protocol="push")
            await self._settle(d, Settlement.DELIVERED)
            return
        self._metrics.count(PUSH_FAILED, protocol="push")
        q = await self._queue_now()
        policy: RetryPolicy = resolve(sub.options, q.metadata)
        now = self._clock.seconds()
        if outcome.refused or policy.gives_up(number, message.age(now)):
            await self._service.dead_letter_push(tenant, queue, message)
            await self._settle(d, Settlement.GIVEN_UP, error=outcome.error)
            return
        delay = policy.delay(number)
        if outcome.retry_after is not None:
            delay = max(delay, outcome.retry_after)
        await self._settle(d, Settlement.RETRY, now + delay, outcome.error)

    async def _settle(
        self, d: Delivery, how: Settlement, next_at: float = 0.0, error: str | None = None
    ) -> None:
        sub = self.subscription
        await self._service.settle_delivery(
            self.tenant, sub.queue, sub.id, d.marker, how, next_at, error
        )
        if how is Settlement.RETRY:
            retry = Delivery(d.marker, d.attempts + 1, next_at, d.taken_at)
            self._pending[d.marker] = retry
            self._plan(retry)
        else:
            self._pending.pop(d.marker, None)
            self._messages.pop(d.marker, None)
