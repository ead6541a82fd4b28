"""``IMetrics`` with prometheus_client, and what the admin listener's ``/metrics`` shows.

One ``CollectorRegistry`` per gateway (not prometheus_client's global one), so two
gateways in one test process do not share counts. Three kinds of series:

* counters and histograms the core and protocols feed through ``IMetrics``
  (``core/metrics.py``: messages published, delivered, acked, released; HTTP latency by
  route), and the SQL writer's batch sizes and commit seconds (its ``on_batch`` hook);
* gauges set by the gateway: open connections per protocol (``ConnectionCounter``),
  certificate expiry per TLS listener;
* queue depths and long-poll waiters, from a snapshot the ``DepthSampler`` takes every
  ``[admin] sample_interval`` seconds off the scrape path: the deepest ``[admin]
  top_queues`` queues by name, the rest summed under ``tenant="",queue="_other"``, so a
  scrape costs the same with ten queues or a million.

Per process: in a multi-worker deployment each process keeps its own registry; see
``docs/operators.md`` for how they add up.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.registry import Collector
from twisted.internet import task
from twisted.internet.interfaces import IReactorTime
from twisted.internet.protocol import connectionDone
from twisted.logger import Logger
from twisted.protocols.policies import ProtocolWrapper, WrappingFactory
from twisted.python.failure import Failure
from zope.interface import implementer

from qgate.core import metrics as names
from qgate.core.admin import DepthReport, QueueDepth
from qgate.core.metrics import IMetrics, QueueRates, label_values

log = Logger()

#: Label names of each counter and histogram ``IMetrics`` feeds.
_COUNTERS: dict[str, tuple[str, tuple[str, ...]]] = {
    names.PUBLISHED: ("Messages published (committed)", ("protocol",)),
    names.DELIVERED: ("Messages handed to consumers (claimed or popped)", ("protocol", "mode")),
    names.ACKED: ("Messages acknowledged (deleted after delivery)", ("protocol",)),
    names.RELEASED: ("Messages released back to their queue", ("protocol",)),
    names.EXPIRED: ("Expired messages deleted by the reaper", ()),
    names.DEAD_LETTERED: ("Messages moved into a dead-letter queue (claimed too often)", ()),
    names.PUSH_DELIVERED: ("Push deliveries answered 2xx", ("protocol",)),
    names.PUSH_FAILED: ("Push deliveries that failed (released for a retry)", ("protocol",)),
}
_HISTOGRAMS: dict[str, tuple[str, tuple[str, ...], tuple[float, ...]]] = {
    names.HTTP_SECONDS: (
        "Seconds from a request's arrival to its answer, by route template",
        ("protocol", "method", "route"),
        (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30),
    ),
}
_GAUGES: dict[str, tuple[str, tuple[str, ...]]] = {
    names.SUBSCRIPTIONS: ("Open subscriptions by protocol (STOMP SUBSCRIBEs)", ("protocol",)),
}
_BATCH_BUCKETS = (1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1024)
_COMMIT_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 5)
OTHERS = "_other"


@implementer(IMetrics)
class PrometheusMetrics:
    """Every qgate series of one process, in its own registry."""

    def __init__(self, version: str = "") -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        r = self.registry
        self._counters = {
            name: Counter(f"qgate_{name}", doc, labels, registry=r)
            for name, (doc, labels) in _COUNTERS.items()
        }
        self._histograms = {
            name: Histogram(f"qgate_{name}", doc, labels, buckets=buckets, registry=r)
            for name, (doc, labels, buckets) in _HISTOGRAMS.items()
        }
        self._gauges = {
            name: Gauge(f"qgate_{name}", doc, labels, registry=r)
            for name, (doc, labels) in _GAUGES.items()
        }
        self._labels: dict[str, tuple[str, ...]] = {n: c[1] for n, c in _COUNTERS.items()}
        self._labels.update({n: h[1] for n, h in _HISTOGRAMS.items()})
        self._labels.update({n: g[1] for n, g in _GAUGES.items()})
        self._children: dict[tuple[Any, ...], Any] = {}
        self.connections = Gauge(
            "qgate_connections_open", "Open connections by protocol", ("protocol",), registry=r
        )
        self.batch_size = Histogram(
            "qgate_commit_batch_operations",
            "Operations per group commit (one transaction)",
            buckets=_BATCH_BUCKETS,
            registry=r,
        )
        self.commit_seconds = Histogram(
            "qgate_commit_seconds",
            "Seconds the SQL writer spent on one batch, COMMIT included",
            buckets=_COMMIT_BUCKETS,
            registry=r,
        )
        self.cert_expiry = Gauge(
            "qgate_tls_certificate_expiry_timestamp_seconds",
            "When each TLS listener's certificate expires (Unix time)",
            ("listener", "subject"),
            registry=r,
        )
        self.cert_expiring = Gauge(
            "qgate_tls_certificate_expiring",
            "1 when the certificate expires within 14 days",
            ("listener", "subject"),
            registry=r,
        )
        self.listeners_up = Gauge(
            "qgate_listeners_up", "Listeners listening, by protocol", ("protocol",), registry=r
        )
        Gauge("qgate_build_info", "qgate version", ("version",), registry=r).labels(version).set(1)
        self.snapshot = Snapshot()
        r.register(self.snapshot)

    def count(self, name: str, amount: float = 1, **labels: str) -> None:
        self._child(self._counters, name, labels).inc(amount)

    def observe(self, name: str, value: float, **labels: str) -> None:
        self._child(self._histograms, name, labels).observe(value)

    def observe_all(self, name: str, values: Sequence[float], **labels: str) -> None:
        """``observe`` of each of ``values``, the series found once (a worker's interval)."""
        child = self._child(self._histograms, name, labels)
        for value in values:
            child.observe(value)

    def adjust(self, name: str, delta: float, **labels: str) -> None:
        self._child(self._gauges, name, labels).inc(delta)

    def _child(self, metrics: Mapping[str, Any], name: str, labels: Mapping[str, str]) -> Any:
        """The labelled series, remembered: ``labels()`` costs a lock and a tuple per call,
        and the hot path counts every publish, claim and ack."""
        key = (name, *labels.values()) if len(labels) < 2 else (name, *sorted(labels.items()))
        child = self._children.get(key)
        if child is None:
            metric, names_ = metrics[name], self._labels[name]
            child = metric.labels(*label_values(labels, names_)) if names_ else metric
            self._children[key] = child
        return child

    def on_batch(self, size: int, seconds: float) -> None:
        """The SQL writer's hook (its thread; prometheus_client's metrics are locked)."""
        self.batch_size.observe(size)
        self.commit_seconds.observe(seconds)


class MetricsSink:
    """The hub's end of its workers' metrics: what ``ForwardingMetrics`` sends, added to
    the hub's series, so the hub's ``/metrics`` counts the whole server."""

    def __init__(self, metrics: PrometheusMetrics, rates: QueueRates | None = None) -> None:
        self._metrics = metrics
        self._rates = rates

    def record(
        self,
        counts: list[tuple[str, float, dict[str, str]]],
        observations: list[tuple[str, list[float], dict[str, str]]],
        connections: dict[str, int],
        published: Sequence[tuple[str, str, int]] = (),
        acked: Sequence[tuple[str, str, int]] = (),
        gauges: Sequence[tuple[str, float, dict[str, str]]] = (),
    ) -> None:
        for name, delta, labels in gauges:
            if name in _GAUGES:
                self._metrics.adjust(name, delta, **labels)
        if self._rates is not None:  # the console's per-queue rates
            for tenant, name, n in published:
                self._rates.add(self._rates.published, tenant, name, n)
            for tenant, name, n in acked:
                self._rates.add(self._rates.acked, tenant, name, n)
        for name, amount, labels in counts:
            if name in _COUNTERS:
                self._metrics.count(name, amount, **labels)
        for name, values, labels in observations:
            if name in _HISTOGRAMS:
                self._metrics.observe_all(name, values, **labels)
        for protocol, delta in connections.items():
            self._metrics.connections.labels(protocol).inc(delta)


class _GaugeDelta:
    def __init__(self, deltas: dict[str, int], key: str) -> None:
        self._deltas, self._key = deltas, key

    def inc(self, amount: int = 1) -> None:
        self._deltas[self._key] = self._deltas.get(self._key, 0) + amount

    def dec(self, amount: int = 1) -> None:
        self.inc(-amount)


class _Connections:
    def __init__(self) -> None:
        self.deltas: dict[str, int] = {}

    def labels(self, protocol: str) -> _GaugeDelta:
        return _GaugeDelta(self.deltas, protocol)


@implementer(IMetrics)
class ForwardingMetrics:
    """A worker's ``IMetrics``: counts, observations and connection changes gathered for
    ``interval`` seconds, then sent to the hub in one call (``send``), where the admin
    listener exports them. Nothing is kept past a send, so memory stays flat."""

    registry = None

    def __init__(self, clock: IReactorTime, send: Callable[..., Any], interval: float = 1.0):
        self._send = send
        self._counts: dict[tuple[str, tuple[tuple[str, str], ...]], float] = {}
        #: Values by series (name and labels as the caller gave them): every HTTP request
        #: observes its duration, and a series' labels cross the channel once an interval.
        self._observations: dict[tuple[Any, ...], tuple[str, list[float], dict[str, str]]] = {}
        self._gauges: dict[tuple[str, tuple[tuple[str, str], ...]], float] = {}
        self.connections = _Connections()
        #: The worker's per-queue counts (``MeteredService``), sent on and emptied.
        self.rates: QueueRates | None = None
        self._loop = task.LoopingCall(self.flush)
        self._loop.clock = clock
        self._interval = interval

    def start(self) -> None:
        self._loop.start(self._interval, now=False)

    def stop(self) -> None:
        if self._loop.running:
            self._loop.stop()
        self.flush()

    def count(self, name: str, amount: float = 1, **labels: str) -> None:
        key = (name, tuple(sorted(labels.items())))
        self._counts[key] = self._counts.get(key, 0) + amount

    def observe(self, name: str, value: float, **labels: str) -> None:
        key = (name, *labels.items())
        found = self._observations.get(key)
        if found is None:
            self._observations[key] = (name, [value], labels)
        else:
            found[1].append(value)

    def adjust(self, name: str, delta: float, **labels: str) -> None:
        key = (name, tuple(sorted(labels.items())))
        self._gauges[key] = self._gauges.get(key, 0) + delta

    def flush(self) -> None:
        deltas = {p: d for p, d in self.connections.deltas.items() if d}
        published: list[tuple[str, str, int]] = []
        acked: list[tuple[str, str, int]] = []
        if self.rates is not None:
            published = [(t, q, n) for (t, q), n in self.rates.published.items()]
            acked = [(t, q, n) for (t, q), n in self.rates.acked.items()]
            self.rates.published.clear()
            self.rates.acked.clear()
        gauges = [(n, d, dict(labels)) for (n, labels), d in self._gauges.items() if d]
        self._gauges = {}
        if not (self._counts or self._observations or deltas or published or acked or gauges):
            return
        counts = [(name, amount, dict(labels)) for (name, labels), amount in self._counts.items()]
        observations, self._observations = list(self._observations.values()), {}
        self._counts = {}
        self.connections.deltas.clear()
        d = self._send(counts, observations, deltas, published, acked, gauges)
        d.addErrback(lambda f: log.debug("metrics not sent to the hub: {f}", f=f.value))


class Snapshot(Collector):
    """Queue depths and waiters as of the last sample (collected without any I/O)."""

    def __init__(self) -> None:
        self.report: DepthReport | None = None
        self.waiters = 0
        self.at = 0.0

    def collect(self) -> Any:
        depth = GaugeMetricFamily(
            "qgate_queue_messages",
            "Live messages by queue and state (deepest queues; the rest summed as _other)",
            labels=("tenant", "queue", "state"),
        )
        age = GaugeMetricFamily(
            "qgate_queue_oldest_message_age_seconds",
            "Age of the oldest live message (deepest queues; _other: of the rest)",
            labels=("tenant", "queue"),
        )
        queues = GaugeMetricFamily("qgate_queues", "Queues of every tenant")
        waiters = GaugeMetricFamily("qgate_waiters", "Long polls and consumers waiting")
        report = self.report
        if report is not None:
            rows: list[tuple[str, str, QueueDepth]] = [(q.tenant, q.name, q) for q in report.queues]
            rows.append(("", OTHERS, report.others))
            for tenant, name, q in rows:
                for state in ("available", "claimed", "delayed"):
                    depth.add_metric([tenant, name, state], getattr(q, state))
                oldest = q.oldest_created
                age.add_metric([tenant, name], max(0.0, self.at - oldest) if oldest else 0.0)
            queues.add_metric([], report.count)
        waiters.add_metric([], self.waiters)
        return [depth, age, queues, waiters]


class DepthSampler:
    """Refreshes ``snapshot`` every ``interval`` seconds from ``service.queue_depths``
    (one bounded read per store, off the reactor thread for SQL)."""

    def __init__(
        self,
        clock: IReactorTime,
        service: Any,
        snapshot: Snapshot,
        top: int,
        interval: float,
        waiters: Callable[[], int] = lambda: 0,
    ) -> None:
        self._clock = clock
        self._service = service
        self._snapshot = snapshot
        self._top = top
        self._waiters = waiters
        self._loop = task.LoopingCall(self.sample)
        self._loop.clock = clock
        self._interval = interval

    def start(self) -> None:
        self._loop.start(self._interval, now=True).addErrback(
            lambda f: log.failure("depth sampler stopped", f)
        )

    def stop(self) -> None:
        if self._loop.running:
            self._loop.stop()

    async def _sample(self) -> None:
        try:
            report = await self._service.queue_depths(self._top)
        except Exception as e:  # noqa: BLE001 - storage away: keep the last snapshot
            log.warn("queue depths not sampled: {error}", error=str(e))
            return
        self._snapshot.report = report
        self._snapshot.at = self._clock.seconds()
        self._snapshot.waiters = self._waiters()

    def sample(self) -> Any:
        from twisted.internet.defer import Deferred

        return Deferred.fromCoroutine(self._sample())


class _Counted(ProtocolWrapper):
    def connectionMade(self) -> None:
        self.factory.gauge.inc()  # type: ignore[attr-defined]
        super().connectionMade()

    def connectionLost(self, reason: Failure = connectionDone) -> None:
        self.factory.gauge.dec()  # type: ignore[attr-defined]
        super().connectionLost(reason)


class ConnectionCounter(WrappingFactory):
    """A listener's factory, with its open connections in ``gauge``."""

    protocol = _Counted
    noisy = False

    def __init__(self, wrapped: Any, gauge: Any) -> None:
        super().__init__(wrapped)
        self.gauge = gauge

    @property
    def overload_answer(self) -> Any:
        """What the connection caps answer an over-cap client with (the wrapped
        protocol's own refusal: HTTP 503 JSON, a STOMP ERROR), passed through."""
        return getattr(self.wrappedFactory, "overload_answer", None)

    def logPrefix(self) -> str:
        prefix: str = getattr(self.wrappedFactory, "logPrefix", lambda: "qgate")()
        return prefix
