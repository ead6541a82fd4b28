"""Typed errors of the queue core.

Every error names the field it is about (when there is one) and says why, so each protocol
can turn it into its own error form (an HTTP JSON body, a STOMP ERROR frame, an Avro error)
without parsing messages.
"""

from __future__ import annotations


class QGateError(Exception):
    """Base of every error the core raises on purpose."""

    #: A short, stable title, used as the HTTP error title.
    title = "Error"

    def __init__(self, description: str, field: str | None = None) -> None:
        super().__init__(description)
        self.description = description
        self.field = field

    def __str__(self) -> str:
        return self.description


class InvalidArgument(QGateError):
    """A request parameter or body is malformed or out of bounds."""

    title = "Invalid API request"


class TooLarge(InvalidArgument):
    """A body or a batch is larger than allowed."""

    title = "Request entity too large"


class NotFound(QGateError):
    title = "Not found"


class QueueNotFound(NotFound):
    def __init__(self, name: str) -> None:
        super().__init__(f"Queue {name!r} does not exist", field="queue_name")
        self.name = name


class MessageNotFound(NotFound):
    def __init__(self, message_id: str) -> None:
        super().__init__(f"Message {message_id!r} does not exist", field="message_id")
        self.message_id = message_id


class ClaimNotFound(NotFound):
    def __init__(self, claim_id: str) -> None:
        super().__init__(f"Claim {claim_id!r} does not exist or has expired", field="claim_id")
        self.claim_id = claim_id


class SubscriptionNotFound(NotFound):
    def __init__(self, subscription_id: str) -> None:
        super().__init__(
            f"Subscription {subscription_id!r:.80} does not exist", field="subscription_id"
        )
        self.subscription_id = subscription_id


class Conflict(QGateError):
    title = "Conflict"


class SubscriptionExists(Conflict):
    """Another live subscription of the queue has that subscriber (they are unique by
    tenant, queue and subscriber)."""

    def __init__(self, name: str, subscriber: str) -> None:
        super().__init__(
            f"Queue {name!r} has a subscription for {subscriber!r:.200} already",
            field="subscriber",
        )
        self.name = name
        self.subscriber = subscriber


class QueueExists(Conflict):
    def __init__(self, name: str) -> None:
        super().__init__(f"Queue {name!r} already exists", field="queue_name")
        self.name = name


class QueueFull(Conflict):
    """A bounded queue with the ``reject`` overflow policy refused a publish."""

    title = "Queue full"

    def __init__(self, name: str, why: str) -> None:
        super().__init__(f"Queue {name!r} is full: {why}", field="messages")
        self.name = name


class SchemaChanged(Conflict):
    """The queue's schema is not the one a publish was checked against (it was set or
    cleared meanwhile, maybe by another process). The service checks again and retries;
    ``fingerprint`` is the queue's schema now (None: no schema)."""

    title = "Queue schema changed"

    def __init__(self, name: str, fingerprint: int | None) -> None:
        super().__init__(f"Queue {name!r} changed its schema; try again", field="schema")
        self.name = name
        self.fingerprint = fingerprint


class UncheckedWriters(Conflict):
    """A queue holds messages whose writer schemas a new schema was not checked against
    (they landed after the check began). The service checks them and retries."""

    title = "Queue schema not checked"

    def __init__(self, name: str, fingerprints: list[int]) -> None:
        super().__init__(
            f"Queue {name!r} holds messages of schemas the new schema was not checked "
            "against; try again",
            field="schema",
        )
        self.name = name
        self.fingerprints = fingerprints


class MessageClaimed(QGateError):
    """A claimed message was touched without (the right) claim id."""

    title = "Message claimed"

    def __init__(self, message_id: str) -> None:
        super().__init__(
            f"Message {message_id!r} is claimed; pass its claim id to delete it",
            field="claim_id",
        )
        self.message_id = message_id


class Unauthorized(QGateError):
    title = "Unauthorized"


class StorageUnavailable(QGateError):
    """The backend cannot be reached; the caller may retry later."""

    title = "Service unavailable"


class Forbidden(QGateError):
    """The caller is who it says, but may not do this (an API key's scope)."""

    title = "Forbidden"


class QuotaExceeded(Forbidden):
    """A tenant's quota (``core.quotas``) refuses the call; ``field`` names the quota."""

    title = "Quota exceeded"

    def __init__(self, quota: str, limit: float, why: str) -> None:
        super().__init__(f"{why}: the tenant's {quota} quota is {limit:g}", field=quota)
        self.quota = quota
        self.limit = limit


class RateLimited(QGateError):
    """A tenant's rate limit (``core.ratelimit``) refuses the call for ``retry_after``
    seconds; ``field`` names the limit (``publish_rate`` or ``request_rate``)."""

    title = "Too many requests"

    def __init__(self, limit: str, rate: float, retry_after: float) -> None:
        super().__init__(
            f"the tenant's {limit} ({rate:g} per second) is used up; retry in {retry_after:.2f} s",
            field=limit,
        )
        self.limit = limit
        self.retry_after = retry_after
