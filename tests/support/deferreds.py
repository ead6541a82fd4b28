"""Reading Deferreds in tests: one that has fired, one that may have, one that will."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, TypeVar

from twisted.internet import task
from twisted.internet.defer import Deferred

T = TypeVar("T")


def fired(d: Deferred[T]) -> T:
    """The result of a Deferred that has already fired (memory backend, synchronous)."""
    results: list[Any] = []
    d.addBoth(results.append)
    assert results, "the Deferred has not fired"
    result = results[0]
    if hasattr(result, "raiseException"):
        result.raiseException()
    return result  # type: ignore[no-any-return]


def has_result(d: Deferred[Any]) -> bool:
    """Whether ``d`` has a result yet (without consuming it)."""
    box: list[Any] = []

    def keep(result: Any) -> Any:
        box.append(result)
        return result

    d.addBoth(keep)
    return bool(box)


async def until(predicate: Callable[[], bool], timeout: float = 10.0) -> None:
    """Let the real reactor run until ``predicate()`` holds (for thread-backed stores)."""
    from twisted.internet import reactor

    waited = 0.0
    while not predicate():
        if waited > timeout:
            raise AssertionError("condition not reached in time")
        await task.deferLater(reactor, 0.005, lambda: None)
        waited += 0.005
