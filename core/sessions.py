"""A tenant's connections in the core: what a protocol holding a connection open (STOMP
over TCP or WebSocket) opens at authentication and closes at the end, so the core can
count connections and subscriptions, slow the producer, and close the connection when
its API key is revoked.

``ITenantSessions`` is what the guard (``core.guard``) provides beside ``IQueueService``;
``open_session`` gives protocols a session whatever service they were given (an
unguarded one gets a session that counts nothing).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from zope.interface import Interface

from qgate.core.principal import Principal


class ITenantSessions(Interface):
    """Connections, subscriptions and flow control per tenant."""

    def open_session(tenant, on_revoked):  # type: ignore[no-untyped-def]
        """-> TenantSession for a new connection of ``tenant`` (the principal from the
        authenticator); raises QuotaExceeded (``max_connections``). ``on_revoked(why)``
        is called when the key the connection authenticated with is revoked."""


class TenantSession:
    """One connection of a tenant. ``principal`` is what the connection passes to every
    core call from now on: it marks the calls as the connection's (not requests, not
    waiters). Counting is done by ``owner`` (the guard), or not at all."""

    def __init__(
        self,
        tenant: str,
        on_revoked: Callable[[str], None] | None = None,
        owner: Any = None,
    ) -> None:
        base = tenant if isinstance(tenant, Principal) else Principal(tenant)
        self.principal = base.with_session(self)
        self.on_revoked = on_revoked
        self.subscriptions = 0
        self.closed = False
        self._owner = owner

    @property
    def tenant(self) -> str:
        return str(self.principal)

    def subscribe(self) -> None:
        """One more subscription; raises QuotaExceeded (``max_subscriptions``)."""
        if self._owner is not None:
            self._owner.session_subscribe(self)
        self.subscriptions += 1

    def unsubscribe(self, count: int = 1) -> None:
        count = min(count, self.subscriptions)
        self.subscriptions -= count
        if self._owner is not None and count:
            self._owner.session_unsubscribe(self, count)

    def publish_delay(self) -> float:
        """Seconds the tenant's publish rate asks this connection to stop sending (its
        transport paused meanwhile); 0: go on."""
        return 0.0 if self._owner is None else float(self._owner.publish_delay(self.principal))

    def revoked(self, why: str) -> None:
        if not self.closed and self.on_revoked is not None:
            self.on_revoked(why)

    def close(self) -> None:
        """The connection has ended: its subscriptions and its slot are given back."""
        if self.closed:
            return
        self.unsubscribe(self.subscriptions)
        self.closed = True
        if self._owner is not None:
            self._owner.session_closed(self)


def open_session(
    service: Any, tenant: str, on_revoked: Callable[[str], None] | None = None
) -> TenantSession:
    """A session of ``tenant`` from ``service`` when it counts sessions (the guard), else
    one that counts nothing."""
    sessions = ITenantSessions(service, None)
    if sessions is None:
        return TenantSession(tenant, on_revoked)
    session: TenantSession = sessions.open_session(tenant, on_revoked)
    return session
