"""The metrics seam: what the core and protocols count, by name, without knowing who
exports it.

``IMetrics`` is the narrow interface (a counter add, a histogram observation, a gauge
set); ``gateway/metrics.py`` implements it with ``prometheus_client`` and the admin
listener exports it. Keeping ``prometheus_client`` out of core keeps core free of an
exporter's globals and lets unit tests count with ``RecordingMetrics``.

``MeteredService`` wraps an ``IQueueService`` and counts what passes through it: the
messages published, delivered, acked and released, per protocol (each protocol's context
gets its own wrapper), plus per-queue publish and ack counts for the console's rates,
kept for at most ``MAX_TRACKED_QUEUES`` queues so a tenant with a million queues cannot
grow it without bound.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Mapping, Sequence
from typing import Any

from twisted.internet.defer import Deferred
from zope.interface import Attribute, Interface, implementer

from qgate.core.interfaces import IQueueService
from qgate.core.model import Claim, Message

#: Queues whose publish and ack counts ``MeteredService`` keeps by name.
MAX_TRACKED_QUEUES = 10_000

#: Counter names (``IMetrics.count``); each is exported as ``qgate_<name>_total``.
PUBLISHED = "messages_published"
DELIVERED = "messages_delivered"
ACKED = "messages_acked"
RELEASED = "messages_released"
EXPIRED = "messages_expired"
DEAD_LETTERED = "messages_dead_lettered"
#: Push deliveries (webhooks): POSTs answered 2xx, and the ones that failed.
PUSH_DELIVERED = "push_deliveries"
PUSH_FAILED = "push_failures"
#: Gauge names (``IMetrics.adjust``): what is open now, by protocol.
SUBSCRIPTIONS = "subscriptions_open"
#: Histogram names (``IMetrics.observe``).
HTTP_SECONDS = "http_request_duration_seconds"


class IMetrics(Interface):
    """Where counts and timings go. Names are fixed (the constants above); labels are
    low-cardinality strings (protocol, route, mode), never tenants or queues."""

    registry = Attribute("what an exporter reads (prometheus_client's CollectorRegistry)")

    def count(name, amount=1, **labels):  # type: ignore[no-untyped-def]
        """Add ``amount`` to counter ``name``."""

    def observe(name, value, **labels):  # type: ignore[no-untyped-def]
        """Record ``value`` in histogram ``name``."""

    def adjust(name, delta, **labels):  # type: ignore[no-untyped-def]
        """Move gauge ``name`` by ``delta`` (+1 opened, -1 closed)."""


@implementer(IMetrics)
class NullMetrics:
    """Counts nothing (the default of a context built without an exporter)."""

    registry = None

    def count(self, name: str, amount: float = 1, **labels: str) -> None:
        pass

    def observe(self, name: str, value: float, **labels: str) -> None:
        pass

    def adjust(self, name: str, delta: float, **labels: str) -> None:
        pass


@implementer(IMetrics)
class RecordingMetrics:
    """Keeps every count and observation in dicts (tests, and a reference for exporters)."""

    registry = None

    def __init__(self) -> None:
        self.counts: Counter[tuple[str, tuple[tuple[str, str], ...]]] = Counter()
        self.observations: list[tuple[str, float, dict[str, str]]] = []
        self.gauges: Counter[tuple[str, tuple[tuple[str, str], ...]]] = Counter()

    def count(self, name: str, amount: float = 1, **labels: str) -> None:
        self.counts[(name, tuple(sorted(labels.items())))] += amount  # type: ignore[assignment]

    def observe(self, name: str, value: float, **labels: str) -> None:
        self.observations.append((name, value, labels))

    def adjust(self, name: str, delta: float, **labels: str) -> None:
        self.gauges[(name, tuple(sorted(labels.items())))] += delta  # type: ignore[assignment]

    def total(self, name: str) -> float:
        return sum(n for (key, _), n in self.counts.items() if key == name)


class QueueRates:
    """Published and acked counts per (tenant, queue), for at most ``limit`` queues."""

    def __init__(self, limit: int = MAX_TRACKED_QUEUES) -> None:
        self.limit = limit
        self.published: dict[tuple[str, str], int] = {}
        self.acked: dict[tuple[str, str], int] = {}

    def add(self, table: dict[tuple[str, str], int], tenant: str, name: str, n: int) -> None:
        key = (tenant, name)
        if key in table or len(table) < self.limit:
            table[key] = table.get(key, 0) + n

    def of(self, tenant: str, name: str) -> tuple[int, int]:
        key = (tenant, name)
        return self.published.get(key, 0), self.acked.get(key, 0)


@implementer(IQueueService)
class MeteredService:
    """``service`` with its traffic counted into ``metrics`` under ``protocol``; every
    other attribute is the service's own."""

    def __init__(
        self,
        service: Any,
        metrics: IMetrics,
        protocol: str,
        rates: QueueRates | None = None,
    ) -> None:
        self._service = service
        self._metrics = metrics
        self._protocol = protocol
        self.rates = rates if rates is not None else QueueRates()

    def __getattr__(self, name: str) -> Any:
        return getattr(self._service, name)

    def __conform__(self, interface: Any) -> Any:
        """What the wrapped service provides besides ``IQueueService`` (the guard's
        ``ITenantSessions``: STOMP sessions counted and closed on revocation), adapted
        through the wrapper."""
        return interface(self._service, None)

    def _count(self, name: str, n: int, **labels: str) -> None:
        if n:
            self._metrics.count(name, n, protocol=self._protocol, **labels)

    def publish(self, tenant: str, name: str, messages: Sequence[Any], create: bool = True) -> Any:
        def counted(ids: list[str]) -> list[str]:
            self._count(PUBLISHED, len(ids))
            self.rates.add(self.rates.published, tenant, name, len(ids))
            return ids

        d: Deferred[list[str]] = self._service.publish(tenant, name, messages, create)
        return d.addCallback(counted)

    def claim(self, tenant: str, name: str, *args: Any, **kwargs: Any) -> Any:
        def counted(claim: Claim | None) -> Claim | None:
            if claim is not None:
                self._count(DELIVERED, len(claim.messages), mode="claim")
            return claim

        return self._service.claim(tenant, name, *args, **kwargs).addCallback(counted)

    def pop_messages(self, tenant: str, name: str, *args: Any, **kwargs: Any) -> Any:
        def counted(messages: list[Message]) -> list[Message]:
            self._count(DELIVERED, len(messages), mode="pop")
            self._count(ACKED, len(messages))
            self.rates.add(self.rates.acked, tenant, name, len(messages))
            return messages

        return self._service.pop_messages(tenant, name, *args, **kwargs).addCallback(counted)

    def ack(self, tenant: str, name: str, claim_id: str, ids: Sequence[str]) -> Any:
        def counted(done: list[str]) -> list[str]:
            self._count(ACKED, len(done))
            self.rates.add(self.rates.acked, tenant, name, len(done))
            return done

        return self._service.ack(tenant, name, claim_id, ids).addCallback(counted)

    def delete_messages(
        self, tenant: str, name: str, ids: Sequence[str], claim_id: str | None = None
    ) -> Any:
        def counted(done: Any) -> Any:
            if claim_id is not None and isinstance(done, list | tuple):
                self._count(ACKED, len(done))
                self.rates.add(self.rates.acked, tenant, name, len(done))
            return done

        d = self._service.delete_messages(tenant, name, ids, claim_id)
        return d.addCallback(counted)

    def release(self, tenant: str, name: str, claim_id: str, *args: Any, **kwargs: Any) -> Any:
        def counted(n: Any) -> Any:
            if isinstance(n, int):
                self._count(RELEASED, n)
            return n

        return self._service.release(tenant, name, claim_id, *args, **kwargs).addCallback(counted)


def label_values(labels: Mapping[str, str], names: Sequence[str]) -> list[str]:
    """``labels`` in the order of ``names`` (missing ones empty), for exporters."""
    return [labels.get(n, "") for n in names]
