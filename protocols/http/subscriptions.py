"""The subscription endpoints (Zaqar v2 ``subscriptions.py``): create, list, show, update,
delete and confirm a queue's push subscriptions, checked as Zaqar's ``validation.py``
checks them and answered with Zaqar's statuses and texts.

qgate delivers to ``http://`` and ``https://`` subscribers only: Zaqar's ``mailto:`` and
``trust+http(s)://`` are refused with Zaqar's own answer for an unsupported subscriber type
(``docs/zaqar-compat.md``, "Subscriptions", lists this and the other differences).
Delivery itself is the push protocol's dispatcher (``protocols/push``, ``docs/push.md``):
these calls keep subscriptions, durably, and show their delivery counters (``stats``).
"""

from __future__ import annotations

import datetime
from collections.abc import Mapping
from typing import Any
from urllib.parse import urlsplit

from qgate.core.errors import (
    InvalidArgument,
    QueueNotFound,
    SubscriptionExists,
    SubscriptionNotFound,
)
from qgate.core.model import PushStats, Subscription
from qgate.core.push_policy import parse_retry_policy
from qgate.protocols.http.call import Call
from qgate.protocols.http.errors import HTTPError, bad_request, not_found
from qgate.protocols.http.handlers import Handlers, next_link, queue_path
from qgate.protocols.http.router import Response

#: The subscriber types qgate serves (Zaqar's ``[transport] subscriber_types`` also has
#: mailto, trust+http and trust+https).
SUBSCRIBER_TYPES = ["http", "https"]
#: Zaqar's validation constants: the shortest subscription, the largest page, and the
#: retry policy's defaults and backoff functions (``zaqar/common/consts.py``).
MIN_SUBSCRIPTION_TTL = 60
MAX_SUBSCRIPTIONS_PER_PAGE = 20
DEFAULT_SUBSCRIPTIONS_PER_PAGE = 10
MINIMUM_DELAY = 5
MAXIMUM_DELAY = 30
LINEAR_INTERVAL = 5
RETRY_BACKOFF_FUNCTIONS = ("linear", "arithmetic", "exponential", "geometric")
_RETRY_KEYS = (
    "retries_with_no_delay",
    "minimum_delay_retries",
    "minimum_delay",
    "maximum_delay",
    "maximum_delay_retries",
    "retry_backoff_function",
    "ignore_subscription_override",
)

#: Zaqar's 409 texts: the create's (no space after "exists.", as Zaqar writes it) and the
#: update's (``storage.errors.SubscriptionAlreadyExists``).
CREATE_CONFLICT = (
    "Such subscription already exists.Subscriptions are unique by project + queue + subscriber URI."
)
UPDATE_CONFLICT = (
    "Such subscription already exists. Subscriptions are unique by project + queue "
    "+ subscriber URI."
)


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def check_retry_policy(options: Mapping[str, Any] | None) -> None:
    """Zaqar's ``_validate_retry_policy`` of ``options["_retry_policy"]`` (subscription
    options, or queue metadata), then the App Engine keys qgate reads beside Zaqar's."""
    policy = options.get("_retry_policy") if options else None
    if policy and not isinstance(policy, dict):
        raise bad_request("retry_policy must be a dict.")
    if not policy:
        return
    for key in _RETRY_KEYS:
        value = policy.get(key)
        if key == "retry_backoff_function":
            if value and not isinstance(value, str):
                raise bad_request("retry_backoff_function must be a string.")
            if value and value not in RETRY_BACKOFF_FUNCTIONS:
                raise bad_request("invalid retry_backoff_function.")
        elif key == "ignore_subscription_override":
            if value and not isinstance(value, bool):
                raise bad_request("ignore_subscription_override must be a boolean.")
        elif value and not isinstance(value, int):
            raise bad_request(f"Retry policy: {key} must be a integer.")
    # A null delay takes the default; another value that is not a number (``[]``, which
    # passes the check above) is refused here (Zaqar fails comparing either: a 503).
    low = policy.get("minimum_delay")
    high = policy.get("maximum_delay")
    low = MINIMUM_DELAY if low is None else low
    high = MAXIMUM_DELAY if high is None else high
    for key, value in (("minimum_delay", low), ("maximum_delay", high)):
        if not isinstance(value, int | float):
            raise bad_request(f"Retry policy: {key} must be a integer.")
    if high < low:
        raise bad_request("minimum_delay must less than maximum_delay.")
    if high - low < 2 * LINEAR_INTERVAL:
        raise bad_request("invalid minimum_delay and maximum_delay.")
    try:
        parse_retry_policy(policy)
    except InvalidArgument as e:
        raise bad_request(str(e)) from None


def _unsupported_subscriber() -> HTTPError:
    return bad_request(
        f"The subscriber type of subscription must be supported in the list {SUBSCRIBER_TYPES}."
    )


def check_patching(document: Any, now: float) -> None:
    """Zaqar's ``subscription_patching``: the rules every subscription document meets.

    Where Zaqar lets a value through only to fail later (a 503, or a subscription that
    cannot work), qgate refuses it here: a subscriber that is not a string, options that
    are not an object (``[]``, ``0``), a ``ttl`` of ``0``, ``false`` or ``true``."""
    if not document:
        raise bad_request("No subscription to create.")
    if not isinstance(document, dict):
        raise bad_request("Subscriptions must be a dict.")
    subscriber = document.get("subscriber")
    if subscriber is not None:
        if not isinstance(subscriber, str) or not subscriber:
            raise _unsupported_subscriber()
        try:
            scheme = urlsplit(subscriber).scheme
        except ValueError:
            scheme = ""
        if scheme not in SUBSCRIBER_TYPES:
            raise _unsupported_subscriber()
    options = document.get("options")
    if options is not None and not isinstance(options, dict):
        raise bad_request("Options must be a dict.")
    check_retry_policy(options)
    ttl = document.get("ttl")
    if ttl is not None:
        if not _is_int(ttl):
            raise bad_request("TTL must be an integer.")
        if ttl < MIN_SUBSCRIPTION_TTL:
            raise bad_request(
                f"The TTL for a subscription must be at least {MIN_SUBSCRIPTION_TTL} seconds long."
            )
        # Zaqar: the expiry must be a datetime Python can hold (before the year 10000).
        start = datetime.datetime.fromtimestamp(int(now), tz=datetime.UTC).replace(tzinfo=None)
        try:
            start + datetime.timedelta(seconds=ttl)
        except OverflowError:
            raise bad_request(
                "The TTL seconds for a subscription plus current time must be less than "
                f"{datetime.datetime.max}."
            ) from None


def check_posting(document: Any, now: float) -> None:
    """Zaqar's ``subscription_posting``: a subscriber, then the patching rules."""
    if not isinstance(document, dict):
        raise bad_request("Subscriptions must be a dict.")  # Zaqar: a 503
    if "subscriber" not in document:
        raise bad_request("Missing parameter subscriber in body.")
    check_patching(document, now)
    if not isinstance(document["subscriber"], str):
        raise _unsupported_subscriber()  # null: Zaqar fails later, with a 503


def render_subscription(sub: Subscription, now: float) -> dict[str, Any]:
    """Zaqar's subscription document (``_basic_subscription``)."""
    return {
        "id": sub.id,
        "source": sub.queue,
        "subscriber": sub.subscriber,
        "ttl": sub.ttl,
        "age": sub.age(now),
        "options": dict(sub.options),
        "confirmed": sub.confirmed,
    }


def render_stats(stats: PushStats) -> dict[str, Any]:
    """A subscription's push counters (``GET .../subscriptions/{id}`` ``stats``):
    ``in_flight`` counts deliveries taken and not settled (being sent, or waiting for a
    retry); ``lag`` live messages not taken yet."""
    return {
        "delivered": stats.delivered,
        "failed_attempts": stats.failed,
        "given_up": stats.given_up,
        "in_flight": stats.pending,
        "lag": stats.lag,
        "last_error": stats.last_error,
    }


def _gone(subscription_id: str) -> HTTPError:
    # Zaqar's SubscriptionDoesNotExist text.
    return not_found(f"Subscription {subscription_id} does not exist")


class SubscriptionEndpoints(Handlers):
    def _path(self, name: str) -> str:
        return f"{queue_path(name)}/subscriptions"

    async def create_subscription(self, call: Call) -> Response:
        """201 with the new id, or with the id of an unconfirmed subscription of the same
        subscriber (Zaqar sends it its confirmation again); 409 when that one is
        confirmed. The queue is created on first use, once the document is checked."""
        tenant, name = await self._scope(call)
        document = call.json(default={})
        check_posting(document, self._now())
        sub, created = await self.service.create_subscription(
            tenant, name, document["subscriber"], document.get("ttl"), document.get("options")
        )
        location = {"Location": self._path(name)}
        if not created and sub.confirmed:
            raise HTTPError(409, "Resource conflict", CREATE_CONFLICT, location)
        return Response(201, {"subscription_id": sub.id}, location)

    async def list_subscriptions(self, call: Call) -> Response:
        tenant, name = await self._scope(call)
        marker = call.query("marker")
        limit = call.query_int("limit")
        high = min(MAX_SUBSCRIPTIONS_PER_PAGE, self.service.limits.max_page)
        if limit is not None and not 0 < limit <= high:
            raise bad_request(f"Limit must be at least 1 and may not be greater than {high}.")
        try:
            found = await self.service.list_subscriptions(
                tenant, name, marker, DEFAULT_SUBSCRIPTIONS_PER_PAGE if limit is None else limit
            )
        except QueueNotFound:
            found = []  # Zaqar lists no subscriptions of a queue that is not there
        now = self._now()
        links = []
        if found:
            # Zaqar's next link: the parameters given, in their order (marker before limit),
            # with the page's last id as the marker, appended when none was given.
            params: dict[str, str] = {}
            if marker is not None:
                params["marker"] = ""
            if limit is not None:
                params["limit"] = str(limit)
            params["marker"] = found[-1].id
            links = next_link(self._path(name), params.items())
        documents = [render_subscription(sub, now) for sub in found]
        return Response(200, {"subscriptions": documents, "links": links})

    async def get_subscription(self, call: Call) -> Response:
        tenant, name = await self._scope(call)
        subscription_id = call.params["subscription_id"]
        try:
            sub = await self.service.get_subscription(tenant, name, subscription_id)
        except (SubscriptionNotFound, QueueNotFound):
            raise _gone(subscription_id) from None
        document = render_subscription(sub, self._now())
        try:  # qgate's delivery counters, beside Zaqar's fields
            document["stats"] = render_stats(
                await self.service.push_stats(tenant, name, subscription_id)
            )
        except (SubscriptionNotFound, QueueNotFound):
            pass  # expired or deleted in between: Zaqar's fields only
        return Response(200, document)

    async def update_subscription(self, call: Call) -> Response:
        """204: ``subscriber``, ``ttl`` and ``options`` as given (null: unchanged); a new
        ttl counts from now, as in Zaqar."""
        tenant, name = await self._scope(call)
        subscription_id = call.params["subscription_id"]
        document = call.json(default={})
        check_patching(document, self._now())
        changes = {
            key: document[key]
            for key in ("subscriber", "ttl", "options")
            if document.get(key) is not None
        }
        if not changes:
            # Zaqar's storage refuses an update of nothing (an assertion, answered so).
            raise HTTPError(
                400,
                "Unable to update subscription",
                f"Subscription {subscription_id} could not be updated.",
            )
        try:
            await self.service.update_subscription(tenant, name, subscription_id, **changes)
        except (SubscriptionNotFound, QueueNotFound):
            raise _gone(subscription_id) from None
        except SubscriptionExists:
            raise HTTPError(409, "Resource conflict", UPDATE_CONFLICT) from None
        return Response(204, headers={"Location": call.request.path.decode("utf-8", "replace")})

    async def delete_subscription(self, call: Call) -> Response:
        """204, whether it was there or not (as in Zaqar)."""
        tenant, name = await self._scope(call)
        try:
            await self.service.delete_subscription(tenant, name, call.params["subscription_id"])
        except QueueNotFound:
            pass
        return Response(204)

    async def confirm_subscription(self, call: Call) -> Response:
        """``PUT .../confirm`` with ``{"confirmed": true|false}``: 204."""
        tenant, name = await self._scope(call)
        subscription_id = call.params["subscription_id"]
        document = call.json(default={})
        if not isinstance(document, dict):
            # Zaqar's confirm fails reading a document that is not an object: answered so.
            raise HTTPError(
                400,
                "Unable to confirm subscription",
                f"Subscription {subscription_id} could not be confirmed.",
            )
        confirmed = document.get("confirmed")
        if not isinstance(confirmed, bool):
            raise bad_request("The 'confirmed' should be boolean.")
        try:
            await self.service.update_subscription(
                tenant, name, subscription_id, confirmed=confirmed
            )
        except (SubscriptionNotFound, QueueNotFound):
            raise _gone(subscription_id) from None
        return Response(204, headers={"Location": call.request.path.decode("utf-8", "replace")})
