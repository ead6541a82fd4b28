"""How the memory store answers: synchronously, as an already-fired Deferred."""

from __future__ import annotations

from collections.abc import Callable
from typing import ParamSpec, TypeVar

from twisted.internet.defer import Deferred, fail, succeed

from qgate.core.errors import QGateError

P = ParamSpec("P")
T = TypeVar("T")


def fired(f: Callable[P, T]) -> Callable[P, Deferred[T]]:
    """Run ``f`` now; hand its result or its core error back as a fired Deferred."""

    def wrapper(*args: P.args, **kwargs: P.kwargs) -> Deferred[T]:
        try:
            return succeed(f(*args, **kwargs))
        except QGateError as e:
            return fail(e)

    wrapper.__name__ = f.__name__
    wrapper.__doc__ = f.__doc__
    return wrapper
