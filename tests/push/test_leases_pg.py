"""Two stores on one PostgreSQL database (as two processes) lease push subscriptions at
the same moment: each subscription goes to exactly one of them."""

from __future__ import annotations

from typing import Any

import pytest
import pytest_twisted
from twisted.internet.defer import gatherResults

from qgate.core.model import NewSubscription, QueueOptions
from qgate.storage.sql.store import SQLStorage
from tests.support.stores import clean_pg

pytestmark = pytest.mark.postgres
NOW = 1_000_000.0


@pytest_twisted.ensureDeferred
async def test_concurrent_lease_rounds_never_hand_one_subscription_to_two_owners(
    reactor: Any, pg_database: str
) -> None:
    clean_pg(pg_database)
    a, b = SQLStorage(reactor, pg_database), SQLStorage(reactor, pg_database)
    try:
        await a.create_queue("t", "q", QueueOptions(), {}, NOW)
        for i in range(40):
            new = NewSubscription(f"s{i:02d}", f"http://hooks.example/{i}", 600, {})
            await a.create_subscription("t", "q", new, NOW)
        for round_ in range(5):
            now = NOW + round_ * 100  # every lease of the last round has ended
            got_a, got_b = await gatherResults(
                [a.lease_push("A", 30.0, 1000, now), b.lease_push("B", 30.0, 1000, now)]
            )
            ids_a = {h.subscription.id for h in got_a}
            ids_b = {h.subscription.id for h in got_b}
            assert not ids_a & ids_b
            assert len(ids_a | ids_b) == 40
    finally:
        await a.close()
        await b.close()
