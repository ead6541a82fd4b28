"""The queue options a client may set, as one table: each ``QueueOptions`` field, the type
of its value, whether ``None`` is one of its values, and the core's bounds for it.

``check_options`` (``core.limits``) validates from this table and the protocols convert
through it: the Zaqar API's reserved metadata keys (``protocols.http.wire``) and Avro RPC's
``QueueOptions`` record (``protocols.avro.records``) name the options in their own words,
but which options exist, their types and their defaults come from here. A new option is a
``QueueOptions`` field and a row here: the HTTP API then takes it as the metadata key
``_<name>``, Avro RPC as the camelCase field of ``qgate.avpr`` (a test checks that the
record has a field for every row). The queue's schema is not in the table: it has its own
calls (``set_schema``, ``clear_schema``).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from qgate.core.model import Overflow, QueueOptions

if TYPE_CHECKING:
    from qgate.core.limits import Limits

__all__ = ["OPTIONS", "Option", "as_value", "with_values"]


@dataclass(frozen=True, slots=True)
class Option:
    #: The ``QueueOptions`` field.
    name: str
    #: Its values: ``bool``, ``int``, ``float``, ``Overflow``, or ``str`` (a queue name).
    kind: type
    #: Whether ``None`` is a value (no bound, no dead-letter queue), not just "the default".
    optional: bool = False
    #: The range of a number, from the core's limits.
    bounds: Callable[[Limits], tuple[float, float]] | None = None


def _ttl(limits: Limits) -> tuple[float, float]:
    return limits.min_ttl, limits.max_ttl


def _size(limits: Limits) -> tuple[float, float]:
    return 1, 2**62


#: In the order ``check_options`` checks them (so the first refusal is the same).
OPTIONS: tuple[Option, ...] = (
    Option("durable", bool),
    Option("default_ttl", float, bounds=_ttl),
    Option("default_delay", float, bounds=lambda limits: (0, limits.max_delay)),
    Option("max_messages", int, optional=True, bounds=_size),
    Option("max_bytes", int, optional=True, bounds=_size),
    Option("overflow", Overflow),
    Option("max_claim_count", int, optional=True, bounds=lambda limits: (1, 2**31)),
    Option("dead_letter_queue", str, optional=True),
    Option("max_post_bytes", int, optional=True, bounds=_size),
    Option("dead_letter_ttl", float, optional=True, bounds=_ttl),
)

_BY_NAME = {option.name: option for option in OPTIONS}
_OVERFLOWS = {o.value: o for o in Overflow}


def as_value(option: Option, raw: Any) -> Any:
    """A value from the wire as the option's type when it is one of them (a whole number
    for a ``float`` option, an overflow's name); anything else as it came, for
    ``check_options`` to refuse with the option named."""
    if option.kind is float and type(raw) is int:
        return float(raw)
    if option.kind is Overflow and isinstance(raw, str):
        return _OVERFLOWS.get(raw, raw)
    return raw


def with_values(
    base: QueueOptions, values: Mapping[str, Any], defaults: QueueOptions
) -> QueueOptions:
    """``base`` with the options named in ``values`` changed; ``None`` sets an option back
    to its value in ``defaults`` (the service's defaults)."""
    changes = {
        name: getattr(defaults, name) if raw is None else as_value(_BY_NAME[name], raw)
        for name, raw in values.items()
    }
    return dataclasses.replace(base, **changes)
