"""``ThrottledAuth``: failed authentications are rate limited per client address.

Wraps any ``IAuthenticator``. Each client address (``peer``, what the protocol's transport
says: an IP address; None for UNIX sockets and in-memory tests, which are not throttled)
has a bucket of ``burst`` failures refilled at ``rate`` per second. While it is empty,
that address is refused at once with ``RateLimited`` — even with a good key, so guessing
keys costs the guesser time, not the database reads of the server. Successes cost nothing.
"""

from __future__ import annotations

from twisted.internet.defer import Deferred, fail
from twisted.internet.interfaces import IReactorTime
from twisted.python.failure import Failure
from zope.interface import implementer

from qgate.core.auth import IAuthenticator
from qgate.core.errors import RateLimited, Unauthorized
from qgate.core.ratelimit import RateLimiter

#: Failures an address may make at once, then per second (the defaults of
#: ``[auth] failure_burst`` and ``failure_rate``).
FAILURE_BURST = 20.0
FAILURE_RATE = 1.0


@implementer(IAuthenticator)
class ThrottledAuth:
    def __init__(
        self,
        inner: IAuthenticator,
        clock: IReactorTime,
        rate: float = FAILURE_RATE,
        burst: float = FAILURE_BURST,
    ) -> None:
        self.inner = inner
        self.needs_token = inner.needs_token
        self._rate = rate
        self._burst = burst
        self._failures = RateLimiter(clock)

    def __getattr__(self, name: str) -> object:
        # forget_keys and whatever else the inner authenticator offers.
        return getattr(self.inner, name)

    def authenticate(
        self,
        tenant: str | None,
        token: str | None,
        assumed: str | None = None,
        peer: str | None = None,
    ) -> Deferred[str]:
        if peer is not None and self._rate:
            wait = self._failures.wait_for(peer, self._rate, self._burst)
            if wait:
                return fail(RateLimited("auth failure_rate", self._rate, wait))
        d: Deferred[str] = self.inner.authenticate(tenant, token, assumed)
        if peer is not None and self._rate:
            d.addErrback(self._failed, peer)
        return d

    def _failed(self, failure: Failure, peer: str) -> Failure:
        if failure.check(Unauthorized):
            self._failures.spend(peer, self._rate, self._burst)
        return failure
