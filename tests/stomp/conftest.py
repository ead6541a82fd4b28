"""Fixtures for the STOMP tests: a memory-only queue service on a Clock, a ProtocolContext,
and a ``tests.support.stomp.Client`` over StringTransport."""

from __future__ import annotations

import pytest
from twisted.internet.task import Clock

from qgate.core.service import QueueService
from qgate.protocols.context import ProtocolContext
from tests.support.core import memory_service
from tests.support.stomp import Client, make_ctx


@pytest.fixture
def mem_service(clock: Clock) -> QueueService:
    return memory_service(clock)


@pytest.fixture
def ctx(mem_service: QueueService) -> ProtocolContext:
    return make_ctx(mem_service, heartbeat_ms=0)


@pytest.fixture
def client(ctx: ProtocolContext) -> Client:
    return Client(ctx)
