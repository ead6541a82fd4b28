"""Plain, immutable values that cross the core's boundaries (never ORM rows)."""

from __future__ import annotations

import dataclasses
import enum
from collections.abc import Mapping
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any, NamedTuple

from qgate.core.errors import InvalidArgument

#: Priority a message gets when the publisher names none (the JMS convention: 0-9, 4 default).
DEFAULT_PRIORITY = 4

_EMPTY: Mapping[str, str] = MappingProxyType({})


class Overflow(enum.StrEnum):
    """What a bounded queue does with a publish that does not fit."""

    REJECT = "reject"
    DROP_OLDEST = "drop_oldest"


@dataclass(frozen=True, slots=True)
class QueueOptions:
    """How a queue behaves. ``None`` bounds mean unbounded."""

    durable: bool = True
    default_ttl: float = 3600.0
    default_delay: float = 0.0
    max_messages: int | None = None
    max_bytes: int | None = None
    overflow: Overflow = Overflow.REJECT
    max_claim_count: int | None = None
    dead_letter_queue: str | None = None
    dead_letter_ttl: float | None = None
    #: Largest publish, in bytes of message bodies (Zaqar's ``_max_messages_post_size``).
    max_post_bytes: int | None = None
    #: The queue's Avro schema (see ``docs/avro.md``): ``schema`` is its CRC-64-AVRO
    #: fingerprint, the identity storage checks on every publish; ``schema_text`` its JSON
    #: text as set, which keeps what resolution needs and the fingerprint ignores (field
    #: defaults, aliases). Both are None, or both set; only ``set_schema``/``clear_schema``
    #: (and ``create_queue``) change them.
    schema: int | None = None
    schema_text: str | None = None

    def to_dict(self) -> dict[str, Any]:
        """Every field by name, as JSON values (what the SQL store keeps)."""
        values = {f.name: getattr(self, f.name) for f in dataclasses.fields(self)}
        values["overflow"] = self.overflow.value
        return values

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> QueueOptions:
        """The options ``to_dict`` wrote; InvalidArgument naming the option for a key it
        does not know or an overflow that is not one (``check_options`` checks the rest)."""
        values = dict(data)
        unknown = sorted(set(values) - set(cls.__dataclass_fields__))
        if unknown:
            raise InvalidArgument(f"unknown queue option {unknown[0]!r:.80}", field=unknown[0])
        if "overflow" in values:
            overflow = values["overflow"]
            if not isinstance(overflow, str) or overflow not in {o.value for o in Overflow}:
                raise InvalidArgument(
                    f"overflow must be 'reject' or 'drop_oldest' (got {overflow!r:.80})",
                    field="overflow",
                )
            values["overflow"] = Overflow(overflow)
        return cls(**values)


@dataclass(frozen=True, slots=True)
class Queue:
    tenant: str
    name: str
    options: QueueOptions
    metadata: Mapping[str, Any]
    created_at: float


@dataclass(frozen=True, slots=True)
class NewMessage:
    """A message as a publisher hands it over; ttl/delay ``None`` take the queue's defaults."""

    body: bytes
    content_type: str = "application/octet-stream"
    headers: Mapping[str, str] = field(default_factory=lambda: _EMPTY)
    ttl: float | None = None
    delay: float | None = None
    priority: int = DEFAULT_PRIORITY
    producer: str | None = None


class Message(NamedTuple):
    """A stored message. ``id`` is the queue-local marker as a string.

    A NamedTuple rather than a frozen dataclass: it is the most-created value on the hot
    path, and a tuple is built several times faster while being just as immutable.
    """

    marker: int
    body: bytes
    content_type: str
    headers: Mapping[str, str]
    producer: str | None
    priority: int
    created_at: float
    expires_at: float
    available_at: float
    claim_id: str | None
    claim_expires: float | None
    claim_count: int

    @property
    def id(self) -> str:
        return str(self.marker)

    @property
    def ttl(self) -> float:
        return self.expires_at - self.created_at

    def age(self, now: float) -> float:
        return max(0.0, now - self.created_at)

    def is_claimed(self, now: float) -> bool:
        return self.claim_id is not None and (self.claim_expires or 0.0) > now

    def shown_claim(self, now: float, claim_id: str | None = None) -> str | None:
        """The claim a reader is shown holding the message: ``claim_id`` when it reads
        through that claim, else the message's live claim, else None."""
        if claim_id is None and self.is_claimed(now):
            return self.claim_id
        return claim_id


@dataclass(frozen=True, slots=True)
class ObserveQuery:
    """What an observer asks storage for (``IQueueStorage.observe``): up to ``limit`` live
    messages with markers above ``after`` (None: from the first), in marker order; claimed
    and delayed ones only when included, and none that ``exclude_producer`` published."""

    limit: int
    after: int | None = None
    include_claimed: bool = False
    include_delayed: bool = False
    exclude_producer: str | None = None


@dataclass(frozen=True, slots=True)
class Claim:
    id: str
    queue: str
    ttl: float
    grace: float
    created_at: float
    expires_at: float
    messages: tuple[Message, ...]

    def age(self, now: float) -> float:
        return max(0.0, now - self.created_at)


@dataclass(frozen=True, slots=True)
class QueueStats:
    total: int
    available: int
    claimed: int
    delayed: int
    oldest: Message | None
    newest: Message | None


@dataclass(frozen=True, slots=True)
class Subscription:
    """A push subscription of a queue (Zaqar's subscriptions): messages published to
    ``queue`` are for ``subscriber`` (an ``http://`` or ``https://`` URL) until
    ``expires_at``.

    A subscription is a consumer of its own: ``marker`` is how far delivery has got (the
    last marker handed over; a new subscription starts at the queue's last marker, so it
    is for messages published after it), kept by storage across restarts, so several
    subscriptions of one queue each get every message. ``ttl`` is the lifetime last set
    (``expires_at`` is ``now + ttl`` of the create or update that set it); ``options`` is
    the subscriber's JSON object; ``confirmed`` whether the subscriber confirmed it.
    """

    id: str
    queue: str
    subscriber: str
    ttl: int
    options: Mapping[str, Any]
    created_at: float
    expires_at: float
    confirmed: bool = False
    marker: int = 0

    def age(self, now: float) -> int:
        """Whole seconds since it was created (Zaqar's ``age``)."""
        return max(0, int(now - self.created_at))


@dataclass(frozen=True, slots=True)
class Tenant:
    name: str
    created_at: float


@dataclass(frozen=True)
class NewSubscription:
    """A subscription to create, checked by the core; storage places it in its queue."""

    id: str
    subscriber: str
    ttl: int
    options: Mapping[str, Any]

    def placed(self, queue: str, now: float, marker: int) -> Subscription:
        """The subscription as stored at ``now``: unconfirmed, expiring ``ttl`` later, at
        ``marker`` (the queue's last), so it is for the messages published after it."""
        return Subscription(
            id=self.id,
            queue=queue,
            subscriber=self.subscriber,
            ttl=self.ttl,
            options=dict(self.options),
            created_at=now,
            expires_at=now + self.ttl,
            marker=marker,
        )


@dataclass(frozen=True)
class SubscriptionUpdate:
    """The fields an update of a subscription changes, as its caller gave them (None:
    left as it is); the core checks them, storage applies them."""

    subscriber: str | None
    ttl: int | None
    options: Mapping[str, Any] | None
    confirmed: bool | None


# -- push delivery (core/_push.py, protocols/push/) ------------------------------------------


@dataclass(frozen=True, slots=True)
class PushLease:
    """A subscription a dispatcher holds until ``expires_at``: only its holder pushes the
    subscription's messages, so two processes never push one message to one subscriber
    at once."""

    tenant: str
    subscription: Subscription
    expires_at: float


@dataclass(frozen=True, slots=True)
class Delivery:
    """One message on its way to one subscription, kept by storage until it is settled:
    ``attempts`` made so far, the next one due at ``next_at``, taken at ``taken_at``."""

    marker: int
    attempts: int
    next_at: float
    taken_at: float


class Settlement(enum.StrEnum):
    """How a delivery attempt ended, as storage records it."""

    DELIVERED = "delivered"  # a 2xx (or a hook skipped it): the delivery goes
    RETRY = "retry"  # failed: tried again at ``next_at``
    GIVEN_UP = "given_up"  # failed for the last time: the delivery goes


@dataclass(frozen=True, slots=True)
class PushStats:
    """A subscription's delivery counters (``GET .../subscriptions/{id}`` ``stats``):
    ``pending`` deliveries taken and not settled, ``lag`` live messages not yet taken."""

    delivered: int = 0
    failed: int = 0
    given_up: int = 0
    pending: int = 0
    lag: int = 0
    last_error: str | None = None
