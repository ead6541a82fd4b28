"""The dispatcher on a memory service and a test clock: what it sends, when it tries
again, when it gives up, its limits, fan-out and hooks."""

from __future__ import annotations

import json
from dataclasses import replace

import pytest_twisted
from twisted.internet import defer

from qgate.core.model import QueueOptions
from qgate.protocols.push.client import Outcome
from qgate.protocols.push.settings import PushSettings
from tests.push.support import FAST, HOOK, ScriptedPusher, T, dispatcher, json_messages
from tests.support.core import make_clock, memory_service
from tests.support.deferreds import fired


def setup(answer=None, settings=FAST, options=None, metadata=None, hooks=()):
    clock = make_clock()
    service = memory_service(clock)
    fired(service.create_queue(T, "q", QueueOptions(durable=True), metadata or {}))
    sub, _ = fired(service.create_subscription(T, "q", HOOK, 86400, options or {}))
    pusher = ScriptedPusher() if answer is None else ScriptedPusher(answer)
    d = dispatcher(service, pusher, settings, hooks=hooks)
    d.startService()
    return clock, service, sub, pusher, d


def publish(service, *bodies, **kw):
    return fired(service.publish(T, "q", json_messages(*bodies, **kw)))


def test_a_published_message_is_posted_as_zaqars_notification():
    clock, service, sub, pusher, d = setup()
    [mid] = publish(service, '{"event": "made"}', ttl=300)
    clock.advance(0)
    [request] = pusher.sent
    assert request.url == HOOK
    assert json.loads(request.body) == {
        "body": {"event": "made"},
        "ttl": 300,
        "queue_name": "q",
        "Message_Type": "Notification",
    }
    assert request.headers["Content-Type"] == "application/json"
    assert request.headers["X-Qgate-Queue"] == "q"
    assert request.headers["X-Qgate-Message-Id"] == mid
    assert request.headers["X-Qgate-Subscription-Id"] == sub.id
    assert request.headers["X-Qgate-Attempt"] == "1"
    stats = fired(service.push_stats(T, "q", sub.id))
    assert (stats.delivered, stats.pending, stats.lag, stats.failed) == (1, 0, 0, 0)


def test_post_headers_and_post_data_shape_the_request():
    options = {"post_headers": {"X-Token": "s3cret"}, "post_data": '{"wrapped": "$zaqar_message$"}'}
    clock, service, sub, pusher, d = setup(options=options)
    publish(service, "1")
    clock.advance(0)
    [request] = pusher.sent
    assert request.headers["X-Token"] == "s3cret"
    assert json.loads(request.body)["wrapped"]["body"] == 1


def test_messages_published_before_the_subscription_are_not_pushed():
    clock = make_clock()
    service = memory_service(clock)
    fired(service.publish(T, "q", json_messages("0")))
    fired(service.create_subscription(T, "q", HOOK))
    pusher = ScriptedPusher()
    dispatcher(service, pusher).startService()
    [later] = fired(service.publish(T, "q", json_messages("1")))
    clock.advance(0)
    assert pusher.ids() == [later]


def test_a_failed_push_follows_zaqars_schedule_then_gives_up():
    clock, service, sub, pusher, d = setup(lambda r: Outcome(500, "HTTP 500"))
    [mid] = publish(service, "1")
    clock.advance(0)
    # 3 retries at once, 3 after 5 s, linear 5..25, 3 after 30 s: 15 retries, 16 attempts.
    expected = [0, 0, 0, 5, 5, 5, 5, 10, 15, 20, 25, 30, 30, 30]
    assert len(pusher.sent) == 4
    for wait in expected[3:]:
        clock.advance(wait - 0.01)
        before = len(pusher.sent)
        clock.advance(0.01)
        assert len(pusher.sent) == before + 1
    clock.advance(3600)
    assert len(pusher.sent) == 15
    stats = fired(service.push_stats(T, "q", sub.id))
    assert (stats.given_up, stats.failed, stats.pending, stats.last_error) == (
        1,
        15,
        0,
        "HTTP 500",
    )


def test_a_retry_after_longer_than_the_schedule_is_honoured():
    answers = [Outcome(503, "HTTP 503", retry_after=120.0), Outcome(204)]
    clock, service, sub, pusher, d = setup(lambda r: answers.pop(0))
    publish(service, "1")
    clock.advance(0)
    assert len(pusher.sent) == 1
    clock.advance(119)
    assert len(pusher.sent) == 1
    clock.advance(1)
    assert pusher.attempts()[-1][1] == "2"
    assert fired(service.push_stats(T, "q", sub.id)).delivered == 1


def test_app_engine_limits_both_pass_before_giving_up():
    policy = {
        "_retry_policy": {"min_backoff_seconds": 10, "task_retry_limit": 2, "task_age_limit": 100}
    }
    clock, service, sub, pusher, d = setup(lambda r: Outcome(500, "HTTP 500"), options=policy)
    publish(service, "1")
    clock.advance(0)
    clock.advance(10)  # retry 1 after 10 s
    clock.advance(20)  # retry 2 after 20 s: the retry limit is passed, the age (30 s) is not
    assert len(pusher.sent) == 3
    clock.advance(40)  # retry 3 at 70 s
    clock.advance(80)  # retry 4 at 150 s: both limits passed after it
    assert len(pusher.sent) == 5
    clock.advance(10_000)
    assert len(pusher.sent) == 5
    assert fired(service.push_stats(T, "q", sub.id)).given_up == 1


def test_the_queues_retry_policy_applies_when_the_subscription_names_none():
    metadata = {
        "_retry_policy": {
            "retries_with_no_delay": 0,
            "minimum_delay_retries": 0,
            "maximum_delay_retries": 0,
            "minimum_delay": 10,
            "maximum_delay": 20,
        }
    }
    clock, service, sub, pusher, d = setup(lambda r: Outcome(500), metadata=metadata)
    publish(service, "1")
    clock.advance(0)
    clock.advance(10)
    clock.advance(15)
    clock.advance(1000)
    assert len(pusher.sent) == 3  # linear 10, 15; then given up


def test_a_message_given_up_on_goes_to_the_dead_letter_queue():
    clock = make_clock()
    service = memory_service(clock)
    fired(service.create_queue(T, "q", QueueOptions(dead_letter_queue="dlq")))
    policy = {"_retry_policy": {"task_retry_limit": 0}}
    fired(service.create_subscription(T, "q", HOOK, options=policy))
    pusher = ScriptedPusher(lambda r: Outcome(410, "HTTP 410"))
    dispatcher(service, pusher).startService()
    publish(service, '{"lost": true}')
    clock.advance(0)
    [dead] = fired(service.observe(T, "dlq"))
    assert json.loads(dead.body) == {"lost": True}


def test_concurrent_requests_per_subscription_are_capped():
    stalled: list[defer.Deferred[Outcome]] = []

    def stall(request):
        d: defer.Deferred[Outcome] = defer.Deferred()
        stalled.append(d)
        return d

    settings = replace(FAST, max_concurrent_requests=2, window=10)
    clock, service, sub, pusher, d = setup(stall, settings=settings)
    publish(service, "1", "2", "3", "4", "5")
    clock.advance(0)
    assert len(pusher.sent) == 2
    assert d.in_flight(T, "q", sub.id) == 2
    stalled[0].callback(Outcome(204))
    assert len(pusher.sent) == 3
    while not all(s.called for s in stalled):
        next(s for s in stalled if not s.called).callback(Outcome(204))
    assert len(pusher.sent) == 5
    assert fired(service.push_stats(T, "q", sub.id)).delivered == 5


def test_the_rate_limit_spaces_pushes_out():
    options = {"max_dispatches_per_second": 2, "max_burst_size": 1}
    clock, service, sub, pusher, d = setup(options=options)
    publish(service, *[str(i) for i in range(5)])
    clock.advance(0)
    assert len(pusher.sent) == 1
    for expected in (2, 3, 4, 5):
        clock.advance(0.49)
        assert len(pusher.sent) == expected - 1
        clock.advance(0.01)
        assert len(pusher.sent) == expected


def test_a_dead_subscriber_does_not_delay_another():
    clock = make_clock()
    service = memory_service(clock)
    fired(service.create_subscription(T, "q", "http://dead.example/"))
    fired(service.create_subscription(T, "q", "http://alive.example/"))

    def answer(request):
        if "dead" in request.url:
            return defer.Deferred()  # never answers
        return Outcome(204)

    pusher = ScriptedPusher(answer)
    dispatcher(service, pusher).startService()
    ids = publish(service, *[str(i) for i in range(30)])
    clock.advance(0)
    alive = [r.headers["X-Qgate-Message-Id"] for r in pusher.sent if "alive" in r.url]
    assert alive == ids  # each subscription gets every message


def test_a_hook_may_change_headers_skip_a_task_and_see_the_outcome():
    seen = []

    class Hook:
        def before(self, task):
            if task.marker == 2:
                return None
            headers = dict(task.request.headers, Authorization="Bearer t")
            return replace(task, request=replace(task.request, headers=headers))

        def after(self, task, outcome):
            seen.append((task.marker, outcome.status, outcome.skipped))

    clock, service, sub, pusher, d = setup(hooks=[Hook()])
    publish(service, "1", "2", "3")
    clock.advance(0)
    assert pusher.ids() == ["1", "3"]
    assert all(r.headers["Authorization"] == "Bearer t" for r in pusher.sent)
    assert sorted(seen) == [(1, 204, False), (2, None, True), (3, 204, False)]
    assert fired(service.push_stats(T, "q", sub.id)).delivered == 3


def test_a_deleted_subscription_stops_being_pushed():
    clock, service, sub, pusher, d = setup()
    publish(service, "1")
    clock.advance(0)
    fired(service.delete_subscription(T, "q", sub.id))
    clock.advance(1)  # the next lease round stops its pump
    publish(service, "2")
    clock.advance(1)
    assert pusher.ids() == ["1"]
    assert d.pumps == {}


def test_a_stopped_dispatcher_gives_its_leases_back():
    clock, service, sub, pusher, d = setup()
    fired(d.stopService())
    held = fired(service.lease_push("dispatcher-b", 10.0))
    assert [h.subscription.id for h in held] == [sub.id]


def test_only_confirmed_subscriptions_are_pushed_when_confirmation_is_required():
    settings = replace(FAST, require_confirmation=True)
    clock, service, sub, pusher, d = setup(settings=settings)
    publish(service, "1")
    clock.advance(1)
    assert pusher.sent == []
    fired(service.update_subscription(T, "q", sub.id, confirmed=True))
    clock.advance(1)
    assert pusher.ids() == ["1"]


def test_push_settings_refuse_a_scan_slower_than_half_the_lease():
    from qgate.core.limits import Limits

    bad = PushSettings(scan_interval=10, lease=15)
    try:
        bad.check(Limits())
    except ValueError as e:
        assert str(e).startswith("scan_interval:")
    else:
        raise AssertionError("accepted")


@pytest_twisted.ensureDeferred
async def test_bad_push_options_are_refused_when_subscribing():
    from qgate.core.errors import InvalidArgument

    clock = make_clock()
    service = memory_service(clock)
    for options in (
        {"post_headers": {"X": 1}},
        {"post_data": {"a": 1}},
        {"max_concurrent_requests": 0},
        {"_retry_policy": {"task_retry_limit": -1}},
    ):
        try:
            await service.create_subscription(T, "q", HOOK, options=options)
        except InvalidArgument:
            continue
        raise AssertionError(f"accepted {options}")


def test_deliveries_and_failed_attempts_are_counted_for_the_metrics():
    from qgate.core.metrics import PUSH_DELIVERED, PUSH_FAILED, RecordingMetrics

    clock = make_clock()
    service = memory_service(clock)
    fired(service.create_queue(T, "q", QueueOptions(durable=True), {}))
    fired(service.create_subscription(T, "q", HOOK, 86400, {}))
    answers = iter([Outcome(503, "HTTP 503"), Outcome(204)])
    metrics = RecordingMetrics()
    dispatcher(service, ScriptedPusher(lambda r: next(answers)), metrics=metrics).startService()
    publish(service, "1")
    clock.advance(0)  # the first attempt fails, the retry (no delay at first) delivers
    assert metrics.counts[(PUSH_FAILED, (("protocol", "push"),))] == 1
    assert metrics.counts[(PUSH_DELIVERED, (("protocol", "push"),))] == 1
