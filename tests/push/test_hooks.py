"""Push hooks are found by entry point name or ``module:attribute``; a broken hook is
logged and never loses a delivery."""

from __future__ import annotations

import pytest

from qgate.protocols.push.client import Outcome, PushRequest
from qgate.protocols.push.hooks import Task, load_hook, load_hooks, run_after, run_before


class Recorder:
    """A hook class: instantiated without arguments when loaded."""

    def __init__(self) -> None:
        self.seen: list[int | None] = []

    def after(self, task: Task, outcome: Outcome) -> None:
        self.seen.append(outcome.status)


class Broken:
    def before(self, task: Task) -> Task:
        raise RuntimeError("bug")

    def after(self, task: Task, outcome: Outcome) -> None:
        raise RuntimeError("bug")


TASK = Task("t", "q", "s", 1, 1, PushRequest("http://h.example/", {}, b"{}"))


def test_a_hook_is_loaded_by_module_and_attribute_and_a_class_is_instantiated():
    hook = load_hook("tests.push.test_hooks:Recorder")
    assert isinstance(hook, Recorder)
    run_after([hook], TASK, Outcome(204))
    assert hook.seen == [204]


def test_an_unknown_hook_is_a_configuration_error_naming_it():
    with pytest.raises(ValueError, match="no-such-hook"):
        load_hooks(["no-such-hook"])
    with pytest.raises(ValueError, match="cannot load"):
        load_hook("tests.push.test_hooks:Missing")


def test_a_hook_that_raises_is_left_out_and_the_task_goes_on(logged):
    assert run_before([Broken()], TASK) == TASK
    run_after([Broken()], TASK, Outcome(204))
    assert sum(1 for e in logged if e.get("log_failure") is not None) == 2


def test_the_push_table_refuses_a_hook_it_cannot_find():
    from qgate.gateway.config import ConfigError, parse

    with pytest.raises(ConfigError, match="hooks"):
        parse({"push": {"hooks": ["nowhere:nothing"]}})
    assert parse({"push": {"hooks": ["tests.push.test_hooks:Recorder"]}})
