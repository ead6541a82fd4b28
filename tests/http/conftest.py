"""Fixtures for the HTTP tests: the API resource over a memory-only queue service on a
Clock, driven in memory by ``tests.support.http.Api`` (no sockets)."""

from __future__ import annotations

import pytest
from twisted.internet.task import Clock

from qgate.core.service import QueueService
from qgate.protocols.context import ProtocolContext
from qgate.protocols.http import build_resource
from tests.support.core import TEST_LIMITS, memory_service
from tests.support.deferreds import has_result
from tests.support.http import CLIENT, HTTP_TEST_CONFIG, OTHER_CLIENT, Api, Mounted, Reply, make_ctx

# Old import paths, for branches written before tests.support: remove once they are merged.
__all__ = [
    "CLIENT",
    "HTTP_TEST_CONFIG",
    "OTHER_CLIENT",
    "TEST_LIMITS",
    "Api",
    "Reply",
    "has_result",
    "make_ctx",
    "memory_service",
]


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
