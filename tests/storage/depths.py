"""The storage contract, queue depths: the deepest queues of every tenant, the rest summed
(what the admin listener's metrics and console read)."""

from __future__ import annotations

import pytest_twisted

from qgate.core.model import NewMessage
from tests.storage.base import NOW, make_queue, put


class DepthContract:
    @pytest_twisted.ensureDeferred
    async def test_depths_count_each_state_of_live_messages_across_tenants(self, store):
        await make_queue(store, "jobs", tenant="a")
        await make_queue(store, "mail", tenant="b")
        await make_queue(store, "empty", tenant="a")
        await put(store, b"1", b"2", b"3", queue="jobs", tenant="a")
        await put(store, NewMessage(b"later", delay=60), queue="jobs", tenant="a", now=NOW + 1)
        await put(store, NewMessage(b"gone", ttl=1), queue="mail", tenant="b")
        await put(store, b"m", queue="mail", tenant="b", now=NOW + 2)
        await store.claim("a", "jobs", "c1", 1, 30.0, 0.0, NOW + 3)
        report = await store.queue_depths(NOW + 5, 10)
        assert report.count == 3
        jobs, mail, empty = report.queues
        assert (jobs.tenant, jobs.name) == ("a", "jobs")
        assert (jobs.available, jobs.claimed, jobs.delayed) == (2, 1, 1)
        assert jobs.oldest_created == NOW
        assert (mail.tenant, mail.name, mail.total) == ("b", "mail", 1)  # one expired
        assert mail.oldest_created == NOW + 2
        assert (empty.name, empty.total, empty.oldest_created) == ("empty", 0, None)
        assert report.others.total == 0

    @pytest_twisted.ensureDeferred
    async def test_depths_name_only_the_deepest_queues_and_sum_the_rest(self, store):
        for i in range(6):
            await make_queue(store, f"q{i}")
            await put(store, *[b"x"] * (i + 1), queue=f"q{i}")
        report = await store.queue_depths(NOW, 2)
        assert [(q.name, q.total) for q in report.queues] == [("q5", 6), ("q4", 5)]
        assert report.count == 6
        assert report.others.total == 1 + 2 + 3 + 4
        assert report.others.available == 10
        assert report.others.oldest_created == NOW
