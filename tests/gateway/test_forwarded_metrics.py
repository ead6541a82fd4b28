"""A worker's counts reach the hub's /metrics: gathered, sent once an interval, added."""

from __future__ import annotations

from typing import Any

from prometheus_client import generate_latest
from twisted.internet.defer import succeed
from twisted.internet.task import Clock

from qgate.core.metrics import HTTP_SECONDS, PUBLISHED, SUBSCRIPTIONS, QueueRates
from qgate.gateway.metrics import ForwardingMetrics, MetricsSink, PrometheusMetrics


def test_a_workers_counts_are_sent_once_an_interval_and_added_to_the_hubs_series() -> None:
    clock = Clock()
    hub = PrometheusMetrics()
    hub_rates = QueueRates()
    sink = MetricsSink(hub, hub_rates)
    sent: list[tuple[Any, ...]] = []

    def send(*batch: Any) -> Any:
        sent.append(batch)
        sink.record(*batch)
        return succeed(None)

    worker = ForwardingMetrics(clock, send, interval=1.0)
    worker.rates = QueueRates()
    worker.start()
    worker.rates.add(worker.rates.published, "t", "jobs", 4)
    worker.rates.add(worker.rates.acked, "t", "jobs", 1)
    worker.count(PUBLISHED, 2, protocol="http")
    worker.count(PUBLISHED, 3, protocol="http")
    worker.observe(HTTP_SECONDS, 0.004, protocol="http", method="POST", route="/x")
    worker.observe(HTTP_SECONDS, 0.006, protocol="http", method="POST", route="/x")
    worker.adjust(SUBSCRIPTIONS, 2, protocol="stomp")
    opened = worker.connections.labels("stomp")
    opened.inc()
    opened.inc()
    opened.dec()
    assert sent == []  # nothing goes out before the interval ends
    clock.advance(1.0)
    assert len(sent) == 1
    text = generate_latest(hub.registry).decode()
    assert 'qgate_messages_published_total{protocol="http"} 5.0' in text
    assert 'qgate_connections_open{protocol="stomp"} 1.0' in text
    assert 'route="/x"} 2.0' in text  # the _count of both observations
    # One series' values cross once, its labels with them.
    assert sent[0][1] == [
        (HTTP_SECONDS, [0.004, 0.006], {"protocol": "http", "method": "POST", "route": "/x"})
    ]
    assert 'qgate_subscriptions_open{protocol="stomp"} 2.0' in text
    assert hub_rates.of("t", "jobs") == (4, 1)  # the console's rates, from the worker
    assert worker.rates.published == {}  # sent once, not again
    clock.advance(1.0)
    assert len(sent) == 1  # an idle interval sends nothing
    worker.count(PUBLISHED, 1, protocol="http")
    worker.stop()  # a stopping worker sends what it has
    assert (
        'qgate_messages_published_total{protocol="http"} 6.0'
        in generate_latest(hub.registry).decode()
    )
