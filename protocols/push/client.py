"""One push attempt over HTTP: a POST through twisted.web's Agent with checked
connections (``safety``), no redirects followed (Agent follows none), a deadline over
the whole attempt, and at most ``max_response_bytes`` of the answer read."""

from __future__ import annotations

import email.utils
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from twisted.internet import defer, protocol
from twisted.internet.error import ConnectionDone, TimeoutError
from twisted.python.failure import Failure
from twisted.web.client import Agent, HTTPConnectionPool, ResponseDone
from twisted.web.http import PotentialDataLoss
from twisted.web.http_headers import Headers
from twisted.web.iweb import IBodyProducer
from zope.interface import Interface, implementer

from qgate.protocols.push.safety import CheckedEndpoints, TargetRefused, trust_root
from qgate.protocols.push.settings import PushSettings


@dataclass(frozen=True)
class PushRequest:
    """What one attempt sends."""

    url: str
    headers: Mapping[str, str]
    body: bytes


@dataclass(frozen=True)
class Outcome:
    """How one attempt ended: ``status`` (None: no answer), ``retry_after`` seconds
    (429/503 that name one), ``error`` (None when delivered), ``refused`` (a target the
    safety rules refuse: given up at once)."""

    status: int | None
    error: str | None = None
    retry_after: float | None = None
    body: bytes = b""
    refused: bool = False
    skipped: bool = False  # a hook skipped the attempt: nothing was sent

    @property
    def delivered(self) -> bool:
        return self.status is not None and 200 <= self.status < 300


class IPusher(Interface):
    """Sends push attempts (``HTTPPusher``; tests may give the dispatcher another)."""

    def push(request):
        """-> Deferred[Outcome]; never fails."""

    def close():
        """-> Deferred[None] once idle connections are closed."""


def retry_after(value: str | None, now: float) -> float | None:
    """Seconds a ``Retry-After`` header asks for (delta-seconds or an HTTP-date)."""
    if not value:
        return None
    value = value.strip()
    if value.isdigit():
        return float(value)
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    return max(0.0, when.timestamp() - now)


def _stop(transport: Any) -> None:
    """Stops a response body's transfer (the connection is closed, not reused)."""
    if transport is not None:
        transport.stopProducing()


@implementer(IBodyProducer)
class _Body:
    """A request body that is all there at once."""

    def __init__(self, body: bytes) -> None:
        self._body = body
        self.length = len(body)

    def startProducing(self, consumer: Any) -> defer.Deferred[None]:  # noqa: N802 - Twisted
        consumer.write(self._body)
        return defer.succeed(None)

    def pauseProducing(self) -> None:  # noqa: N802
        pass

    def resumeProducing(self) -> None:  # noqa: N802
        pass

    def stopProducing(self) -> None:  # noqa: N802
        pass


class _Bounded(protocol.Protocol):
    """Reads an answer's body up to ``limit`` bytes, then stops the transfer."""

    def __init__(self, limit: int, done: defer.Deferred[bytes]) -> None:
        self._limit = limit
        self._done = done
        self._parts: list[bytes] = []
        self._size = 0

    def dataReceived(self, data: bytes) -> None:  # noqa: N802 - Twisted's name
        if self._done.called:
            return
        room = self._limit - self._size
        self._parts.append(data[:room])
        self._size += min(len(data), room)
        if self._size >= self._limit:
            self._done.callback(b"".join(self._parts))
            _stop(self.transport)  # the rest is not read

    def connectionLost(self, reason: Failure = protocol.connectionDone) -> None:  # noqa: N802
        if not self._done.called:
            if reason.check(ResponseDone, PotentialDataLoss, ConnectionDone):
                self._done.callback(b"".join(self._parts))
            else:
                self._done.errback(reason)


@implementer(IPusher)
class HTTPPusher:
    """Real HTTP: persistent connections per host, each one checked when made."""

    def __init__(self, reactor: Any, settings: PushSettings) -> None:
        self._reactor = reactor
        self._settings = settings
        self._pool = HTTPConnectionPool(reactor, persistent=True)
        # Idle connections kept per host: subscriptions of one host share them.
        self._pool.maxPersistentPerHost = max(100, settings.max_concurrent_requests)
        self._pool.retryAutomatically = False  # a retried POST is the dispatcher's call
        endpoints = CheckedEndpoints(
            reactor,
            allow_private=settings.allow_private_targets,
            trust=trust_root(settings.ca_bundle),
            timeout=settings.timeout,
        )
        self._agent = Agent.usingEndpointFactory(reactor, endpoints, pool=self._pool)

    async def _attempt(self, request: PushRequest) -> Outcome:
        headers = Headers(
            {k.encode("latin-1"): [v.encode("latin-1")] for k, v in request.headers.items()}
        )
        response = await self._agent.request(
            b"POST", request.url.encode("ascii"), headers, _Body(request.body)
        )
        reader: list[_Bounded] = []

        def abort(_: defer.Deferred[bytes]) -> None:  # the deadline passed mid-body
            if reader:
                _stop(reader[0].transport)

        done: defer.Deferred[bytes] = defer.Deferred(abort)
        reader.append(_Bounded(self._settings.max_response_bytes, done))
        response.deliverBody(reader[0])
        body = await done
        status = int(response.code)
        if 200 <= status < 300:
            return Outcome(status, body=body)
        wait = None
        if status in (429, 503):
            values = response.headers.getRawHeaders(b"retry-after") or [b""]
            wait = retry_after(values[0].decode("latin-1"), self._reactor.seconds())
            if wait is not None:
                wait = min(wait, self._settings.max_retry_after)
        return Outcome(status, f"HTTP {status}", wait, body)

    def push(self, request: PushRequest) -> defer.Deferred[Outcome]:
        attempt = defer.Deferred.fromCoroutine(self._attempt(request))
        attempt.addTimeout(self._settings.timeout, self._reactor)

        def failed(failure: Failure) -> Outcome:
            if failure.check(TargetRefused):
                return Outcome(None, f"refused: {failure.value}", refused=True)
            if failure.check(TimeoutError, defer.CancelledError):
                return Outcome(None, f"timed out after {self._settings.timeout:g} s")
            kind = type(failure.value).__name__
            text = failure.getErrorMessage() or kind
            return Outcome(None, f"{kind}: {text}"[:300])

        attempt.addErrback(failed)
        return attempt

    def close(self) -> defer.Deferred[None]:
        closed: defer.Deferred[None] = self._pool.closeCachedConnections()
        return closed
