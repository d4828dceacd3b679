"""Faust's Prometheus sensor, with its per-record series read at scrape time.

For every record, Faust's `PrometheusMonitor` updates eight Prometheus series (messages
received and active, per topic, per topic partition, events, active events, per stream, and
the partition's end offset, which Faust's consumer tracks for each record it hands over) and
observes the event runtime histogram, each behind a lock and most through a `labels(...)`
lookup. Faust's plain `Monitor` counts the same things in plain attributes. Measured per record
on a slow moment of these machines: 62 µs for Faust's sensor, 8 µs for the plain monitor, 10 µs
for this one (the end offset's gauge alone took 7.2 µs, and observing the histogram 2.7 µs
more than counting its bucket in a list). This monitor keeps the plain monitor's counting on
the hot path, counts the runtime histogram's buckets in a list, and exports all of them from a
collector when Prometheus scrapes, under the names and labels Faust's sensor gives them. Every
other series (table operations, sends, commits, rebalances, web requests) is Faust's own,
updated as Faust updates it."""

from __future__ import annotations

from bisect import bisect_left
from collections.abc import Iterator
from itertools import accumulate

from aiohttp.web import Response
from faust.sensors.monitor import Monitor
from faust.sensors.prometheus import MS_LATENCY_BUCKETS, FaustMetrics, PrometheusMonitor
from faust.types import TP, AppT, EventT, Message, StreamT, web
from prometheus_client import CONTENT_TYPE_LATEST, REGISTRY, CollectorRegistry, generate_latest
from prometheus_client.core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
    Metric,
)
from prometheus_client.utils import floatToGoString

# FaustMetrics fields this monitor exports at scrape time instead of updating per record
_SCRAPED = (
    "messages_received",
    "active_messages",
    "messages_received_per_topics",
    "messages_received_per_topics_partition",
    "total_events",
    "total_active_events",
    "total_events_per_stream",
    "topic_partition_end_offset",
    "events_runtime_latency",
)
_RUNTIME_BOUNDS = (*map(float, MS_LATENCY_BUCKETS), float("inf"))  # Faust's, in ms


class ScrapedCountsPrometheusMonitor(PrometheusMonitor):
    """`PrometheusMonitor` whose per-record counts are the plain monitor's (see
    `ScrapedCounts`), and whose event runtime histogram is a list of bucket counts."""

    def __init__(self, metrics: FaustMetrics, **kwargs: object) -> None:
        super().__init__(metrics=metrics, **kwargs)
        self.runtime_counts = [0] * len(_RUNTIME_BOUNDS)  # per bucket, not cumulative
        self.runtime_sum_ms = 0.0

    def on_message_in(self, tp: TP, offset: int, message: Message) -> None:
        Monitor.on_message_in(self, tp, offset, message)

    def on_stream_event_in(
        self, tp: TP, offset: int, stream: StreamT, event: EventT
    ) -> dict | None:
        return Monitor.on_stream_event_in(self, tp, offset, stream, event)

    def on_stream_event_out(
        self, tp: TP, offset: int, stream: StreamT, event: EventT, state: dict | None = None
    ) -> None:
        Monitor.on_stream_event_out(self, tp, offset, stream, event, state)
        if state is not None:
            ms = self.secs_to_ms(state["time_total"])
            self.runtime_counts[bisect_left(_RUNTIME_BOUNDS, ms)] += 1  # the first le >= ms
            self.runtime_sum_ms += ms

    def on_message_out(self, tp: TP, offset: int, message: Message) -> None:
        Monitor.on_message_out(self, tp, offset, message)

    def track_tp_end_offset(self, tp: TP, offset: int) -> None:
        Monitor.track_tp_end_offset(self, tp, offset)  # Faust calls it for every record

    def stream_label(self, stream: StreamT) -> str:
        """The `stream` label Faust's sensor gives a stream's events."""
        return f"stream.{self._stream_label(stream)}.events"


class ScrapedCounts:
    """A Prometheus collector of the monitor's per-record counts, named as Faust names them."""

    def __init__(self, monitor: ScrapedCountsPrometheusMonitor, prefix: str) -> None:
        self.monitor = monitor
        self.prefix = prefix

    def collect(self) -> Iterator[Metric]:
        m, p = self.monitor, self.prefix
        received = CounterMetricFamily(f"{p}_messages_received", "Total messages received")
        received.add_metric([], m.messages_received_total)
        yield received
        yield GaugeMetricFamily(
            f"{p}_active_messages", "Total active messages", value=m.messages_active
        )
        per_topic = CounterMetricFamily(
            f"{p}_messages_received_per_topic", "Messages received per topic", labels=["topic"]
        )
        for topic, count in m.messages_received_by_topic.items():
            per_topic.add_metric([topic], count)
        yield per_topic
        yield _per_partition(
            f"{p}_messages_received_per_topics_partition",
            "Messages received per topic/partition",
            m.tp_read_offsets,
        )
        events = CounterMetricFamily(f"{p}_total_events", "Total events received")
        events.add_metric([], m.events_total)
        yield events
        yield GaugeMetricFamily(
            f"{p}_total_active_events", "Total active events", value=m.events_active
        )
        per_stream_counts: dict[str, int] = {}
        for stream, key in list(m.stream_lookup.items()):
            label = m.stream_label(stream)
            per_stream_counts[label] = per_stream_counts.get(label, 0) + m.events_by_stream[key]
        per_stream = CounterMetricFamily(
            f"{p}_total_events_per_stream", "Events received per Stream", labels=["stream"]
        )
        for label, count in per_stream_counts.items():
            per_stream.add_metric([label], count)
        yield per_stream
        yield _per_partition(
            f"{p}_topic_partition_end_offset", "Offset ends per topic/partition", m.tp_end_offsets
        )
        cumulative = zip(_RUNTIME_BOUNDS, accumulate(list(m.runtime_counts)), strict=True)
        yield HistogramMetricFamily(
            f"{p}_events_runtime_ms",
            "Events runtime in ms",
            buckets=[(floatToGoString(le), n) for le, n in cumulative],
            sum_value=m.runtime_sum_ms,
        )


def _per_partition(name: str, documentation: str, offsets: dict[TP, int]) -> Metric:
    """A gauge of offsets labelled by topic and partition, as Faust's sensor has them."""
    gauge = GaugeMetricFamily(name, documentation, labels=["topic", "partition"])
    for tp, offset in list(offsets.items()):
        gauge.add_metric([tp.topic, str(tp.partition)], offset)
    return gauge


def setup_prometheus_monitor(
    app: AppT,
    pattern: str = "/metrics",
    prefix: str = "faust",
    registry: CollectorRegistry = REGISTRY,
) -> ScrapedCountsPrometheusMonitor:
    """Install the monitor on `app` and serve `registry` at `pattern`, as Faust's
    `setup_prometheus_sensors` does, with the same series."""
    metrics = FaustMetrics.create(registry, prefix)
    for name in _SCRAPED:  # exported by the monitor's collector instead
        registry.unregister(getattr(metrics, name))
    monitor = ScrapedCountsPrometheusMonitor(metrics=metrics)
    registry.register(ScrapedCounts(monitor, prefix))
    app.monitor = monitor

    @app.page(pattern)
    async def prometheus_metrics(self: web.View, request: web.Request) -> web.Response:
        headers = {"Content-Type": CONTENT_TYPE_LATEST}
        return Response(body=generate_latest(registry), headers=headers)

    return monitor
