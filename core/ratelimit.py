"""Token buckets per tenant: publish and request rates (``core.quotas``).

A bucket holds up to ``burst`` tokens and refills at ``rate`` per second. ``take`` spends
tokens if there are enough, else says how long until there will be (the caller refuses:
HTTP 429 with Retry-After). ``spend`` always spends, going into debt, and says how long the
debt takes to repay (the caller pauses: STOMP stops reading the producer's socket), so a
client that is slowed down can never be refused half-way through a frame.
"""

from __future__ import annotations

from twisted.internet.interfaces import IReactorTime

#: Buckets kept before idle ones are forgotten (a full bucket is the same as none).
MAX_BUCKETS = 100_000


class TokenBucket:
    __slots__ = ("tokens", "stamp")

    def __init__(self, tokens: float, stamp: float) -> None:
        self.tokens = tokens
        self.stamp = stamp

    def refill(self, rate: float, burst: float, now: float) -> None:
        if now > self.stamp:
            self.tokens = min(burst, self.tokens + (now - self.stamp) * rate)
        self.stamp = now


class RateLimiter:
    """One bucket per tenant for one kind of limit; a rate of 0 is unlimited."""

    def __init__(self, clock: IReactorTime) -> None:
        self._clock = clock
        self._buckets: dict[str, TokenBucket] = {}

    def _bucket(self, tenant: str, rate: float, burst: float) -> TokenBucket:
        now = self._clock.seconds()
        bucket = self._buckets.get(tenant)
        if bucket is None:
            if len(self._buckets) >= MAX_BUCKETS:
                self._forget_full(rate, burst, now)
            bucket = self._buckets[tenant] = TokenBucket(max(burst, 1.0), now)
        else:
            bucket.refill(rate, max(burst, 1.0), now)
        return bucket

    def take(self, tenant: str, rate: float, burst: float, count: float = 1.0) -> float:
        """Spend ``count`` tokens and return 0, or spend nothing and return the seconds
        until they will be there. A count larger than the burst needs a full bucket."""
        if not rate:
            return 0.0
        bucket = self._bucket(tenant, rate, burst)
        need = min(count, max(burst, 1.0))
        if bucket.tokens >= need - 1e-9:  # clock arithmetic rounds
            bucket.tokens -= count
            return 0.0
        return (need - bucket.tokens) / rate

    def spend(self, tenant: str, rate: float, burst: float, count: float = 1.0) -> float:
        """Spend ``count`` tokens, into debt if need be; the seconds until the bucket is
        out of debt (0 when it is not in debt)."""
        if not rate:
            return 0.0
        bucket = self._bucket(tenant, rate, burst)
        bucket.tokens -= count
        return self.debt(tenant, rate, burst)

    def wait_for(self, tenant: str, rate: float, burst: float, count: float = 1.0) -> float:
        """Seconds until ``count`` tokens are there (0: now), spending nothing."""
        if not rate or tenant not in self._buckets:
            return 0.0
        bucket = self._bucket(tenant, rate, burst)
        need = min(count, max(burst, 1.0))
        return 0.0 if bucket.tokens >= need - 1e-9 else (need - bucket.tokens) / rate

    def debt(self, tenant: str, rate: float, burst: float) -> float:
        """Seconds until the tenant's bucket is out of debt (0: it may go on now)."""
        if not rate or tenant not in self._buckets:
            return 0.0
        bucket = self._bucket(tenant, rate, burst)
        return -bucket.tokens / rate if bucket.tokens < 0 else 0.0

    def __contains__(self, tenant: object) -> bool:
        """Whether ``tenant`` has a bucket (one not full, or not yet forgotten)."""
        return tenant in self._buckets

    def settle(self, tenant: str, rate: float, burst: float, count: float) -> None:
        """Spend ``count`` tokens that were spent bit by bit since the bucket was last
        seen (a worker's report): the refill is capped after the spending, not before,
        as it would have been had each been spent here."""
        if not rate:
            return
        now = self._clock.seconds()
        bucket = self._buckets.get(tenant)
        if bucket is None:
            bucket = self._bucket(tenant, rate, burst)
        elif now > bucket.stamp:
            bucket.tokens += (now - bucket.stamp) * rate
            bucket.stamp = now
        bucket.tokens = min(max(burst, 1.0), bucket.tokens - count)

    def level(self, tenant: str, rate: float, burst: float) -> float:
        """The tokens in ``tenant``'s bucket now (negative: its debt)."""
        return self._bucket(tenant, rate, burst).tokens

    def _forget_full(self, rate: float, burst: float, now: float) -> None:
        for tenant, bucket in list(self._buckets.items()):
            bucket.refill(rate, burst, now)
            if bucket.tokens >= burst:
                del self._buckets[tenant]
        if len(self._buckets) >= MAX_BUCKETS:
            self._buckets.clear()
