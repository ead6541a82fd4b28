"""Every implementation provides the interface it claims (klein's verifyObject habit)."""

from __future__ import annotations

import pytest
from twisted.internet.task import Clock
from zope.interface.verify import verifyObject

from qgate.core.auth import APIKeys, IAuthenticator, TrustedTenant
from qgate.core.interfaces import (
    IQueueService,
    IQueueStorage,
    ISynchronousStorage,
    ITenantStore,
    ITransientStorage,
)
from qgate.core.service import QueueService
from qgate.storage.memory import MemoryStorage
from qgate.storage.sql.store import SQLStorage


def test_memory_storage_provides_its_interfaces():
    store = MemoryStorage()
    assert verifyObject(ITransientStorage, store)
    assert verifyObject(IQueueStorage, store)
    assert verifyObject(ITenantStore, store)
    assert verifyObject(ISynchronousStorage, store)


@pytest.mark.parametrize("backend", ["sqlite"])
def test_sql_storage_provides_its_interfaces(durable):
    assert isinstance(durable, SQLStorage)
    assert verifyObject(IQueueStorage, durable)
    assert verifyObject(ITenantStore, durable)


def test_queue_service_provides_the_core_api():
    service = QueueService(Clock(), MemoryStorage(), MemoryStorage())
    assert verifyObject(IQueueService, service)


def test_authenticators_provide_iauthenticator():
    assert verifyObject(IAuthenticator, TrustedTenant())
    assert verifyObject(IAuthenticator, APIKeys(MemoryStorage(), Clock()))
