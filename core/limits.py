"""Bounds the core enforces, and the checks that name the field they reject."""

from __future__ import annotations

import math
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from qgate.core import jsonsafe
from qgate.core.errors import InvalidArgument, TooLarge
from qgate.core.model import NewMessage, Overflow, QueueOptions
from qgate.core.options import OPTIONS

NAME_RE = re.compile(r"[A-Za-z0-9_.-]{1,64}\Z")
TENANT_RE = re.compile(r"[A-Za-z0-9_.:@-]{1,128}\Z")
SUBSCRIPTION_RE = re.compile(r"[^\x00-\x1f]{1,255}\Z")


@dataclass(frozen=True, slots=True)
class Limits:
    """The numeric bounds of the core; protocols may be stricter, never looser."""

    max_body: int = 256 * 1024
    max_batch: int = 100
    max_claim: int = 100
    max_page: int = 100
    min_ttl: float = 1.0
    max_ttl: float = 14 * 86400.0
    max_delay: float = 14 * 86400.0
    min_lease: float = 1.0
    max_lease: float = 12 * 3600.0
    max_grace: float = 12 * 3600.0
    max_wait: float = 3600.0
    max_headers: int = 64
    max_header_length: int = 4096
    max_content_type: int = 255


def check_name(name: object, field: str = "queue_name") -> str:
    if not isinstance(name, str) or not NAME_RE.match(name):
        raise InvalidArgument(
            f"{field} must be 1 to 64 characters of A-Z a-z 0-9 _ . - (got {name!r:.80})",
            field=field,
        )
    return name


def check_tenant(tenant: object) -> str:
    if not isinstance(tenant, str) or not TENANT_RE.match(tenant):
        raise InvalidArgument(
            f"tenant must be 1 to 128 characters of A-Z a-z 0-9 _ . : @ - (got {tenant!r:.80})",
            field="tenant",
        )
    return tenant


def check_number(
    value: object, field: str, low: float, high: float, *, integer: bool = False
) -> float:
    """``value`` as a number in [low, high], or InvalidArgument naming ``field``."""
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise InvalidArgument(f"{field} must be a number (got {value!r:.80})", field=field)
    if isinstance(value, float) and not math.isfinite(value):
        raise InvalidArgument(f"{field} must be finite", field=field)
    if integer and not float(value).is_integer():
        raise InvalidArgument(f"{field} must be a whole number (got {value!r})", field=field)
    if not low <= value <= high:
        raise InvalidArgument(
            f"{field} must be between {_fmt(low)} and {_fmt(high)} (got {_fmt(value)})",
            field=field,
        )
    return value


def check_count(value: object, field: str, high: int) -> int:
    """``value`` as a whole number in [1, high] (how many messages or queues to take)."""
    if type(value) is int and 1 <= value <= high:
        return value
    return int(check_number(value, field, 1, high, integer=True))


def check_wait(wait: object, limits: Limits) -> float:
    """Seconds a caller may wait for something to claim or observe."""
    if wait == 0 and type(wait) in (int, float):
        return 0.0
    return float(check_number(wait, "wait", 0, limits.max_wait))


def check_lease(ttl: object, grace: object, limits: Limits) -> tuple[float, float]:
    """A claim's lease and grace seconds."""
    if (
        type(ttl) in (int, float)
        and type(grace) in (int, float)
        and limits.min_lease <= ttl <= limits.max_lease  # type: ignore[operator]
        and 0 <= grace <= limits.max_grace  # type: ignore[operator]
    ):
        return float(ttl), float(grace)  # type: ignore[arg-type]
    lease = float(check_number(ttl, "ttl", limits.min_lease, limits.max_lease))
    grace_s = float(check_number(grace, "grace", 0, limits.max_grace))
    return lease, grace_s


def check_subscription(subscription: object) -> str:
    """The name of a durable subscription."""
    if not isinstance(subscription, str) or not SUBSCRIPTION_RE.match(subscription):
        raise InvalidArgument(
            "subscription must be 1 to 255 printable characters", field="subscription"
        )
    return subscription


def _fmt(x: float) -> str:
    return str(int(x)) if float(x).is_integer() else str(x)


def check_options(options: QueueOptions, limits: Limits) -> QueueOptions:
    """``options`` checked against the table of options (``core.options``) and ``limits``."""
    for option in OPTIONS:
        value = getattr(options, option.name)
        if value is None and option.optional:
            continue
        if option.kind is Overflow:
            if not isinstance(value, Overflow):
                raise InvalidArgument(
                    "overflow must be 'reject' or 'drop_oldest'", field=option.name
                )
        elif option.kind is str:
            check_name(value, option.name)
        elif option.bounds is not None:
            low, high = option.bounds(limits)
            check_number(value, option.name, low, high, integer=option.kind is int)
    if (options.schema is None) != (options.schema_text is None):
        raise InvalidArgument("a queue schema needs its fingerprint and its text", field="schema")
    if options.schema is not None:
        check_number(options.schema, "schema", -(2**63), 2**63 - 1, integer=True)
        if not isinstance(options.schema_text, str):
            raise InvalidArgument("schema_text must be a string", field="schema")
    return options


def check_metadata(metadata: object, field: str = "metadata") -> Mapping[str, Any]:
    """Metadata (or another ``field`` of its kind) is a JSON object every protocol can
    show: strict JSON (no lone surrogate, no non-finite number; see ``core.jsonsafe``)."""
    if not isinstance(metadata, Mapping) or not all(isinstance(k, str) for k in metadata):
        raise InvalidArgument(f"{field} must be an object with string keys", field=field)
    try:
        jsonsafe.check_value(dict(metadata))
    except (jsonsafe.JSONValueError, TypeError, RecursionError) as e:
        why = e.reason if isinstance(e, jsonsafe.JSONValueError) else "not a JSON value"
        raise InvalidArgument(f"{field} is not JSON: {why}", field=field) from None
    return metadata


def check_json_body(message: NewMessage, where: str) -> None:
    """A body whose content type says JSON must be strict JSON, so that every protocol
    can show it as the document it claims to be."""
    if type(message.body) is not jsonsafe.StrictJSON and jsonsafe.is_json_type(
        message.content_type
    ):
        try:
            jsonsafe.loads(message.body)
        except jsonsafe.JSONValueError as e:
            raise InvalidArgument(
                f"{where}.body is not JSON ({e.reason}) but its content type is "
                f"{message.content_type!r:.80}",
                field=f"{where}.body",
            ) from None


def check_messages(messages: Sequence[NewMessage], limits: Limits) -> None:
    """Check a whole batch before anything is stored; the first bad one names its index."""
    if not messages:
        raise InvalidArgument("a batch needs at least one message", field="messages")
    if len(messages) > limits.max_batch:
        raise TooLarge(
            f"a batch holds at most {limits.max_batch} messages (got {len(messages)})",
            field="messages",
        )
    for i, m in enumerate(messages):
        if _plain(m, limits):
            continue
        where = f"messages[{i}]"
        if not isinstance(m, NewMessage):
            raise InvalidArgument(f"{where} is not a message", field=where)
        if not isinstance(m.body, bytes):
            raise InvalidArgument(f"{where}.body must be bytes", field=f"{where}.body")
        if len(m.body) > limits.max_body:
            raise TooLarge(
                f"{where}.body is {len(m.body)} bytes; the limit is {limits.max_body}",
                field=f"{where}.body",
            )
        if m.ttl is not None:
            check_number(m.ttl, f"{where}.ttl", limits.min_ttl, limits.max_ttl)
        if m.delay is not None:
            check_number(m.delay, f"{where}.delay", 0, limits.max_delay)
        check_number(m.priority, f"{where}.priority", 0, 9, integer=True)
        if not isinstance(m.content_type, str) or len(m.content_type) > limits.max_content_type:
            raise InvalidArgument(
                f"{where}.content_type must be a string of at most "
                f"{limits.max_content_type} characters",
                field=f"{where}.content_type",
            )
        if len(m.headers) > limits.max_headers:
            raise InvalidArgument(
                f"{where}.headers: at most {limits.max_headers} headers",
                field=f"{where}.headers",
            )
        for k, v in m.headers.items():
            if not isinstance(k, str) or not isinstance(v, str) or not k:
                raise InvalidArgument(
                    f"{where}.headers must map non-empty strings to strings",
                    field=f"{where}.headers",
                )
            if len(k) + len(v) > limits.max_header_length:
                raise InvalidArgument(
                    f"{where}.headers[{k!r:.40}] is longer than {limits.max_header_length}",
                    field=f"{where}.headers",
                )
        check_json_body(m, where)


def _plain(m: object, limits: Limits) -> bool:
    """The common case, checked fast: a small message with defaults and no headers."""
    return (
        type(m) is NewMessage
        and type(m.body) in _PLAIN_BODIES
        and len(m.body) <= limits.max_body
        and m.ttl is None
        and m.delay is None
        and type(m.priority) is int
        and 0 <= m.priority <= 9
        and not m.headers
        and type(m.content_type) is str
        and len(m.content_type) <= limits.max_content_type
        # JSON bodies are checked the long way, unless jsonsafe.dumps wrote them.
        and (type(m.body) is jsonsafe.StrictJSON or "json" not in m.content_type.lower())
    )


_PLAIN_BODIES = (bytes, jsonsafe.StrictJSON)


def check_post_size(name: str, options: QueueOptions, messages: Sequence[NewMessage]) -> None:
    """A queue's ``max_post_bytes`` (stores call this before storing anything)."""
    limit = options.max_post_bytes
    if limit is not None:
        size = sum(len(m.body) for m in messages)
        if size > limit:
            raise TooLarge(
                f"a publish of {size} bytes is larger than queue {name!r} takes "
                f"(max_post_bytes {limit})",
                field="messages",
            )


def resolve_times(message: NewMessage, options: QueueOptions, now: float) -> tuple[float, float]:
    """(expires_at, available_at) of a new message under its queue's defaults."""
    ttl = options.default_ttl if message.ttl is None else message.ttl
    delay = options.default_delay if message.delay is None else message.delay
    return now + ttl, now + delay
