"""The dispatcher against real HTTP receivers on loopback ports, over SQLite on the real
reactor: answers that succeed, refuse, hang up, stall, redirect, and a receiver that is
down and comes back."""

from __future__ import annotations

from dataclasses import replace
from typing import Any

import pytest
import pytest_twisted

from qgate.core.service import QueueService
from qgate.protocols.push.settings import PushSettings
from qgate.storage.memory import MemoryStorage
from tests.push.receivers import listen
from tests.push.support import T, dispatcher, json_messages
from tests.support.core import TEST_LIMITS
from tests.support.deferreds import until
from tests.support.stores import open_store

pytestmark = pytest.mark.integration

SETTINGS = PushSettings(scan_interval=0.2, lease=2.0, allow_private_targets=True, timeout=1.0)
#: Retries after 0.05 s doubling to 0.2 s: quick, on the real clock.
QUICK = {"_retry_policy": {"min_backoff_seconds": 0.05, "max_backoff_seconds": 0.2}}


@pytest.fixture
def sqlite_service(reactor: Any, tmp_path: Any):
    store = open_store("sqlite", reactor, tmp_path, None)
    service = QueueService(reactor, store, MemoryStorage(), limits=TEST_LIMITS)
    service.start()
    yield service
    pytest_twisted.blockon(service.stop())


async def subscribe_and_run(service, reactor, url, settings=SETTINGS, options=QUICK):
    await service.create_queue(T, "q")
    sub, _ = await service.create_subscription(T, "q", url, options=options)
    d = dispatcher(service, None, settings, reactor=reactor)
    d._pusher = None  # the real HTTPPusher
    d.startService()
    return sub, d


async def publish(service, *bodies):
    ids: list[str] = await service.publish(T, "q", json_messages(*bodies))
    return ids


@pytest_twisted.ensureDeferred
async def test_a_receiver_answering_204_gets_every_message(sqlite_service, reactor):
    hook = await listen(reactor)
    sub, d = await subscribe_and_run(sqlite_service, reactor, hook.url)
    try:
        ids = await publish(sqlite_service, *[f'{{"n": {i}}}' for i in range(20)])
        await until(lambda: len(hook.receiver.got) >= 20)
        assert sorted(hook.receiver.ids(), key=int) == ids
        first = hook.receiver.got[0]
        assert first.document["queue_name"] == "q"
        assert first.document["Message_Type"] == "Notification"
        assert first.headers["x-qgate-attempt"] == "1"
        await until(lambda: d.in_flight(T, "q", sub.id) == 0)
        stats = await sqlite_service.push_stats(T, "q", sub.id)
        assert (stats.delivered, stats.pending, stats.lag) == (20, 0, 0)
    finally:
        await d.stopService()
        await hook.close()


@pytest_twisted.ensureDeferred
@pytest.mark.parametrize("mode", ["503", "429"])
async def test_a_busy_receivers_retry_after_is_honoured(sqlite_service, reactor, mode):
    hook = await listen(reactor)
    hook.receiver.mode = mode
    hook.receiver.retry_after = "1"
    sub, d = await subscribe_and_run(sqlite_service, reactor, hook.url)
    try:
        await publish(sqlite_service, "1")
        await until(lambda: len(hook.receiver.got) == 1)
        start = reactor.seconds()
        hook.receiver.mode = "ok"
        await until(lambda: len(hook.receiver.got) == 2)
        assert reactor.seconds() - start >= 0.9  # not after the 0.05 s backoff
        assert hook.receiver.got[1].headers["x-qgate-attempt"] == "2"
        stats = await sqlite_service.push_stats(T, "q", sub.id)
        assert stats.failed == 1 and stats.last_error == f"HTTP {mode}"
    finally:
        await d.stopService()
        await hook.close()


@pytest_twisted.ensureDeferred
@pytest.mark.parametrize("mode", ["hangup", "stall", "redirect"])
async def test_hang_ups_stalls_and_redirects_are_retried(sqlite_service, reactor, mode):
    hook = await listen(reactor)
    hook.receiver.mode = mode
    sub, d = await subscribe_and_run(sqlite_service, reactor, hook.url)
    try:
        [mid] = await publish(sqlite_service, "1")
        await until(lambda: len(hook.receiver.got) >= 2, timeout=10)
        assert hook.receiver.ids()[:2] == [mid, mid]  # the redirect was not followed
        hook.receiver.mode = "ok"
        await until(
            lambda: (
                hook.receiver.got[-1].headers.get("x-qgate-attempt") != "1"
                and len(hook.receiver.got) >= 3
            ),
            timeout=5,
        )
        await until(lambda: d.in_flight(T, "q", sub.id) == 0, timeout=10)
        stats = await sqlite_service.push_stats(T, "q", sub.id)
        assert stats.delivered == 1 and stats.pending == 0
    finally:
        await d.stopService()
        await hook.close()


@pytest_twisted.ensureDeferred
async def test_a_large_answer_is_read_only_up_to_the_bound(sqlite_service, reactor):
    hook = await listen(reactor)
    hook.receiver.mode = "big"
    settings = replace(SETTINGS, max_response_bytes=1024)
    sub, d = await subscribe_and_run(sqlite_service, reactor, hook.url, settings=settings)
    try:
        await publish(sqlite_service, "1")
        await until(lambda: d.in_flight(T, "q", sub.id) == 0 and len(hook.receiver.got) == 1)
        await until(lambda: d.in_flight(T, "q", sub.id) == 0)
        stats = await sqlite_service.push_stats(T, "q", sub.id)
        assert stats.delivered == 1
    finally:
        await d.stopService()
        await hook.close()


@pytest_twisted.ensureDeferred
async def test_messages_published_while_the_receiver_is_down_arrive_when_it_is_back(
    sqlite_service, reactor
):
    hook = await listen(reactor)
    sub, d = await subscribe_and_run(sqlite_service, reactor, hook.url)
    try:
        await hook.down()
        ids = await publish(sqlite_service, "1", "2", "3")
        await until_stats(sqlite_service, sub.id, lambda s: s.failed > 0)
        await hook.up()
        await until(lambda: set(hook.receiver.ids()) == set(ids), timeout=10)
    finally:
        await d.stopService()
        await hook.close()


async def until_stats(service: Any, sid: str, predicate: Any, timeout: float = 5.0) -> Any:
    """Polls the subscription's counters (a read, thread-backed) until ``predicate``."""
    from twisted.internet import reactor, task

    waited = 0.0
    while True:
        stats = await service.push_stats(T, "q", sid)
        if predicate(stats):
            return stats
        if waited > timeout:
            raise AssertionError(f"counters never matched: {stats}")
        await task.deferLater(reactor, 0.02, lambda: None)
        waited += 0.02
