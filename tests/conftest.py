"""Shared fixtures: a queue service over each storage backend, on an injected clock.

Helpers live in ``tests.support``; conftest modules hold fixtures only.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any, cast

import pytest
import pytest_twisted
from twisted.internet.task import Clock
from twisted.logger import ILogObserver, globalLogPublisher

from qgate.core.service import QueueService
from qgate.storage.memory import MemoryStorage
from qgate.storage.sql.store import SQLStorage
from tests.support.core import TEST_LIMITS, make_clock
from tests.support.stores import open_store, temporary_database


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
    with temporary_database() as url:
        yield url


@pytest.fixture(scope="session")
def pg_database_en_us() -> Iterator[str]:
    """Like ``pg_database``, but sorting text as most installations do (ICU's en-US, where
    "a-c" sorts after "ab"), not in byte order as the C locale does."""
    options = "TEMPLATE template0 LOCALE_PROVIDER icu ICU_LOCALE 'en-US' LOCALE 'C.UTF-8'"
    with temporary_database(options) as url:
        yield url


@pytest.fixture
def logged() -> Iterator[list[dict[str, Any]]]:
    """Every event logged during the test (Twisted's global log publisher)."""
    events: list[dict[str, Any]] = []
    observer = cast(ILogObserver, events.append)
    globalLogPublisher.addObserver(observer)
    yield events
    globalLogPublisher.removeObserver(observer)


@pytest.fixture
def clock() -> Clock:
    return make_clock()


@pytest.fixture(params=["memory", "sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def backend(request: pytest.FixtureRequest) -> str:
    return str(request.param)


@pytest.fixture
def storage_factory(backend: str, request: pytest.FixtureRequest, tmp_path: object, reactor):
    """Makes the durable store for ``backend``; SQL stores are closed after the test."""
    made: list[object] = []

    def make() -> object:
        pg_url = request.getfixturevalue("pg_database") if backend == "postgres" else None
        store = open_store(backend, reactor, str(tmp_path), pg_url)
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
