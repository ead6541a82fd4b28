"""``QueueSubscriptions``: the push subscriptions of queues, behind the service's
``*_subscription`` calls (the service holds one).

A subscription (``core.model.Subscription``) names a subscriber URL for a queue's
messages, for ``ttl`` seconds; it lives in its queue's store (``ISubscriptionStore``) and
goes with the queue. Each keeps its own position in the queue's log, so a dispatcher can
deliver every message to every subscription as a consumer of its own. Here: the checks
every protocol gets (subscriber, ttl, options), ids, and creating the queue on first use.
"""

from __future__ import annotations

import re
from collections.abc import Awaitable, Callable, Mapping
from typing import Any
from urllib.parse import urlsplit

from twisted.internet.defer import Deferred
from twisted.internet.interfaces import IReactorTime

from qgate.core import jsonsafe
from qgate.core._ids import new_subscription_id
from qgate.core.errors import InvalidArgument, QueueNotFound, SubscriptionNotFound
from qgate.core.interfaces import IQueueStorage
from qgate.core.limits import Limits, check_count, check_metadata
from qgate.core.model import NewSubscription, Subscription, SubscriptionUpdate
from qgate.core.push_policy import parse_push_options

#: Seconds a subscription lives when its creator names none (Zaqar's default).
DEFAULT_SUBSCRIPTION_TTL = 3600
#: The subscribers qgate can deliver to (Zaqar also has ``mailto`` and ``trust+http(s)``).
SUBSCRIBER_SCHEMES = ("http", "https")
MAX_SUBSCRIBER = 2048
MAX_OPTIONS_BYTES = 64 * 1024
#: 10000-01-01T00:00:00Z: no subscription expires at or after it (Python's and Zaqar's
#: last datetime is the second before).
END_OF_TIME = 253402300800.0

_UNSAFE = re.compile(r"[\x00-\x20\x7f]")


def check_subscriber(subscriber: object) -> str:
    """An ``http://`` or ``https://`` URL with a host, without spaces or control
    characters, of at most MAX_SUBSCRIBER characters."""
    why = None
    if not isinstance(subscriber, str):
        why = f"got {type(subscriber).__name__}"
    elif len(subscriber) > MAX_SUBSCRIBER:
        why = f"it is longer than {MAX_SUBSCRIBER} characters"
    elif _UNSAFE.search(subscriber):
        why = "it holds a space or a control character"
    else:
        try:
            parts = urlsplit(subscriber)
            host = parts.hostname
        except ValueError:  # a malformed port or IPv6 address
            parts, host = None, None
        if parts is None or parts.scheme.lower() not in SUBSCRIBER_SCHEMES or not host:
            why = f"got {subscriber!r:.80}"
    if why is not None:
        raise InvalidArgument(
            f"subscriber must be an http:// or https:// URL with a host ({why})",
            field="subscriber",
        )
    assert isinstance(subscriber, str)
    return subscriber


def check_subscription_ttl(ttl: object, now: float) -> int:
    """Whole seconds, at least one, ending before the year 10000."""
    if type(ttl) is not int:
        raise InvalidArgument(
            f"ttl must be a whole number of seconds (got {ttl!r:.40})", field="ttl"
        )
    if ttl < 1 or now + ttl >= END_OF_TIME:
        raise InvalidArgument(
            f"ttl must be at least 1 second and end before the year 10000 (got {ttl})",
            field="ttl",
        )
    return ttl


def check_subscription_options(options: object) -> dict[str, Any]:
    """A JSON object (strict JSON, like queue metadata) of at most MAX_OPTIONS_BYTES."""
    checked = check_metadata(options, "options")
    size = len(jsonsafe.dumps(dict(checked)))
    if size > MAX_OPTIONS_BYTES:
        raise InvalidArgument(
            f"options are {size} bytes of JSON; at most {MAX_OPTIONS_BYTES}", field="options"
        )
    parse_push_options(checked)  # what the dispatcher reads must be usable
    return dict(checked)


class QueueSubscriptions:
    """The subscription calls of the service: ``store_for`` picks a queue's store (and
    checks the names), ``create_queue`` makes a queue with the service's defaults."""

    def __init__(
        self,
        clock: IReactorTime,
        limits: Limits,
        store_for: Callable[[str, str], IQueueStorage],
        create_queue: Callable[[str, str], Awaitable[object]],
    ) -> None:
        self._clock = clock
        self._limits = limits
        self._store_for = store_for
        self._create_queue = create_queue

    async def create(
        self,
        tenant: str,
        name: str,
        subscriber: str,
        ttl: int | None,
        options: Mapping[str, Any] | None,
        create: bool,
    ) -> tuple[Subscription, bool]:
        store = self._store_for(tenant, name)
        now = self._clock.seconds()
        subscriber = check_subscriber(subscriber)
        ttl = check_subscription_ttl(DEFAULT_SUBSCRIPTION_TTL if ttl is None else ttl, now)
        checked = check_subscription_options({} if options is None else options)
        new = NewSubscription(new_subscription_id(now), subscriber, ttl, checked)
        try:
            made: tuple[Subscription, bool] = await store.create_subscription(
                tenant, name, new, now
            )
        except QueueNotFound:
            if not create:
                raise
            await self._create_queue(tenant, name)  # Zaqar: a subscription makes its queue
            store = self._store_for(tenant, name)
            made = await store.create_subscription(tenant, name, new, now)
        return made

    async def get(self, tenant: str, name: str, subscription_id: str) -> Subscription:
        store = self._store_for(tenant, name)
        found = None
        if isinstance(subscription_id, str) and subscription_id:
            found = await store.get_subscription(tenant, name, subscription_id, self._now())
        if found is None:
            raise SubscriptionNotFound(str(subscription_id))
        sub: Subscription = found
        return sub

    async def listing(
        self, tenant: str, name: str, marker: str | None, limit: int
    ) -> list[Subscription]:
        store = self._store_for(tenant, name)
        limit = check_count(limit, "limit", self._limits.max_page)
        if marker is not None and not isinstance(marker, str):
            raise InvalidArgument("marker must be a subscription id", field="marker")
        found: list[Subscription] = await store.list_subscriptions(
            tenant, name, marker, limit, self._now()
        )
        return found

    async def update(
        self, tenant: str, name: str, subscription_id: str, changes: SubscriptionUpdate
    ) -> Subscription:
        store = self._store_for(tenant, name)
        now = self._now()
        checked = SubscriptionUpdate(
            subscriber=None if changes.subscriber is None else check_subscriber(changes.subscriber),
            ttl=None if changes.ttl is None else check_subscription_ttl(changes.ttl, now),
            options=(
                None if changes.options is None else check_subscription_options(changes.options)
            ),
            confirmed=changes.confirmed,
        )
        if checked.confirmed is not None and not isinstance(checked.confirmed, bool):
            raise InvalidArgument("confirmed must be true or false", field="confirmed")
        if not isinstance(subscription_id, str) or not subscription_id:
            raise SubscriptionNotFound(str(subscription_id))
        updated: Subscription = await store.update_subscription(
            tenant, name, subscription_id, checked, now
        )
        return updated

    async def delete(self, tenant: str, name: str, subscription_id: str) -> bool:
        store = self._store_for(tenant, name)
        if not isinstance(subscription_id, str) or not subscription_id:
            return False
        deleted: bool = await store.delete_subscription(tenant, name, subscription_id)
        return deleted

    async def purge(self, tenant: str, name: str) -> int:
        count: int = await self._store_for(tenant, name).purge_subscriptions(tenant, name)
        return count

    def _now(self) -> float:
        return float(self._clock.seconds())


class SubscriptionCalls:
    """The subscription calls of ``IQueueService`` as the service exposes them (it
    inherits them): each hands its arguments to the service's ``_subscriptions``."""

    _subscriptions: QueueSubscriptions

    def create_subscription(
        self,
        tenant: str,
        name: str,
        subscriber: str,
        ttl: int | None = None,
        options: Mapping[str, Any] | None = None,
        create: bool = True,
    ) -> Deferred[tuple[Subscription, bool]]:
        made = self._subscriptions.create(tenant, name, subscriber, ttl, options, create)
        return Deferred.fromCoroutine(made)

    def get_subscription(
        self, tenant: str, name: str, subscription_id: str
    ) -> Deferred[Subscription]:
        return Deferred.fromCoroutine(self._subscriptions.get(tenant, name, subscription_id))

    def list_subscriptions(
        self, tenant: str, name: str, marker: str | None = None, limit: int = 10
    ) -> Deferred[list[Subscription]]:
        return Deferred.fromCoroutine(self._subscriptions.listing(tenant, name, marker, limit))

    def update_subscription(
        self,
        tenant: str,
        name: str,
        subscription_id: str,
        subscriber: str | None = None,
        ttl: int | None = None,
        options: Mapping[str, Any] | None = None,
        confirmed: bool | None = None,
    ) -> Deferred[Subscription]:
        changes = SubscriptionUpdate(subscriber, ttl, options, confirmed)
        return Deferred.fromCoroutine(
            self._subscriptions.update(tenant, name, subscription_id, changes)
        )

    def delete_subscription(self, tenant: str, name: str, subscription_id: str) -> Deferred[bool]:
        return Deferred.fromCoroutine(self._subscriptions.delete(tenant, name, subscription_id))

    def purge_subscriptions(self, tenant: str, name: str) -> Deferred[int]:
        return Deferred.fromCoroutine(self._subscriptions.purge(tenant, name))
