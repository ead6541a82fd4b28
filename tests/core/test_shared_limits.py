"""A tenant's rates and live counts held across workers (``core.shared_limits``): two
workers' guards and the hub's share in memory, on one clock, each round answered at once."""

from __future__ import annotations

from typing import Any

import pytest
from twisted.internet.defer import succeed
from twisted.internet.task import Clock

from qgate.core.errors import QuotaExceeded, RateLimited
from qgate.core.guard import TenantGuard
from qgate.core.model import NewMessage
from qgate.core.quotas import Quotas, TenantQuotas
from qgate.core.shared_limits import CONNECTIONS, SYNC_INTERVAL, HubShare, WorkerShare
from tests.support.core import make_clock, memory_service
from tests.support.deferreds import fired


def workers(clock: Clock, n: int = 2, **quotas: Any) -> tuple[HubShare, list[TenantGuard]]:
    hub = HubShare(clock)
    service = memory_service(clock)
    guards = []
    for index in range(n):
        share = WorkerShare(clock, lambda report, i=index: succeed(hub.sync(i, report)))
        guards.append(TenantGuard(service, clock, TenantQuotas(Quotas(**quotas)), share=share))
        share.start()
    return hub, guards


def rounds(clock: Clock, n: int) -> None:
    for _ in range(n):
        clock.advance(SYNC_INTERVAL)


def hammer(clock: Clock, guards: list[TenantGuard], seconds: float, step: float) -> int:
    """Requests of one tenant, one a ``step``, turn by turn through every worker; ->
    how many were let in."""
    admitted = 0
    for i in range(round(seconds / step)):
        try:
            guards[i % len(guards)].enter("t", "any", None)
            admitted += 1
        except RateLimited:
            pass
        clock.advance(step)
    return admitted


def test_two_workers_hold_a_tenant_near_its_request_rate_not_twice_it() -> None:
    clock = make_clock()
    _, guards = workers(clock, request_rate=100, request_burst=10)
    admitted = hammer(clock, guards, seconds=5, step=0.001)
    # burst + rate x time = 510; per worker alone it would be about 1,020.
    assert 500 <= admitted <= 510 + 100 * 2 * SYNC_INTERVAL + 10


def test_without_the_share_each_worker_gives_the_whole_rate() -> None:
    """What the share fixes: two unshared guards let the tenant in twice as often."""
    clock = make_clock()
    service = memory_service(clock)
    quotas = TenantQuotas(Quotas(request_rate=100, request_burst=10))
    guards = [TenantGuard(service, clock, quotas) for _ in range(2)]
    assert hammer(clock, guards, seconds=5, step=0.001) >= 1000


def test_a_tenant_on_one_worker_alone_keeps_its_whole_rate() -> None:
    clock = make_clock()
    _, guards = workers(clock, request_rate=100, request_burst=10)
    admitted = hammer(clock, guards[:1], seconds=5, step=0.001)
    assert 490 <= admitted <= 515


def test_publishes_are_held_across_workers() -> None:
    clock = make_clock()
    _, guards = workers(clock, publish_rate=1000, publish_burst=100, request_rate=0)
    stored = 0
    for i in range(2000):  # 2 s, ten messages every 1 ms
        try:
            fired(guards[i % 2].publish("t", "q", [NewMessage(b"m")] * 10))
            stored += 10
        except RateLimited:
            pass
        clock.advance(0.001)
    assert 2050 <= stored <= 2100 + 1000 * 2 * SYNC_INTERVAL + 100


def test_connections_count_across_workers_within_two_rounds() -> None:
    clock = make_clock()
    hub, (one, two) = workers(clock, max_connections=3)
    sessions = [one.open_session("t"), one.open_session("t")]
    clock.advance(SYNC_INTERVAL)  # one's report, and two's round after it
    assert hub.total(CONNECTIONS, "t") == 2
    sessions.append(two.open_session("t"))
    with pytest.raises(QuotaExceeded, match="max_connections"):
        two.open_session("t")
    rounds(clock, 2)  # two's report, then one's next round
    with pytest.raises(QuotaExceeded, match="max_connections"):
        one.open_session("t")
    sessions.pop(0).close()
    rounds(clock, 2)
    two.open_session("t")  # a slot given back on one worker is free on the other
    rounds(clock, 1)
    assert hub.total(CONNECTIONS, "t") == 3


def test_a_worker_that_ends_gives_its_connections_back() -> None:
    clock = make_clock()
    hub, (one, two) = workers(clock, max_connections=1)
    one.open_session("t")
    clock.advance(SYNC_INTERVAL)
    with pytest.raises(QuotaExceeded):
        two.open_session("t")
    hub.forget(0)  # worker 0 died
    rounds(clock, 2)
    two.open_session("t")


def test_waiters_count_across_workers() -> None:
    clock = make_clock()
    _, (one, two) = workers(clock, max_subscriptions=1)
    fired(one.create_queue("t", "q"))
    waiting = one.claim("t", "q", 1, 30, 0, 20)  # a long poll holds a slot
    assert not waiting.called
    rounds(clock, 2)
    with pytest.raises(QuotaExceeded, match="max_subscriptions"):
        fired(two.claim("t", "q", 1, 30, 0, 20))
