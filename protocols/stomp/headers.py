"""Frame headers in: the rules a client's header values follow, checked before anything
reaches the core, and the ``NewMessage`` a SEND's headers make.

Everything here is a pure function of a frame (and the negotiated version): a value that
breaks a rule raises ``StompError`` with the header named, so the session answers with an
ERROR frame and nothing changes. Whole numbers are checked as at most ``MAX_DIGITS``
ASCII digits before ``int()`` sees them.
"""

from __future__ import annotations

from collections.abc import Sequence

from twisted.internet.interfaces import IReactorTime

from qgate.core.model import DEFAULT_PRIORITY, NewMessage
from qgate.protocols.stomp.bodies import parse_accept
from qgate.protocols.stomp.codec import V10, V12, Frame
from qgate.protocols.stomp.errors import StompError

#: Upper bound for ``prefetch-count`` (messages in flight per subscription).
MAX_PREFETCH = 10_000
#: Most digits of an integer header (priority, heart-beat, ACK id): 18 fit in 64 bits.
MAX_DIGITS = 18

ACK_MODES = ("auto", "client", "client-individual")

#: SEND headers that are STOMP's own, not the publisher's (not stored with the message).
STOMP_HEADERS = frozenset(
    {
        "destination",
        "content-length",
        "content-type",
        "receipt",
        "transaction",
        "persistent",
        "priority",
        "expires",
        "expiration",
        "message-id",
        "subscription",
        "ack",
    }
)

#: Header values of STOMP's own headers that 1.0 clients may pad with spaces.
TRIMMED_10 = frozenset(
    {
        "destination",
        "id",
        "ack",
        "transaction",
        "receipt",
        "message-id",
        "subscription",
        "content-type",
        "persistent",
        "priority",
        "expiration",
        "expires",
        "prefetch-count",
        "durable",
        "reply-to",
        "accept",
    }
)


def require(frame: Frame, name: str) -> str:
    """The value of a header the frame must carry (present and not empty)."""
    value = frame.get(name)
    if value is None or value == "":
        raise StompError(f"{frame.command} frame needs a {name} header")
    return value


def trim_10(frame: Frame) -> Frame:
    """STOMP 1.0 brokers trimmed header values and 1.0 clients (stomper writes
    ``destination: /queue/a``) rely on it; from 1.1 on values are never trimmed."""
    headers = {k: (v.strip() if k in TRIMMED_10 else v) for k, v in frame.headers.items()}
    return Frame(frame.command, headers, frame.body)


def digits(value: str) -> bool:
    """Whether a header value is a whole number of at most ``MAX_DIGITS`` ASCII digits:
    checked before ``int()``, which raises past Python's int/str limit (4300 digits)."""
    return value.isdigit() and value.isascii() and len(value) <= MAX_DIGITS


def number(value: str, name: str) -> float:
    """A whole number of milliseconds or messages (at most 15 digits: exact as a float)."""
    if not (value.isdigit() and value.isascii() and len(value) <= 15):
        raise StompError(f"{name} must be a whole number (got {value[:20]!r})")
    return float(value)


# -- CONNECT -----------------------------------------------------------------------------------


def accepted_version(frame: Frame, versions: Sequence[str]) -> str:
    """The highest of ``versions`` (lowest first) that CONNECT's ``accept-version`` offers."""
    accept = frame.get("accept-version")
    supported = ",".join(versions)
    if accept is None:
        # STOMP 1.1: no accept-version means 1.0
        if V10 not in versions:
            raise StompError(f"Supported protocol versions are {supported}", version=supported)
        return V10
    offered = {v.strip() for v in accept.split(",")}
    common = [v for v in versions if v in offered]
    if not common:
        # STOMP 1.2: no common version: ERROR with a version header, then close.
        raise StompError(f"Supported protocol versions are {supported}", version=supported)
    return common[-1]


def heart_beat(value: str) -> tuple[int, int]:
    """STOMP 1.2 ``heart-beat:cx,cy``: what the sender offers and wants, in milliseconds."""
    parts = [p.strip() for p in value.split(",")]
    if len(parts) != 2 or not all(digits(p) for p in parts):
        raise StompError(f"heart-beat must be two numbers cx,cy (got {value[:40]!r})")
    return int(parts[0]), int(parts[1])


# -- SEND --------------------------------------------------------------------------------------


def new_message(frame: Frame, producer: str, clock: IReactorTime, min_ttl: float) -> NewMessage:
    """The message a SEND publishes: its body, content type, priority, time to live and
    the publisher's own headers (STOMP's own are not stored)."""
    headers = {k: v for k, v in frame.headers.items() if k not in STOMP_HEADERS}
    priority = DEFAULT_PRIORITY
    raw = frame.get("priority")
    if raw is not None:
        if not (digits(raw) and 0 <= int(raw) <= 9):
            raise StompError(f"priority must be 0 to 9 (got {raw[:20]!r})")
        priority = int(raw)
    ttl: float | None = None
    expiration = frame.get("expiration")  # RabbitMQ: time to live in milliseconds
    expires = frame.get("expires")  # JMS/ActiveMQ: expiry time in ms since the epoch
    if expiration is not None:
        ttl = number(expiration, "expiration") / 1000.0
    elif expires is not None and expires != "0":
        ttl = max(number(expires, "expires") / 1000.0 - clock.seconds(), min_ttl)
    return NewMessage(
        body=frame.body,
        content_type=frame.get("content-type") or "application/octet-stream",
        headers=headers,
        ttl=ttl,
        priority=priority,
        producer=producer,
    )


# -- SUBSCRIBE, UNSUBSCRIBE, ACK, NACK ---------------------------------------------------------


def subscription_id(frame: Frame, version: str) -> str:
    """A SUBSCRIBE's or UNSUBSCRIBE's ``id``; STOMP 1.0 makes it optional, and then the
    destination names the subscription."""
    sub_id = frame.get("id")
    if not sub_id:
        if version != V10:
            raise StompError(f"{frame.command} frame needs an id header")
        sub_id = require(frame, "destination")
    return sub_id


def ack_mode(frame: Frame) -> str:
    ack = frame.get("ack") or "auto"
    if ack not in ACK_MODES:
        raise StompError(f"ack must be auto, client or client-individual (got {ack[:40]!r})")
    return ack


def prefetch_count(frame: Frame, default: int) -> int:
    """Messages in flight for this subscription (RabbitMQ's ``prefetch-count``), at most
    ``MAX_PREFETCH``; 0 or none means the configured default."""
    raw = frame.get("prefetch-count")
    if raw is None:
        return default
    count = int(number(raw, "prefetch-count"))
    return min(count, MAX_PREFETCH) if count > 0 else default


def body_format(frame: Frame) -> str:
    """Not in the STOMP spec; named after HTTP's Accept (qgate's HTTP API takes the same
    media types): how Avro bodies of a schema-checked queue reach this subscriber."""
    accept = parse_accept(frame.get("accept"))
    if accept is None:
        raise StompError(
            f"accept must be application/json or avro/binary (got {frame.get('accept')!r:.60})"
        )
    return accept


def ack_tag(frame: Frame, version: str) -> str:
    """The delivery an ACK or NACK settles."""
    # STOMP 1.2: ACK carries the MESSAGE's ack header as id; 1.0/1.1: message-id.
    if version == V12:
        tag = frame.get("id") or frame.get("message-id")
    else:
        tag = frame.get("message-id") or frame.get("id")
    if not tag:
        raise StompError(
            f"{frame.command} frame needs an {'id' if version == V12 else 'message-id'} header"
        )
    return tag
