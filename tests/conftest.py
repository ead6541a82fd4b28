"""Shared fixtures: a queue service over each storage backend, on an injected clock."""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator

import pytest
import pytest_twisted
import sqlalchemy as sa
from twisted.internet.task import Clock

from qgate.core.limits import Limits
from qgate.core.service import QueueService
from qgate.storage.memory import MemoryStorage
from qgate.storage.sql.migrate import upgrade
from qgate.storage.sql.store import SQLStorage, normalize_url

PG_URL = os.environ.get("QGATE_TEST_PG_URL", "postgresql://postgres@127.0.0.1:5432/test")

#: Small bounds so tests can use short TTLs and leases on the clock.
TEST_LIMITS = Limits(min_ttl=1, min_lease=1, max_wait=120)


@pytest.fixture
def reactor():
    """The reactor pytest-twisted runs (tests only; the code under test gets it passed in)."""
    from twisted.internet import reactor as running

    return running


@pytest.fixture(scope="session")
def pg_database() -> Iterator[str]:
    """A fresh PostgreSQL database for this test session, dropped afterwards.

    It never skips: without a reachable server the PostgreSQL tests fail, as CI must.
    """
    admin = sa.create_engine(normalize_url(PG_URL), isolation_level="AUTOCOMMIT")
    name = f"qgate_test_{uuid.uuid4().hex[:10]}"
    with admin.connect() as conn:
        conn.exec_driver_sql(f'CREATE DATABASE "{name}"')
    url = normalize_url(PG_URL).set(database=name).render_as_string(hide_password=False)
    upgrade(url)
    yield url
    with admin.connect() as conn:
        conn.exec_driver_sql(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
    admin.dispose()


def _clean_pg(url: str) -> None:
    engine = sa.create_engine(normalize_url(url))
    with engine.begin() as conn:
        conn.exec_driver_sql(
            "TRUNCATE queues, messages, claims, subscriptions, tenants, api_keys, schemas "
            "RESTART IDENTITY"
        )
    engine.dispose()


@pytest.fixture
def clock() -> Clock:
    c = Clock()
    c.advance(1_000_000)  # far from zero, like a real epoch
    return c


@pytest.fixture(params=["memory", "sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def backend(request: pytest.FixtureRequest) -> str:
    return str(request.param)


@pytest.fixture
def storage_factory(backend: str, request: pytest.FixtureRequest, tmp_path: object, reactor):
    """Makes the durable store for ``backend``; SQL stores are closed after the test."""
    made: list[object] = []

    def make() -> object:
        if backend == "memory":
            store: object = MemoryStorage()
        elif backend == "sqlite":
            url = f"sqlite:///{tmp_path}/qgate.db"
            upgrade(url)
            store = SQLStorage(reactor, url, synchronous="NORMAL")
        else:
            url = request.getfixturevalue("pg_database")
            _clean_pg(url)
            store = SQLStorage(reactor, url)
        made.append(store)
        return store

    yield make
    for store in made:
        if isinstance(store, SQLStorage):
            pytest_twisted.blockon(store.close())


@pytest.fixture
def durable(storage_factory):
    return storage_factory()


@pytest.fixture
def service(clock: Clock, durable: object) -> QueueService:
    return QueueService(clock, durable, MemoryStorage(), limits=TEST_LIMITS)  # type: ignore[arg-type]
