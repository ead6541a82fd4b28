"""The Zaqar v2 wire format and its rules, translated to and from core values (no I/O).

Bounds
------
The API enforces Zaqar's validation defaults (``zaqar/transport/validation.py``): message
TTL 60..1209600 s, delay 0..900 s, claim TTL and grace 60..43200 s, at most 20 messages
per page, claim or pop, 20 queues per page, message posts of at most 262144 bytes and
queue metadata of at most 65536 bytes. Where the core's ``Limits`` are stricter they win
(a protocol may be stricter than the core, never looser); see :class:`Bounds`.

Message bodies
--------------
Zaqar bodies are JSON documents. A message posted here is stored as the UTF-8 JSON
encoding of its ``body`` with content type ``application/json`` and rendered back as
that document. Messages published by other protocols (a STOMP frame carries any bytes)
are rendered by content type:

* a JSON type (``application/json`` or ``*/*+json``) whose bytes are strict JSON
  (``core.jsonsafe``): the document;
* anything else that is valid UTF-8: a JSON string (so a body stored before the core
  checked JSON bodies, holding ``"\\ud800"`` or ``NaN``, shows as its text);
* anything else: ``{"$binary": "<base64 of the bytes>", "content_type": "<type>"}``.

Request documents are strict JSON (``parse_json``); answers are written leniently
(``jsonsafe.dumps_lenient``: a lone surrogate that metadata stored by an older version
holds becomes U+FFFD, a non-finite number ``null``), so no stored value makes an answer
fail. A claim's answer is rendered before it is returned and the claim released if that
fails (``claims.ClaimEndpoints.create_claim``): a claim is never committed without being
returned.

The binary marker lives inside ``body`` rather than as an extra message field because
python-zaqarclient builds ``Message(**fields)`` and fails on keys it does not know.

Avro bodies (``avro/binary; fingerprint=...``, see ``core.avro_bodies``) are shown as the
JSON the core decodes them to, resolved into the queue's current schema; the handlers hand
those values to :func:`render_message`. ``protocols.http.avro`` has the Avro forms of the
API (container files in, envelopes out).

Queue metadata
--------------
Metadata is stored as the client sent it. Reserved keys also set the queue's core
options: ``_default_message_ttl``, ``_default_message_delay``, ``_max_claim_count``,
``_dead_letter_queue``, ``_dead_letter_queue_messages_ttl`` (Zaqar), ``_flavor``
(``durable`` or ``transient``, chosen at creation) and the qgate extensions
``_max_messages``, ``_max_bytes`` and ``_overflow`` (``reject`` or ``drop_oldest``).
``_max_messages_post_size`` sets ``max_post_bytes`` (the core checks the bodies' bytes
against it; this layer checks whole requests against the configured maximum). Any other
option of the core's table (``core.options``) is the key ``_<name>``. ``_schema``
is the queue's Avro schema (a JSON value, ``null`` to clear it), set through the core's
``set_schema`` and never stored as metadata. When a queue is shown, the options are the
truth: reserved keys are rendered from them, so a queue created by another protocol shows
its real settings.
"""

from __future__ import annotations

import hashlib
import json
import math
import time
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from qgate.core import jsonsafe
from qgate.core.limits import NAME_RE, Limits
from qgate.core.model import Claim, Message, NewMessage, Overflow, Queue, QueueOptions, QueueStats
from qgate.core.options import OPTIONS, with_values
from qgate.protocols.http.errors import bad_body, bad_request

# Zaqar's validation defaults (zaqar/transport/validation.py, [transport] options).
MIN_MESSAGE_TTL = 60
MAX_MESSAGE_TTL = 1209600
MAX_MESSAGE_DELAY = 900
MIN_CLAIM_TTL = 60
MAX_CLAIM_TTL = 43200
MIN_CLAIM_GRACE = 60
MAX_CLAIM_GRACE = 43200
MAX_MESSAGES_PER_PAGE = 20
MAX_QUEUES_PER_PAGE = 20
MAX_MESSAGES_PER_CLAIM_OR_POP = 20
MAX_MESSAGES_POST_SIZE = 256 * 1024
MAX_QUEUE_METADATA = 64 * 1024
# Zaqar's [transport] defaults for a claim without a body, and its default page size.
DEFAULT_CLAIM_TTL = 300
DEFAULT_CLAIM_GRACE = 60
DEFAULT_LIMIT = 10

JSON_TYPE = "application/json"


@dataclass(frozen=True, slots=True)
class Bounds:
    """The effective limits of the HTTP API: Zaqar's, narrowed by the core's."""

    message_ttl: tuple[float, float]
    message_delay: tuple[float, float]
    claim_ttl: tuple[float, float]
    claim_grace: tuple[float, float]
    page: int
    queues_page: int
    claim: int
    max_wait: float
    post_size: int
    metadata_size: int

    @classmethod
    def from_limits(cls, limits: Limits, max_wait: float) -> Bounds:
        return cls(
            message_ttl=(
                max(MIN_MESSAGE_TTL, limits.min_ttl),
                min(MAX_MESSAGE_TTL, limits.max_ttl),
            ),
            message_delay=(0, min(MAX_MESSAGE_DELAY, limits.max_delay)),
            claim_ttl=(max(MIN_CLAIM_TTL, limits.min_lease), min(MAX_CLAIM_TTL, limits.max_lease)),
            claim_grace=(MIN_CLAIM_GRACE, min(MAX_CLAIM_GRACE, limits.max_grace)),
            page=min(MAX_MESSAGES_PER_PAGE, limits.max_page),
            queues_page=min(MAX_QUEUES_PER_PAGE, limits.max_page),
            claim=min(MAX_MESSAGES_PER_CLAIM_OR_POP, limits.max_claim),
            max_wait=max(0.0, min(max_wait, limits.max_wait)),
            post_size=min(MAX_MESSAGES_POST_SIZE, limits.max_body * limits.max_batch),
            metadata_size=MAX_QUEUE_METADATA,
        )


def _n(x: float) -> str:
    return str(int(x)) if float(x).is_integer() else str(x)


# -- JSON documents --------------------------------------------------------------------------


def parse_json(data: bytes) -> Any:
    """The document in ``data``, strict JSON (``core.jsonsafe``: no lone surrogate, no
    NaN or Infinity, no number past a double or 64 bits); 400 with Zaqar's descriptions
    when it is not, the reason appended."""
    if not data.strip():
        raise bad_body("Request body can not be empty")
    try:
        # Zaqar's read_json refuses integers past 64 bits (OverflowedJSONInteger).
        return jsonsafe.loads(data, int_bound=2**63)
    except jsonsafe.IntegerTooLarge:
        raise bad_body("JSON contains integer that is too large.") from None
    except jsonsafe.JSONValueError as e:
        raise bad_body(f"Request body could not be parsed: {e.reason}.") from None


def dump_json(document: Any) -> bytes:
    """Strict JSON of a value ``parse_json`` read (it cannot fail on one)."""
    return jsonsafe.dumps(document)


def checked_field(document: Mapping[str, Any], name: str, kind: type | None, default: Any) -> Any:
    """``document[name]`` (or ``default`` when absent) of type ``kind``, as Zaqar's
    ``get_checked_field`` does: a missing required field or a wrong type is a 400."""
    if name in document:
        value = document[name]
    elif default is not None:
        value = default
    else:
        raise bad_body(f'Missing "{name}" field.')
    if kind is None:
        return value
    if kind is int and (isinstance(value, bool) or not isinstance(value, int)):
        raise bad_body(f'The value of the "{name}" field must be a int.')
    if not isinstance(value, kind):
        raise bad_body(f'The value of the "{name}" field must be a {kind.__name__}.')
    return value


def _in_range(value: float, bounds: tuple[float, float]) -> bool:
    return bounds[0] <= value <= bounds[1]


# -- messages --------------------------------------------------------------------------------


def parse_messages(document: Any, bounds: Bounds, producer: str | None) -> list[NewMessage]:
    """The messages of a Zaqar ``{"messages": [...]}`` post, checked like Zaqar does."""
    if not isinstance(document, dict) or "messages" not in document:
        raise bad_request("No messages were found in the request body.")
    items = document["messages"]
    if not isinstance(items, list):
        raise bad_body("Document type not supported.")
    if not items:
        raise bad_request("No messages to enqueu.")
    out = []
    for item in items:
        if not isinstance(item, dict):
            raise bad_body("Document type not supported.")
        body = checked_field(item, "body", None, None)
        ttl = item.get("ttl")
        if ttl is not None:
            ttl = check_message_ttl(checked_field(item, "ttl", int, None), bounds)
        delay = item.get("delay")
        if delay is not None:
            delay = check_message_delay(checked_field(item, "delay", int, None), bounds)
        out.append(
            NewMessage(
                body=dump_json(body),
                content_type=JSON_TYPE,
                ttl=None if ttl is None else float(ttl),
                delay=None if delay is None else float(delay),
                producer=producer,
            )
        )
    return out


def check_message_ttl(ttl: int, bounds: Bounds) -> int:
    return _message_seconds(ttl, bounds.message_ttl, "TTL")


def check_message_delay(delay: int, bounds: Bounds) -> int:
    return _message_seconds(delay, bounds.message_delay, "Delay TTL")


def _message_seconds(value: int, span: tuple[float, float], what: str) -> int:
    """A message's ``ttl`` or ``delay`` within ``span``, refused in Zaqar's words."""
    if not _in_range(value, span):
        lo, hi = span
        raise bad_request(
            f"The {what} for a message may not exceed {_n(hi)} seconds, and must be at "
            f"least {_n(lo)} seconds long."
        )
    return value


is_json_type = jsonsafe.is_json_type


def render_body(message: Message) -> Any:
    """The ``body`` of a message as Zaqar shows it (see the module docstring)."""
    return jsonsafe.body_document(message.body, message.content_type)


def message_href(queue_path: str, message_id: str, claim_id: str | None = None) -> str:
    href = f"{queue_path}/messages/{message_id}"
    return f"{href}?claim_id={claim_id}" if claim_id else href


def checksum(body: Any) -> str | None:
    """Zaqar's body checksum (``storage.utils.get_checksum``): ``MD5:`` and the hex MD5 of
    the body as Python's ``json.dumps`` writes it by default (oslo's ``dump_as_bytes``:
    ASCII, ``", "`` and ``": "`` separators, keys in their order), so a client computes the
    same from the body it reads. None for a ``null`` body, which Zaqar gives none."""
    if body is None:
        return None
    text = json.dumps(body)
    return "MD5:" + hashlib.md5(text.encode("utf-8"), usedforsecurity=False).hexdigest()


def render_message(
    message: Message,
    queue_path: str,
    now: float,
    claim_id: str | None = None,
    bodies: Mapping[int, Any] | None = None,
    *,
    with_checksum: bool = False,
) -> dict[str, Any]:
    """Zaqar's v2 message document (``wsgi.utils.format_message``: id, href, ttl, age,
    body, the checksum with ``enable_checksum``), plus ``claim_count`` and ``claim_id``
    (python-zaqarclient's ``Message`` takes them). The href carries the claim id of a live
    claim. ``bodies`` holds the JSON of Avro bodies, by marker
    (``IQueueService.decode_bodies``)."""
    claim_id = message.shown_claim(now, claim_id)
    rendered: dict[str, Any] = {
        "id": message.id,
        "href": message_href(queue_path, message.id, claim_id),
        "ttl": int(round(message.ttl)),
        "age": int(message.age(now)),
        "body": _shown_body(message, bodies),
        "claim_count": message.claim_count,
    }
    if claim_id:
        rendered["claim_id"] = claim_id
    if with_checksum:
        _add_checksum(rendered)
    return rendered


def _shown_body(message: Message, bodies: Mapping[int, Any] | None) -> Any:
    """The JSON of an Avro body when ``bodies`` holds it, else ``render_body``."""
    if bodies is not None and message.marker in bodies:
        return bodies[message.marker]
    return render_body(message)


def _add_checksum(rendered: dict[str, Any]) -> None:
    shown = checksum(rendered["body"])
    if shown is not None:
        rendered["checksum"] = shown


def render_popped(
    message: Message,
    now: float,
    bodies: Mapping[int, Any] | None = None,
    *,
    with_checksum: bool = False,
) -> dict[str, Any]:
    """A message a pop deleted, as Zaqar answers it (its storage's ``to_basic``: no href,
    the message is gone; ``claim_id`` null, the pop holds no claim afterwards)."""
    rendered: dict[str, Any] = {
        "id": message.id,
        "age": int(message.age(now)),
        "ttl": int(round(message.ttl)),
        "body": _shown_body(message, bodies),
        "claim_id": None,
        "claim_count": message.claim_count,
    }
    if with_checksum:
        _add_checksum(rendered)
    return rendered


def render_claim(
    claim: Claim,
    queue_path: str,
    now: float,
    bodies: Mapping[int, Any] | None = None,
    *,
    with_checksum: bool = False,
) -> dict[str, Any]:
    """Zaqar's claim document (``GET /claims/{id}``): the claim without its id, plus its
    ``grace``."""
    return {
        "age": int(claim.age(now)),
        "ttl": int(round(claim.ttl)),
        "grace": int(round(claim.grace)),
        "href": f"{queue_path}/claims/{claim.id}",
        "messages": [
            render_message(m, queue_path, now, claim.id, bodies, with_checksum=with_checksum)
            for m in claim.messages
        ],
    }


def iso8601(timestamp: float) -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(timestamp))


#: The stats of a queue that does not exist (Zaqar's answer, every name reads as empty).
MISSING_QUEUE_STATS: dict[str, Any] = {"messages": {"claimed": 0, "free": 0, "total": 0}}


def render_stats(stats: QueueStats, queue_path: str, now: float) -> dict[str, Any]:
    """Zaqar's stats document: ``free`` is every message not claimed (delayed ones too, as
    Zaqar counts them), plus ``delayed``; ``oldest``/``newest`` (age, created, href)
    only when the queue has messages."""
    messages: dict[str, Any] = {
        "claimed": stats.claimed,
        "free": stats.total - stats.claimed,
        "delayed": stats.delayed,
        "total": stats.total,
    }
    if stats.total:
        for key, message in (("oldest", stats.oldest), ("newest", stats.newest)):
            if message is not None:
                messages[key] = {
                    "age": int(message.age(now)),
                    "created": iso8601(message.created_at),
                    "href": message_href(queue_path, message.id),
                }
    return {"messages": messages}


# -- queue metadata --------------------------------------------------------------------------

FLAVORS = {"durable": True, "transient": False}
POST_SIZE_KEY = "_max_messages_post_size"
SCHEMA_KEY = "_schema"

#: Zaqar's names for the core's queue options; any other option (``core.options``) is the
#: reserved key ``_<name>`` (the qgate extensions ``_max_messages``, ``_overflow``, ...).
ZAQAR_KEYS: dict[str, str] = {
    "default_ttl": "_default_message_ttl",
    "default_delay": "_default_message_delay",
    "dead_letter_ttl": "_dead_letter_queue_messages_ttl",
    "durable": "_flavor",
    "max_post_bytes": POST_SIZE_KEY,
}
#: Reserved metadata key -> QueueOptions field it sets.
OPTION_KEYS: dict[str, str] = {ZAQAR_KEYS.get(o.name, f"_{o.name}"): o.name for o in OPTIONS}
#: QueueOptions field -> its reserved metadata key.
KEY_OF: dict[str, str] = {name: key for key, name in OPTION_KEYS.items()}
#: Zaqar's reserved key for at-rest encryption: shown (``false`` unless set) and kept as
#: metadata; qgate does not encrypt stored messages (docs/zaqar-compat.md).
ENCRYPT_KEY = "_enable_encrypt_messages"
RESERVED_KEYS = frozenset([*OPTION_KEYS, SCHEMA_KEY, ENCRYPT_KEY])
#: Zaqar's reserved keys that every queue document shows, ``null`` while unset
#: (``queues._get_reserved_metadata``).
SHOWN_AS_NULL = frozenset(
    ["_dead_letter_queue", "_dead_letter_queue_messages_ttl", "_max_claim_count"]
)
#: Options shown only while set (``None`` is no bound); the post size is always shown.
_SHOWN_WHEN_SET = tuple(o for o in OPTIONS if o.optional and o.name != "max_post_bytes")
#: Whole-number options other than the post size: at least 1, the core checks the rest.
_COUNT_KEYS = tuple(KEY_OF[o.name] for o in _SHOWN_WHEN_SET if o.kind is int)


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def check_metadata(metadata: Mapping[str, Any], bounds: Bounds) -> None:
    """Zaqar's ``queue_metadata_putting``, extended to qgate's reserved keys. ``None``
    means "unset" for every reserved key."""

    def ranged(key: str, rng: tuple[float, float], what: str) -> None:
        value = metadata.get(key)
        if value is None:
            return
        if not _is_int(value):
            raise bad_request(f"{key} must be integer.")
        if not _in_range(value, rng):
            raise bad_request(
                f"{key} can not exceed {_n(rng[1])} {what}, and must be at least "
                f"{_n(rng[0])} {what} long."
            )

    ranged("_default_message_ttl", bounds.message_ttl, "seconds")
    ranged("_default_message_delay", bounds.message_delay, "seconds")
    ranged("_dead_letter_queue_messages_ttl", bounds.message_ttl, "seconds")
    post_size = metadata.get(POST_SIZE_KEY)
    if post_size is not None and (
        not _is_int(post_size) or not 0 < post_size <= MAX_MESSAGES_POST_SIZE
    ):
        raise bad_request(
            f"{POST_SIZE_KEY} can not exceed {MAX_MESSAGES_POST_SIZE}, and must be at least "
            "greater than 0."
        )
    for key in _COUNT_KEYS:
        value = metadata.get(key)
        if value is not None and (not _is_int(value) or value < 1):
            raise bad_request(f"{key} must be an integer of at least 1.")
    dlq = metadata.get("_dead_letter_queue")
    if dlq is not None and (not isinstance(dlq, str) or not NAME_RE.match(dlq)):
        raise bad_request("The format of the submitted queue name is not valid.")
    # Types first: a list or an object is not hashable, so not a key to look up.
    overflow = metadata.get("_overflow")
    if overflow is not None and (
        not isinstance(overflow, str) or overflow not in {o.value for o in Overflow}
    ):
        raise bad_request("_overflow must be 'reject' or 'drop_oldest'.")
    flavor = metadata.get("_flavor")
    if flavor is not None and not isinstance(flavor, str):
        raise bad_request("_flavor must be 'durable' or 'transient'.")
    if flavor is not None and flavor not in FLAVORS:
        # Zaqar: FlavorDoesNotExist -> 400.
        raise bad_request(f"Flavor {flavor!r:.80} does not exist")
    encrypted = metadata.get(ENCRYPT_KEY)
    if encrypted and not isinstance(encrypted, bool):
        raise bad_request(f"{ENCRYPT_KEY} must be boolean.")
    schema = metadata.get(SCHEMA_KEY)
    if schema is not None and not isinstance(schema, dict | list | str):
        raise bad_request(f"{SCHEMA_KEY} must be an Avro schema: a JSON object, array or name.")


def schema_text(value: Any) -> str:
    """The JSON text of a ``_schema`` value (a schema as a JSON value)."""
    return jsonsafe.dumps(value).decode("utf-8")


def options_for(
    metadata: Mapping[str, Any],
    base: QueueOptions,
    defaults: QueueOptions,
    keys: Iterable[str],
) -> QueueOptions:
    """``base`` with the options named by the reserved ``keys`` taken from ``metadata``;
    a key that is absent or ``None`` resets its option to ``defaults``."""
    values: dict[str, Any] = {}
    for key in keys:
        name = OPTION_KEYS.get(key)
        if name is None:
            continue
        value = metadata.get(key)
        values[name] = FLAVORS[value] if key == "_flavor" and value is not None else value
    return with_values(base, values, defaults)


def _num(x: float) -> int | float:
    return int(x) if float(x).is_integer() else x


def render_metadata(queue: Queue, bounds: Bounds) -> dict[str, Any]:
    """The queue's metadata with its reserved keys rendered from its options, like Zaqar
    fills in ``_max_messages_post_size``, ``_default_message_ttl`` and
    ``_default_message_delay`` when they were never set, and shows
    ``_dead_letter_queue``, ``_dead_letter_queue_messages_ttl``, ``_max_claim_count``
    (``null`` while unset) and ``_enable_encrypt_messages`` (``false``) always."""
    options = queue.options
    out = dict(queue.metadata)
    own = options.max_post_bytes
    out[POST_SIZE_KEY] = bounds.post_size if own is None else min(own, bounds.post_size)
    out["_default_message_ttl"] = _num(options.default_ttl)
    out["_default_message_delay"] = _num(options.default_delay)
    out["_flavor"] = "durable" if options.durable else "transient"
    for option in _SHOWN_WHEN_SET:
        key, value = KEY_OF[option.name], getattr(options, option.name)
        if value is None and key in SHOWN_AS_NULL:
            out[key] = None
        elif value is None:
            out.pop(key, None)
        else:
            out[key] = _num(value) if option.kind is float else value
    if options.max_messages is not None or options.max_bytes is not None or "_overflow" in out:
        out["_overflow"] = options.overflow.value
    if not out.get(ENCRYPT_KEY):
        out[ENCRYPT_KEY] = False
    if options.schema_text is not None:
        out[SCHEMA_KEY] = json.loads(options.schema_text)
    else:
        out.pop(SCHEMA_KEY, None)
    return out


# -- small parsers ---------------------------------------------------------------------------

_TRUE = frozenset(["true", "t", "yes", "y", "1", "on"])
_FALSE = frozenset(["false", "f", "no", "n", "0", "off"])


def parse_bool(text: str) -> bool | None:
    """Falcon's ``get_param_as_bool`` vocabulary; ``None`` when ``text`` is neither."""
    lowered = text.strip().lower()
    if lowered in _TRUE:
        return True
    if lowered in _FALSE:
        return False
    return None


def parse_number(text: str) -> float | None:
    try:
        value = float(text)
    except ValueError:
        return None
    return value if math.isfinite(value) else None
