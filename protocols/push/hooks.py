"""Hooks around each push attempt, as plugins: objects named in ``[push] hooks`` by
their entry point name in the ``qgate.push_hooks`` group (or ``"module:attribute"``).

A hook may define ``before(task)``, returning the task to send (``dataclasses.replace``
it to change headers or the body) or None to skip it (the delivery is settled as
delivered, nothing is sent), and ``after(task, outcome)`` to record how it ended. A hook
that raises is logged and left out of that attempt; it never loses a delivery.
"""

from __future__ import annotations

import importlib
from collections.abc import Sequence
from dataclasses import dataclass
from importlib.metadata import entry_points
from typing import Any

from twisted.logger import Logger

from qgate.protocols.push.client import Outcome, PushRequest

GROUP = "qgate.push_hooks"
log = Logger()


@dataclass(frozen=True)
class Task:
    """One attempt as hooks see it."""

    tenant: str
    queue: str
    subscription_id: str
    marker: int
    attempt: int  # 1 for the first
    request: PushRequest


def load_hook(name: str) -> Any:
    """The hook named ``name``: an entry point of ``GROUP``, or ``module:attribute``; a
    class is instantiated without arguments. ValueError when it cannot be found."""
    found: Any = None
    for ep in entry_points(group=GROUP):
        if ep.name == name:
            found = ep.load()
            break
    if found is None and ":" in name:
        module, _, attr = name.partition(":")
        try:
            found = getattr(importlib.import_module(module), attr)
        except (ImportError, AttributeError) as e:
            raise ValueError(f"hooks: cannot load {name!r}: {e}") from None
    if found is None:
        raise ValueError(f"hooks: no entry point {name!r} in the group {GROUP}")
    if isinstance(found, type):
        found = found()
    if not (hasattr(found, "before") or hasattr(found, "after")):
        raise ValueError(f"hooks: {name!r} has neither before() nor after()")
    return found


def load_hooks(names: Sequence[str]) -> list[Any]:
    return [load_hook(name) for name in names]


def run_before(hooks: Sequence[Any], task: Task) -> Task | None:
    """The task after every ``before`` hook; None when one skipped it."""
    for hook in hooks:
        before = getattr(hook, "before", None)
        if before is None:
            continue
        try:
            changed = before(task)
        except Exception:  # noqa: BLE001 - a hook's bug must not lose the delivery
            log.failure("push hook {hook!r} failed before an attempt", hook=hook)
            continue
        if changed is None:
            return None
        task = changed
    return task


def run_after(hooks: Sequence[Any], task: Task, outcome: Outcome) -> None:
    for hook in hooks:
        after = getattr(hook, "after", None)
        if after is None:
            continue
        try:
            after(task, outcome)
        except Exception:  # noqa: BLE001
            log.failure("push hook {hook!r} failed after an attempt", hook=hook)
