"""Who a call is made for: a ``Principal`` is the tenant name (a ``str``) carrying what
authentication learnt — the API key it used and that key's scope — and, for a STOMP
connection, its session in the core.

Because it *is* the tenant string, protocols pass it where they passed the tenant before,
into every ``IQueueService`` call, and the core's guard (``core.guard``) reads the scope and
the session from it: no signature changes. A plain ``str`` tenant is a principal with no
scope (trusted internal calls, pre-signed URLs).
"""

from __future__ import annotations

import fnmatch
import re
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

from qgate.core.errors import Forbidden, InvalidArgument

#: The operations a key's scope may allow.
PUBLISH = "publish"
CONSUME = "consume"
MANAGE = "manage"
OPERATIONS = (PUBLISH, CONSUME, MANAGE)
#: Longest queue pattern a scope keeps, and how many.
MAX_PATTERN = 128
MAX_PATTERNS = 32


@dataclass(frozen=True, slots=True)
class Scope:
    """What a key may do: queues whose names match one of ``queues`` (fnmatch globs,
    case-sensitive; empty: every queue), operations in ``ops`` (empty: every one)."""

    queues: tuple[str, ...] = ()
    ops: tuple[str, ...] = ()
    _re: re.Pattern[str] | None = field(default=None, init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        # One compiled regular expression for every pattern, matched per call.
        joined = "|".join(f"(?:{fnmatch.translate(p)})" for p in self.queues)
        object.__setattr__(self, "_re", re.compile(joined) if self.queues else None)

    @property
    def unlimited(self) -> bool:
        return not self.queues and not self.ops

    def allows_op(self, op: str) -> bool:
        return not self.ops or op in self.ops

    def allows_queue(self, name: str) -> bool:
        return self._re is None or self._re.match(name) is not None

    def check(self, op: str, name: str | None) -> None:
        """Nothing when the scope allows ``op`` on queue ``name`` (None: a call about no
        queue); Forbidden naming what is not allowed otherwise."""
        if not self.allows_op(op):
            raise Forbidden(
                f"this API key may not {op} (it may: {', '.join(self.ops)})", field="operation"
            )
        self.check_queue(name)

    def check_queue(self, name: str | None) -> None:
        """Nothing when the scope allows queue ``name`` (or ``name`` is None)."""
        if name is not None and not self.allows_queue(name):
            raise Forbidden(
                f"this API key may not use queue {name!r} (its queues: {', '.join(self.queues)})",
                field="queue_name",
            )

    def to_text(self) -> tuple[str | None, str | None]:
        """(queues, ops) as stored: comma-separated, None when unlimited."""
        return (",".join(self.queues) or None, ",".join(self.ops) or None)

    @classmethod
    def from_text(cls, queues: str | None, ops: str | None) -> Scope:
        return cls(_split(queues), _split(ops))


#: The scope of a principal that has none.
EVERYTHING = Scope()


def _split(text: str | None) -> tuple[str, ...]:
    return tuple(p.strip() for p in (text or "").split(",") if p.strip())


def check_scope(queues: Iterable[str] = (), ops: Iterable[str] = ()) -> Scope:
    """A scope from what ``qgate key create --queues --ops`` says, checked."""
    patterns = tuple(queues)
    operations = tuple(dict.fromkeys(ops))
    if len(patterns) > MAX_PATTERNS:
        raise InvalidArgument(f"a key takes at most {MAX_PATTERNS} queue patterns", field="queues")
    for p in patterns:
        if not p or len(p) > MAX_PATTERN or "," in p or not p.isprintable():
            raise InvalidArgument(
                f"queue pattern {p!r:.80} must be 1 to {MAX_PATTERN} printable characters "
                "without a comma",
                field="queues",
            )
    for op in operations:
        if op not in OPERATIONS:
            raise InvalidArgument(
                f"unknown operation {op!r:.40} (known: {', '.join(OPERATIONS)})", field="ops"
            )
    return Scope(patterns, operations)


class Principal(str):
    """A tenant name, plus the key (``key_id``), its ``scope`` and the core ``session``
    (``core.guard.TenantSession``) of a connection, when there are any."""

    key_id: str | None
    scope: Scope
    session: Any
    #: Set by the guard once this principal's request has been counted (one
    #: authentication is one request for the request rate).
    counted: bool

    def __new__(
        cls,
        tenant: str,
        key_id: str | None = None,
        scope: Scope = EVERYTHING,
        session: Any = None,
    ) -> Principal:
        self = super().__new__(cls, tenant)
        self.key_id = key_id
        self.scope = scope
        self.session = session
        self.counted = False
        return self

    def with_session(self, session: Any) -> Principal:
        """This principal, bound to a connection's session (its calls are not requests)."""
        return Principal(str(self), self.key_id, self.scope, session)

    def __reduce__(self) -> Any:
        return (Principal, (str(self), self.key_id, self.scope))
