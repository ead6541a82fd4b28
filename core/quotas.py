"""Per-tenant quotas and rate limits: the defaults (``[quotas]``), the overrides stored per
tenant (``qgate tenant set-quota``), and the value in force for a tenant.

A value of 0 means unlimited. The defaults are finite but far above what one honest user
needs, so a single runaway or hostile tenant is bounded without anyone else noticing.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, fields, replace
from types import MappingProxyType
from typing import Any

from qgate.core.errors import InvalidArgument


@dataclass(frozen=True, slots=True)
class Quotas:
    """One tenant's bounds (and the ``[quotas]`` defaults every tenant starts from)."""

    #: Queues a tenant may have (durable and transient together).
    max_queues: int = 10_000
    #: Messages a tenant may store, all its queues together (expired, unreaped included).
    max_messages: int = 10_000_000
    #: Bytes of message bodies a tenant may store (10 GiB).
    max_bytes: int = 10 * 1024**3
    #: STOMP subscriptions, push subscriptions and long-poll waiters, together.
    max_subscriptions: int = 10_000
    #: Open connections, all protocols: STOMP sessions (TCP and WebSocket), HTTP connections.
    max_connections: int = 10_000
    #: Messages per second a tenant may publish (token bucket refill) ...
    publish_rate: float = 100_000.0
    #: ... and how many it may publish at once beyond that (the bucket's size).
    publish_burst: float = 200_000.0
    #: Requests per second (HTTP and Avro RPC calls) ...
    request_rate: float = 20_000.0
    #: ... and the burst of them.
    request_burst: float = 40_000.0

    def get(self, key: str) -> float:
        value: float = getattr(self, key)
        return value


#: Every quota's name, in the order ``[quotas]`` documents them.
QUOTA_KEYS: tuple[str, ...] = tuple(f.name for f in fields(Quotas))
_INTEGER = frozenset(k for k in QUOTA_KEYS if k.startswith("max_"))


def check_quota(key: object, value: object) -> tuple[str, float]:
    """``(key, value)`` when ``key`` names a quota and ``value`` fits it (a number >= 0,
    whole for the ``max_*`` ones); InvalidArgument naming what is wrong otherwise."""
    if key not in QUOTA_KEYS:
        raise InvalidArgument(
            f"unknown quota {key!r:.80} (known: {', '.join(QUOTA_KEYS)})", field="quota"
        )
    assert isinstance(key, str)
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        raise InvalidArgument(f"{key} must be a finite number (got {value!r:.40})", field=key)
    if value < 0 or (key in _INTEGER and not float(value).is_integer()):
        raise InvalidArgument(
            f"{key} must be a {'whole ' if key in _INTEGER else ''}number, at least 0 "
            f"(0: unlimited; got {value!r})",
            field=key,
        )
    return key, float(value)


def check_quotas(quotas: Quotas) -> Quotas:
    """The ``[quotas]`` defaults checked (``ValueError`` naming the key, for the config)."""
    for key in QUOTA_KEYS:
        try:
            check_quota(key, quotas.get(key))
        except InvalidArgument as e:
            raise ValueError(f"{key}: {e.description}") from None
    return quotas


class TenantQuotas:
    """The quotas in force: ``defaults`` with each tenant's stored overrides on top.

    ``replace_overrides`` swaps in what storage holds now (the tenant watch calls it when
    the change counter moves); ``of`` is a dictionary lookup, cheap enough per call."""

    def __init__(self, defaults: Quotas | None = None) -> None:
        self.defaults = defaults or Quotas()
        self._overrides: Mapping[str, Mapping[str, float]] = MappingProxyType({})
        self._effective: dict[str, Quotas] = {}

    def replace_overrides(self, overrides: Mapping[str, Mapping[str, float]]) -> None:
        self._overrides = MappingProxyType({t: dict(v) for t, v in overrides.items()})
        self._effective = {}

    def overrides(self, tenant: str) -> Mapping[str, float]:
        return self._overrides.get(tenant, {})

    def of(self, tenant: str) -> Quotas:
        found = self._effective.get(tenant)
        if found is not None:
            return found
        own = self._overrides.get(tenant)
        if not own:
            return self.defaults
        values = {k: (int(v) if k in _INTEGER else float(v)) for k, v in own.items()}
        found = self._effective[tenant] = _replace(self.defaults, values)
        return found


def _replace(quotas: Quotas, values: Mapping[str, float]) -> Quotas:
    known: dict[str, Any] = {k: v for k, v in values.items() if k in QUOTA_KEYS}
    return replace(quotas, **known)
