"""The storage contract: what every ``IQueueStorage`` does, as test methods on one base
class (coilmq's ``BaseQueueTests``). A backend's test class inherits them all and adds a
``store`` fixture; see ``test_backends.py``."""

from __future__ import annotations

from tests.storage.claims import ClaimContract
from tests.storage.depths import DepthContract
from tests.storage.expiry import ExpiryContract
from tests.storage.handoff import HandoffContract
from tests.storage.messages import MessageContract
from tests.storage.push import PushContract
from tests.storage.queues import QueueContract
from tests.storage.subscriptions import SubscriptionContract
from tests.storage.tenants import TenantContract


class StorageContract(
    QueueContract,
    MessageContract,
    ClaimContract,
    ExpiryContract,
    SubscriptionContract,
    DepthContract,
    TenantContract,
    PushContract,
    HandoffContract,
):
    """Every test takes ``store``: a fresh, empty store of the subclass's backend."""
