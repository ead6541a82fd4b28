"""Test doubles: a pass-through wrapper to build stand-ins from, and a store that is down.

The real in-memory store is the fake everything else runs on (``qgate.storage.memory``);
these only add what a test needs on top of it.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from twisted.internet.defer import Deferred, fail, maybeDeferred

from qgate.core.errors import StorageUnavailable
from qgate.storage.memory import MemoryStorage


class Delegating:
    """Passes every attribute on to ``target``; a subclass overrides what it changes (a
    slow publish, a counted call) and keeps the rest real."""

    def __init__(self, target: Any) -> None:
        self.target = target

    def __getattr__(self, name: str) -> Any:
        return getattr(self.target, name)


class DownStorage(MemoryStorage):
    """A memory store whose ``methods`` fail with StorageUnavailable, as when the database
    is unreachable: ``times`` calls in all (then they work again), or always."""

    def __init__(self, *methods: str, times: int | None = None) -> None:
        super().__init__()
        self.failures = times
        for name in methods:
            setattr(self, name, self._failing(getattr(self, name)))

    def _failing(self, method: Callable[..., Deferred[Any]]) -> Callable[..., Deferred[Any]]:
        def call(*args: Any, **kwargs: Any) -> Deferred[Any]:
            if self.failures is None or self.failures > 0:
                if self.failures is not None:
                    self.failures -= 1
                return fail(StorageUnavailable("the database is down"))
            return method(*args, **kwargs)

        return call


class HeldClaims(Delegating):
    """A store whose claims are done at once but answered only when the test says
    (``answer()``), as the SQL writer thread answers later on the reactor: a consumer can
    go away while its claim is in flight."""

    def __init__(self, target: Any) -> None:
        super().__init__(target)
        self.held: list[tuple[Deferred[Any], Deferred[Any]]] = []

    def claim(self, *args: Any, **kwargs: Any) -> Deferred[Any]:
        d: Deferred[Any] = Deferred()
        self.held.append((d, maybeDeferred(self.target.claim_now, *args, **kwargs)))
        return d

    def answer(self) -> int:
        """Answer every claim made so far; how many there were."""
        held, self.held = self.held, []
        for d, done in held:
            done.chainDeferred(d)
        return len(held)
