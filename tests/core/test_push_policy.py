"""Retry schedules and give-up rules of push delivery (``core.push_policy``)."""

from __future__ import annotations

import pytest

from qgate.core.errors import InvalidArgument
from qgate.core.push_policy import RetryPolicy, parse_push_options, parse_retry_policy, resolve


def test_zaqars_default_schedule_is_three_immediate_three_minimum_linear_three_maximum():
    assert RetryPolicy().schedule() == [0, 0, 0, 5, 5, 5, 5, 10, 15, 20, 25, 30, 30, 30]


@pytest.mark.parametrize(
    ("function", "expected"),
    [
        ("linear", [10, 15, 20, 25, 30, 35]),
        ("geometric", [10, 12, 15, 18, 22, 27, 33, 40][:6]),
        ("arithmetic", [10, 11, 14, 20, 27, 37][:6]),
    ],
)
def test_the_backoff_functions_grow_from_the_minimum_towards_the_maximum(function, expected):
    policy = RetryPolicy(0, 0, 10, 40, 0, function)
    steps = policy.schedule()
    assert steps == sorted(steps) and steps[0] == 10 and steps[-1] <= 40
    if function == "linear":
        assert steps == expected


def test_zaqars_rule_gives_up_once_the_schedule_is_spent():
    policy = RetryPolicy()
    assert not policy.gives_up(attempts=14, age=10**6)
    assert policy.gives_up(attempts=15, age=0)


def test_app_engine_backoff_doubles_then_grows_linearly_up_to_the_maximum():
    policy = RetryPolicy(min_backoff_seconds=1, max_backoff_seconds=20, max_doublings=2)
    assert [policy.delay(n) for n in range(1, 8)] == [1, 2, 4, 8, 12, 16, 20]


def test_app_engine_limits_must_both_be_passed():
    policy = RetryPolicy(task_retry_limit=3, task_age_limit=60)
    assert not policy.gives_up(attempts=4, age=59)  # retries passed, age not
    assert not policy.gives_up(attempts=2, age=600)  # age passed, retries not
    assert policy.gives_up(attempts=4, age=60)
    assert RetryPolicy(task_retry_limit=0).gives_up(attempts=1, age=0)
    assert not RetryPolicy(task_age_limit=60).gives_up(attempts=1000, age=59)


def test_the_queues_policy_wins_when_either_ignores_the_subscriptions():
    mine = {"_retry_policy": {"retries_with_no_delay": 1}}
    queue = {"_retry_policy": {"retries_with_no_delay": 7}}
    assert resolve(mine, queue).retries_with_no_delay == 1
    assert resolve({}, queue).retries_with_no_delay == 7
    forced = {"_retry_policy": {"retries_with_no_delay": 7, "ignore_subscription_override": True}}
    assert resolve(mine, forced).retries_with_no_delay == 7


@pytest.mark.parametrize(
    "policy",
    [
        {"task_retry_limit": -1},
        {"max_doublings": 1.5},
        {"min_backoff_seconds": 10, "max_backoff_seconds": 1},
        {"retry_backoff_function": "cubic"},
        {"minimum_delay": 50, "maximum_delay": 10},
        [],
    ],
)
def test_a_policy_that_cannot_be_followed_is_refused(policy):
    with pytest.raises(InvalidArgument):
        parse_retry_policy(policy)


def test_a_zero_is_kept_and_other_false_values_take_the_defaults_as_in_zaqar():
    assert parse_retry_policy({"retries_with_no_delay": 0, "minimum_delay": ""}) == RetryPolicy(
        retries_with_no_delay=0
    )


def test_push_options_read_headers_template_and_limits():
    options = parse_push_options(
        {"post_headers": {"X-A": "1"}, "post_data": "x", "max_concurrent_requests": 3}
    )
    assert (options.post_headers, options.post_data, options.max_concurrent_requests) == (
        {"X-A": "1"},
        "x",
        3,
    )
    with pytest.raises(InvalidArgument):
        parse_push_options({"post_headers": {"X-A": "1\r\nInjected: yes"}})
