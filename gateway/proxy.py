"""What a worker's protocols call: the hub's queue service and tenant store, over the
worker's channel (``gateway/rpc.py``).

The proxies are generic: every method an interface declares becomes one remote call with
the same arguments, so a new ``IQueueService`` method or keyword works in workers the
moment the interface names it. The attributes protocols read (clock, limits, default
options) are the worker's own, built from the same configuration as the hub's, and
``parse_schema`` (synchronous by contract) parses in the worker with its own cache.
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Mapping
from typing import Any

from twisted.internet.defer import Deferred
from twisted.internet.interfaces import IReactorTime
from zope.interface import implementer

from qgate.core._queue_schemas import MAX_PARSED
from qgate.core.errors import InvalidArgument
from qgate.core.interfaces import IQueueService, ITenantStore
from qgate.core.limits import Limits
from qgate.core.model import QueueOptions
from qgate.core.schemas import AvroSchema, parse_schema
from qgate.gateway.rpc import SERVICE, TENANTS, WorkerChannel, method_names

#: ``IQueueService``, and what the tenant guard asks the core besides (core/guard.py).
SERVICE_METHODS = (method_names(IQueueService) - {"parse_schema"}) | {"tenant_usage"}
TENANT_METHODS = method_names(ITenantStore)


class _Remote:
    """Methods of ``_interface`` answered by the hub's object ``_target``."""

    _target: int
    _methods: frozenset[str]

    def __init__(self, channel: WorkerChannel) -> None:
        self._channel = channel

    def __getattr__(self, name: str) -> Callable[..., Deferred[Any]]:
        if name.startswith("_") or name not in self._methods:
            raise AttributeError(name)
        call = self._channel.call
        target = self._target

        def remote(*args: Any, **kwargs: Any) -> Deferred[Any]:
            return call(target, name, args, kwargs)

        remote.__name__ = name
        setattr(self, name, remote)  # found directly from now on
        return remote


@implementer(IQueueService)
class RemoteQueueService(_Remote):
    """``IQueueService`` of the hub, as a worker's protocols see it."""

    _target = SERVICE
    _methods = SERVICE_METHODS

    def __init__(
        self,
        channel: WorkerChannel,
        clock: IReactorTime,
        limits: Limits,
        default_options: QueueOptions,
    ) -> None:
        super().__init__(channel)
        self.clock = clock
        self.limits = limits
        self.default_options = default_options
        self._parsed = functools.lru_cache(maxsize=MAX_PARSED)(parse_schema)

    def parse_schema(self, schema: str | bytes | Mapping[str, Any] | list[Any]) -> AvroSchema:
        """As ``QueueService.parse_schema``: JSON text or a JSON value, parsed once per
        text."""
        if isinstance(schema, bytes):
            schema = schema.decode("utf-8", "replace")
        if isinstance(schema, str):
            return self._parsed(schema)
        if isinstance(schema, dict | list):
            return self._parsed(parse_schema(schema).text)
        raise InvalidArgument("a schema is JSON text or a JSON value", field="schema")


@implementer(ITenantStore)
class RemoteTenantStore(_Remote):
    """``ITenantStore`` of the hub's storage (API keys checked by a worker)."""

    _target = TENANTS
    _methods = TENANT_METHODS
