"""The ``[push]`` table: the webhook dispatcher of push subscriptions."""

from __future__ import annotations

from dataclasses import dataclass

from qgate.core.limits import Limits


@dataclass(frozen=True)
class PushSettings:
    #: Run the dispatcher in this process (one per process group, where storage lives).
    enabled: bool = True
    #: Seconds a dispatcher holds a subscription; renewed every ``scan_interval``. After a
    #: crash, another process (or this one restarted) takes over within one lease.
    lease: float = 30.0
    #: Seconds between lease rounds: renewals, and new subscriptions picked up.
    scan_interval: float = 2.0
    #: Subscriptions one dispatcher holds at most.
    max_subscriptions: int = 1000
    #: Requests in flight per subscription (options ``max_concurrent_requests`` overrides).
    max_concurrent_requests: int = 10
    #: Pushes per second per subscription, 0: unlimited (``max_dispatches_per_second``),
    #: and the token bucket's size (``max_burst_size``; 0: one second's worth).
    max_dispatches_per_second: float = 0.0
    max_burst_size: int = 0
    #: Deliveries taken and not settled per subscription (retries included): the window
    #: past which a failing subscriber's messages wait in the queue instead.
    window: int = 100
    #: Seconds one attempt may take, connecting and reading the answer included.
    timeout: float = 10.0
    #: Bytes of an answer read at most (the rest is not read: the connection is closed).
    max_response_bytes: int = 64 * 1024
    #: Longest ``Retry-After`` honoured, in seconds (a longer one is cut to this).
    max_retry_after: float = 3600.0
    #: Allow loopback and private addresses (link-local ones are always refused).
    allow_private_targets: bool = False
    #: PEM file of the CAs https:// subscribers are verified against ("": the system's).
    ca_bundle: str = ""
    #: Push only subscriptions confirmed with ``PUT .../confirm`` (Zaqar's
    #: ``require_confirmation``).
    require_confirmation: bool = False
    #: Hooks run around each attempt: entry point names of the ``qgate.push_hooks`` group,
    #: or ``"module:attribute"`` references.
    hooks: tuple[str, ...] = ()

    def check(self, limits: Limits) -> None:
        """Values that cannot work (``ValueError`` naming the key)."""
        positive = {
            "lease": self.lease,
            "scan_interval": self.scan_interval,
            "timeout": self.timeout,
            "max_subscriptions": self.max_subscriptions,
            "max_concurrent_requests": self.max_concurrent_requests,
            "window": self.window,
            "max_response_bytes": self.max_response_bytes,
        }
        for key, value in positive.items():
            if value <= 0:
                raise ValueError(f"{key}: must be more than 0 (got {value})")
        if self.scan_interval * 2 >= self.lease:
            raise ValueError(
                f"scan_interval: must be under half the lease ({self.lease:g} s), so a "
                f"lease is renewed before it ends (got {self.scan_interval:g})"
            )
        if self.window < self.max_concurrent_requests:
            raise ValueError("window: must be at least max_concurrent_requests")
        if self.max_dispatches_per_second < 0 or self.max_burst_size < 0:
            raise ValueError("max_dispatches_per_second: must not be negative")
        if self.ca_bundle:
            from qgate.protocols.push.safety import trust_root

            try:
                trust_root(self.ca_bundle)
            except (OSError, ValueError) as e:
                raise ValueError(f"ca_bundle: cannot be read: {e}") from None
        from qgate.protocols.push.hooks import load_hooks

        load_hooks(self.hooks)  # ValueError "hooks: ..." for one that cannot be found
