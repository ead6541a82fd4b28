"""The ids the core hands out and takes back: message ids (markers as text), claim ids,
subscription ids; and the decorator that exposes a coroutine method as a Deferred one."""

from __future__ import annotations

import itertools
import os
from collections.abc import Callable, Coroutine, Sequence
from typing import Any, ParamSpec, TypeVar

from twisted.internet.defer import Deferred

P = ParamSpec("P")
T = TypeVar("T")


def as_deferred(f: Callable[P, Coroutine[Any, Any, T]]) -> Callable[P, Deferred[T]]:
    """Expose a coroutine method as a Deferred-returning one (cancellable)."""

    def wrapper(*args: P.args, **kwargs: P.kwargs) -> Deferred[T]:
        return Deferred.fromCoroutine(f(*args, **kwargs))

    wrapper.__name__ = f.__name__
    wrapper.__doc__ = f.__doc__
    return wrapper


def marker(message_id: object) -> int | None:
    """The marker behind a message id, or None for an id that cannot exist. "0" is the
    marker before every message (a cursor or ``after`` meaning "from the start")."""
    if isinstance(message_id, int) and not isinstance(message_id, bool):
        return message_id if message_id >= 0 else None
    # ASCII digits only: "²" is a digit to isdigit() but not to int(), "١" to both.
    if (
        isinstance(message_id, str)
        and message_id.isascii()
        and message_id.isdigit()
        and len(message_id) < 20
    ):
        return int(message_id)
    return None


def markers(ids: Sequence[object]) -> list[int]:
    return [m for m in map(marker, ids) if m is not None]


def ids(found: Sequence[int]) -> list[str]:
    return [str(m) for m in found]


def new_claim_id() -> str:
    """128 random bits as hex (uuid4's entropy, a fraction of its cost)."""
    return os.urandom(16).hex()


_sequence = itertools.count()


def new_subscription_id(now: float) -> str:
    """24 hex digits, like Zaqar's (MongoDB ObjectIds): the milliseconds of ``now``, a
    count of this process's ids, 32 random bits. Ids sort by creation time (those of one
    process made in the same millisecond by their count), so a listing by id lists by
    age; the random bits keep ids of processes sharing a database apart."""
    ms = max(0, int(now * 1000)) & 0xFFFF_FFFF_FFFF
    return f"{ms:012x}{next(_sequence) & 0xFFFF:04x}{os.urandom(4).hex()}"
