"""Fixtures for the HTTP tests: the API resource over a memory-only queue service on a
Clock, driven in memory by ``tests.support.http.Api`` (no sockets)."""

from __future__ import annotations

import pytest
from twisted.internet.task import Clock

from qgate.core.service import QueueService
from qgate.protocols.context import ProtocolContext
from qgate.protocols.http import build_resource
from tests.support.core import memory_service
from tests.support.http import Api, Mounted, make_ctx


@pytest.fixture
def service(clock: Clock) -> QueueService:
    """Overrides the backend-parametrized service: the HTTP layer runs on memory only."""
    return memory_service(clock)


@pytest.fixture
def ctx(service: QueueService) -> ProtocolContext:
    return make_ctx(service, mounts={b"stomp": Mounted()})


@pytest.fixture
def api(ctx: ProtocolContext) -> Api:
    return Api(build_resource(ctx))
