"""When a failed push is tried again, and when it is given up on: Zaqar's
``_retry_policy`` (queue metadata and subscription options) beside App Engine's retry
parameters, and the subscription options qgate's dispatcher reads. Pure values and
arithmetic (no I/O), so every schedule is exact under a test clock.

Zaqar's schedule, after the first failed attempt: ``retries_with_no_delay`` retries at
once, ``minimum_delay_retries`` after ``minimum_delay`` seconds each, then the delays of
``retry_backoff_function`` from ``minimum_delay`` up to ``maximum_delay`` (steps of 5 s),
then ``maximum_delay_retries`` after ``maximum_delay``; past the end Zaqar gives up.

App Engine's keys, in the same ``_retry_policy`` object (Zaqar ignores keys it does not
know): ``min_backoff_seconds``, ``max_backoff_seconds`` and ``max_doublings`` replace the
schedule (the delay doubles ``max_doublings`` times from the minimum, then grows by the
last doubled step, never past the maximum); ``task_retry_limit`` and ``task_age_limit``
replace the give-up rule, and when both are set both must be passed before giving up.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from qgate.core.errors import InvalidArgument

#: Zaqar's defaults (``zaqar/common/consts.py``) and the step of its backoff functions.
RETRIES_WITH_NO_DELAY = 3
MINIMUM_DELAY_RETRIES = 3
MINIMUM_DELAY = 5
MAXIMUM_DELAY = 30
MAXIMUM_DELAY_RETRIES = 3
LINEAR_INTERVAL = 5
BACKOFF_FUNCTIONS = ("linear", "arithmetic", "exponential", "geometric")
#: App Engine's defaults once any of its backoff keys is given.
MIN_BACKOFF = 0.1
MAX_BACKOFF = 3600.0
MAX_DOUBLINGS = 16

_APP_ENGINE_BACKOFF = ("min_backoff_seconds", "max_backoff_seconds", "max_doublings")
_APP_ENGINE_LIMITS = ("task_retry_limit", "task_age_limit")


def _linear(low: float, high: float, step: int) -> list[float]:
    out, delay = [], low
    while delay < high:
        out.append(delay)
        delay += step
    return out


def _ratio(low: float, high: float, count: int) -> float:
    return float(math.pow(high / low, 1.0 / (count - 1)))


def _geometric(low: float, high: float, step: int) -> list[float]:
    """``count`` delays growing by one ratio from ``low`` towards ``high``, whole seconds
    (Zaqar's geometric and exponential functions give the same series)."""
    count = int((high - low) / step)
    if count < 2 or low <= 0:
        return _linear(low, high, step)
    k = _ratio(low, high, count)
    return [float(int(low * k ** (a - 1))) for a in range(1, count + 1)]


def _arithmetic(low: float, high: float, step: int) -> list[float]:
    """Delays whose increments grow by one constant, from ``low`` to ``high``."""
    count = int((high - low) / step)
    if count < 2:
        return _linear(low, high, step)
    d = 2.0 * (high - low) / (count * (count - 1))
    return [float(int(low + (a - 1) * a * d / 2)) for a in range(1, count + 1)]


_BACKOFF = {
    "linear": _linear,
    "arithmetic": _arithmetic,
    "exponential": _geometric,
    "geometric": _geometric,
}


@dataclass(frozen=True)
class RetryPolicy:
    """One subscription's effective retry policy (``resolve``)."""

    retries_with_no_delay: int = RETRIES_WITH_NO_DELAY
    minimum_delay_retries: int = MINIMUM_DELAY_RETRIES
    minimum_delay: float = MINIMUM_DELAY
    maximum_delay: float = MAXIMUM_DELAY
    maximum_delay_retries: int = MAXIMUM_DELAY_RETRIES
    retry_backoff_function: str = "linear"
    min_backoff_seconds: float | None = None
    max_backoff_seconds: float | None = None
    max_doublings: int | None = None
    task_retry_limit: int | None = None
    task_age_limit: float | None = None

    def schedule(self) -> list[float]:
        """Zaqar's delays, one per retry, before it gives up."""
        low, high = self.minimum_delay, self.maximum_delay
        backoff = _BACKOFF[self.retry_backoff_function](low, high, LINEAR_INTERVAL)
        return (
            [0.0] * self.retries_with_no_delay
            + [float(low)] * self.minimum_delay_retries
            + backoff
            + [float(high)] * self.maximum_delay_retries
        )

    @property
    def app_engine_backoff(self) -> bool:
        return any(getattr(self, key) is not None for key in _APP_ENGINE_BACKOFF)

    @property
    def app_engine_limits(self) -> bool:
        return any(getattr(self, key) is not None for key in _APP_ENGINE_LIMITS)

    def delay(self, retry: int) -> float:
        """Seconds to wait before retry number ``retry`` (1: the one after the first
        failed attempt)."""
        if self.app_engine_backoff:
            low = MIN_BACKOFF if self.min_backoff_seconds is None else self.min_backoff_seconds
            high = MAX_BACKOFF if self.max_backoff_seconds is None else self.max_backoff_seconds
            doublings = MAX_DOUBLINGS if self.max_doublings is None else self.max_doublings
            if retry - 1 <= doublings:
                wait = low * 2.0 ** (retry - 1)
            else:
                wait = low * 2.0**doublings * (retry - doublings)
            return float(min(wait, high))
        steps = self.schedule()
        if not steps:
            return float(self.maximum_delay)
        return steps[min(retry, len(steps)) - 1]

    def gives_up(self, attempts: int, age: float) -> bool:
        """Whether a message that failed ``attempts`` times and was published ``age``
        seconds ago is given up on (else it is retried after ``delay(attempts)``)."""
        retries = attempts - 1  # retries made so far
        if self.app_engine_limits:
            count = self.task_retry_limit is None or retries >= self.task_retry_limit
            old = self.task_age_limit is None or age >= self.task_age_limit
            return count and old
        return retries >= len(self.schedule())


def _number(policy: Mapping[str, Any], key: str, *, whole: bool, low: float) -> Any:
    value = policy.get(key)
    if value is None or (not value and type(value) not in (int, float)):
        return None  # Zaqar lets a false value through and takes the default
    if isinstance(value, bool) or not isinstance(value, int if whole else int | float):
        kind = "a whole number" if whole else "a number"
        raise InvalidArgument(f"_retry_policy.{key} must be {kind}", field=key)
    if value < low or (not whole and not math.isfinite(value)):
        raise InvalidArgument(f"_retry_policy.{key} must be at least {low:g}", field=key)
    return value


def parse_retry_policy(policy: Any) -> RetryPolicy:
    """The ``RetryPolicy`` of one ``_retry_policy`` object (None or {}: the defaults);
    InvalidArgument naming the key for a value that cannot be one."""
    if policy is None or policy == {}:
        return RetryPolicy()
    if not isinstance(policy, Mapping):
        raise InvalidArgument("_retry_policy must be an object", field="_retry_policy")
    values: dict[str, Any] = {}
    for key in ("retries_with_no_delay", "minimum_delay_retries", "maximum_delay_retries"):
        values[key] = _number(policy, key, whole=True, low=0)
    for key in ("minimum_delay", "maximum_delay"):
        values[key] = _number(policy, key, whole=False, low=0)
    function = policy.get("retry_backoff_function")
    if function is not None and function not in BACKOFF_FUNCTIONS:
        raise InvalidArgument(
            f"_retry_policy.retry_backoff_function must be one of {', '.join(BACKOFF_FUNCTIONS)}",
            field="retry_backoff_function",
        )
    values["retry_backoff_function"] = function
    values["min_backoff_seconds"] = _number(policy, "min_backoff_seconds", whole=False, low=0)
    values["max_backoff_seconds"] = _number(policy, "max_backoff_seconds", whole=False, low=0)
    values["max_doublings"] = _number(policy, "max_doublings", whole=True, low=0)
    values["task_retry_limit"] = _number(policy, "task_retry_limit", whole=True, low=0)
    values["task_age_limit"] = _number(policy, "task_age_limit", whole=False, low=0)
    checked = RetryPolicy(**{k: v for k, v in values.items() if v is not None})
    if checked.maximum_delay < checked.minimum_delay:
        raise InvalidArgument(
            "_retry_policy.minimum_delay must be less than maximum_delay", field="minimum_delay"
        )
    low, high = checked.min_backoff_seconds, checked.max_backoff_seconds
    if low is not None and high is not None and high < low:
        raise InvalidArgument(
            "_retry_policy.min_backoff_seconds must be at most max_backoff_seconds",
            field="min_backoff_seconds",
        )
    return checked


def _overrides(policy: Any) -> bool:
    return isinstance(policy, Mapping) and policy.get("ignore_subscription_override") is True


def resolve(options: Mapping[str, Any], metadata: Mapping[str, Any]) -> RetryPolicy:
    """The policy a subscription's pushes follow, as Zaqar picks it: the queue's
    ``_retry_policy`` when either says ``ignore_subscription_override``, else the
    subscription's, else the queue's, else the defaults. A policy stored before it was
    checked and that does not parse falls back to the defaults."""
    mine, queue = options.get("_retry_policy"), metadata.get("_retry_policy")
    chosen = queue if _overrides(mine) or _overrides(queue) else (mine or queue)
    try:
        return parse_retry_policy(chosen or None)
    except InvalidArgument:
        return RetryPolicy()


@dataclass(frozen=True)
class PushOptions:
    """What a subscription's ``options`` ask of its pushes besides the retry policy:
    Zaqar's ``post_headers`` and ``post_data``, and App Engine's per-queue limits (None:
    the dispatcher's defaults)."""

    post_headers: Mapping[str, str]
    post_data: str | None = None
    max_concurrent_requests: int | None = None
    max_dispatches_per_second: float | None = None
    max_burst_size: int | None = None


def parse_push_options(options: Mapping[str, Any]) -> PushOptions:
    """The ``PushOptions`` of a subscription's options, InvalidArgument naming the key
    for one that cannot be used (the retry policy is checked too)."""
    parse_retry_policy(options.get("_retry_policy"))
    headers = options.get("post_headers") or {}
    if not isinstance(headers, Mapping) or not all(
        isinstance(k, str) and isinstance(v, str) and _header_ok(k, v) for k, v in headers.items()
    ):
        raise InvalidArgument(
            "options.post_headers must be an object of header names to string values, "
            "without control characters",
            field="post_headers",
        )
    data = options.get("post_data")
    if data is not None and not isinstance(data, str):
        raise InvalidArgument(
            'options.post_data must be a string (a template with "$zaqar_message$")',
            field="post_data",
        )
    limits: dict[str, Any] = {}
    for key, whole in (
        ("max_concurrent_requests", True),
        ("max_dispatches_per_second", False),
        ("max_burst_size", True),
    ):
        value = options.get(key)
        if value is None:
            continue
        kind = int if whole else int | float
        if isinstance(value, bool) or not isinstance(value, kind) or not 0 < value < 1e9:
            raise InvalidArgument(f"options.{key} must be a positive number", field=key)
        limits[key] = value
    return PushOptions(dict(headers), data, **limits)


def _header_ok(name: str, value: str) -> bool:
    return (
        bool(name)
        and all(33 <= ord(c) < 127 and c != ":" for c in name)
        and not any(c in value for c in "\r\n\x00")
    )


__all__ = [
    "PushOptions",
    "RetryPolicy",
    "parse_push_options",
    "parse_retry_policy",
    "resolve",
]
