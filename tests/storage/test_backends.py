"""The storage contract on each backend, driven through IQueueStorage directly."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
import pytest_twisted

from qgate.storage.memory import MemoryStorage
from tests.storage.contract import StorageContract
from tests.storage.queues import QueueContract
from tests.support.stores import open_store


class TestMemoryStorage(StorageContract):
    @pytest.fixture
    def store(self) -> MemoryStorage:
        return MemoryStorage()


class SQLStore:
    """A fresh SQL store of ``backend`` per test (PostgreSQL: in the ``database`` fixture's
    database, emptied first), closed afterwards."""

    backend = "sqlite"
    database = "pg_database"

    @pytest.fixture
    def store(self, request: pytest.FixtureRequest, reactor: Any, tmp_path: Any) -> Iterator[Any]:
        pg_url = request.getfixturevalue(self.database) if self.backend == "postgres" else None
        store = open_store(self.backend, reactor, tmp_path, pg_url)
        yield store
        pytest_twisted.blockon(store.close())


class TestSQLiteStorage(SQLStore, StorageContract):
    backend = "sqlite"


@pytest.mark.postgres
class TestPostgreSQLStorage(SQLStore, StorageContract):
    backend = "postgres"


@pytest.mark.postgres
class TestPostgreSQLQueuesInEnglish(SQLStore, QueueContract):
    """The queue part again on a database whose text order is not byte order (as on most
    installations): listings must still come in the order memory gives."""

    backend = "postgres"
    database = "pg_database_en_us"
