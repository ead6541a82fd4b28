"""Operator calls of the core (``core/admin.py``) on every backend, and the metered
service's counts (``core/metrics.py``)."""

from __future__ import annotations

import pytest
import pytest_twisted
from zope.interface.verify import verifyObject

from qgate.core.admin import DepthReport, IQueueAdmin, QueueDepth, merge_reports
from qgate.core.errors import InvalidArgument, QueueNotFound
from qgate.core.metrics import (
    ACKED,
    DELIVERED,
    PUBLISHED,
    RELEASED,
    IMetrics,
    MeteredService,
    NullMetrics,
    QueueRates,
    RecordingMetrics,
)
from qgate.core.model import QueueOptions
from tests.support.core import memory_service, msgs


def test_the_service_provides_the_admin_calls(service):
    assert verifyObject(IQueueAdmin, service)


def test_both_metrics_implementations_provide_imetrics():
    assert verifyObject(IMetrics, NullMetrics())
    assert verifyObject(IMetrics, RecordingMetrics())


async def dead_lettered(service, clock, n: int = 3) -> None:
    """``jobs`` dead-letters into ``jobs-dlq`` after one claim; ``n`` messages end there."""
    options = QueueOptions(max_claim_count=1, dead_letter_queue="jobs-dlq")
    await service.create_queue("t", "jobs", options)
    await service.publish("t", "jobs", msgs(*[b"m%d" % i for i in range(n)], headers={"k": "v"}))
    await service.claim("t", "jobs", limit=n, ttl=5)
    clock.advance(6)
    await service.claim("t", "jobs", limit=n)  # meets them claimed once: moves them


@pytest_twisted.ensureDeferred
async def test_moving_a_dead_letter_queue_back_publishes_to_the_source_and_empties_it(
    service, clock
):
    await dead_lettered(service, clock)
    assert (await service.queue_stats("t", "jobs-dlq")).total == 3
    assert await service.dead_letter_sources("t", "jobs-dlq") == ["jobs"]
    moved = await service.move_messages("t", "jobs-dlq", "jobs")
    assert moved == 3
    assert (await service.queue_stats("t", "jobs-dlq")).total == 0
    back = await service.observe("t", "jobs", limit=10)
    assert [m.body for m in back] == [b"m0", b"m1", b"m2"]
    assert all(m.claim_count == 0 and m.headers == {"k": "v"} for m in back)


@pytest_twisted.ensureDeferred
async def test_operators_are_told_how_many_messages_each_claim_dead_letters(service, clock):
    counted: list[int] = []
    service.on_dead_lettered(counted.append)
    await dead_lettered(service, clock, n=4)
    assert counted == [4]


@pytest_twisted.ensureDeferred
async def test_a_move_takes_at_most_its_limit_and_leaves_the_rest(service, clock):
    await dead_lettered(service, clock, n=5)
    assert await service.move_messages("t", "jobs-dlq", "jobs", limit=2) == 2
    assert (await service.queue_stats("t", "jobs-dlq")).total == 3


@pytest_twisted.ensureDeferred
async def test_a_move_to_a_missing_queue_takes_nothing(service, clock):
    await dead_lettered(service, clock)
    with pytest.raises(QueueNotFound):
        await service.move_messages("t", "jobs-dlq", "nowhere")
    with pytest.raises(InvalidArgument):
        await service.move_messages("t", "jobs-dlq", "jobs-dlq")
    stats = await service.queue_stats("t", "jobs-dlq")
    assert (stats.total, stats.available) == (3, 3)


@pytest_twisted.ensureDeferred
async def test_peek_shows_claimed_and_delayed_messages_without_changing_them(service):
    await service.publish("t", "q", msgs(b"a", b"b"))
    await service.publish("t", "q", msgs(b"later", delay=60))
    claim = await service.claim("t", "q", limit=1, ttl=30)
    seen = await service.peek("t", "q", 10)
    assert [m.body for m in seen] == [b"a", b"b", b"later"]
    assert seen[0].claim_id == claim.id and seen[1].claim_id is None
    assert (await service.queue_stats("t", "q")).claimed == 1


@pytest_twisted.ensureDeferred
async def test_depths_merge_the_durable_and_transient_stores(service):
    await service.publish("t", "durable", msgs(b"1", b"2"))
    await service.create_queue("t", "fleeting", QueueOptions(durable=False))
    await service.publish("t", "fleeting", msgs(b"1", b"2", b"3"))
    report = await service.queue_depths(10)
    assert [(q.name, q.total, q.durable) for q in report.queues] == [
        ("fleeting", 3, False),
        ("durable", 2, True),
    ]
    assert report.count == 2


def test_merged_reports_keep_the_deepest_and_sum_everything_else():
    a = DepthReport((QueueDepth("t", "a", 5), QueueDepth("t", "b", 1)), QueueDepth("", "", 7), 9)
    b = DepthReport((QueueDepth("t", "c", 3),), QueueDepth("", "", 0), 1)
    merged = merge_reports([a, b], 2)
    assert [q.name for q in merged.queues] == ["a", "c"]
    assert merged.others.total == 1 + 7
    assert merged.count == 10


@pytest_twisted.ensureDeferred
async def test_the_metered_service_counts_each_protocols_traffic(clock):
    metrics = RecordingMetrics()
    rates = QueueRates()
    service = MeteredService(memory_service(clock), metrics, "stomp", rates)
    await service.publish("t", "q", msgs(b"1", b"2", b"3"))
    claim = await service.claim("t", "q", limit=2, ttl=30)
    await service.ack("t", "q", claim.id, [str(claim.messages[0].marker)])
    await service.release("t", "q", claim.id)
    await service.pop_messages("t", "q", 5)
    assert metrics.total(PUBLISHED) == 3
    assert metrics.counts[(DELIVERED, (("mode", "claim"), ("protocol", "stomp")))] == 2
    assert metrics.counts[(DELIVERED, (("mode", "pop"), ("protocol", "stomp")))] == 2
    assert metrics.total(ACKED) == 1 + 2
    assert metrics.total(RELEASED) == 1
    assert rates.of("t", "q") == (3, 3)
    assert service.limits is service._service.limits  # everything else is the service's


def test_queue_rates_track_a_bounded_number_of_queues():
    rates = QueueRates(limit=2)
    for name in ("a", "b", "c"):
        rates.add(rates.published, "t", name, 1)
    rates.add(rates.published, "t", "a", 1)
    assert rates.of("t", "a") == (2, 0) and rates.of("t", "c") == (0, 0)
