"""The product's own Prometheus metrics (Faust's sensor adds the consumer/producer ones)."""

from __future__ import annotations

import gc
import time
from collections.abc import Iterator

from prometheus_client import REGISTRY, Counter, Gauge, Histogram
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric

from streams.history import RecentHistory

RECORDS = Counter("novacron_records_total", "Input records by outcome", ["outcome"])
SAMPLES = Counter("novacron_samples_total", "VM samples scored and learned")
REPLAYED = Counter(
    "novacron_replayed_samples_total",
    "Redelivered samples skipped because the VM's restored checkpoint already learned them",
)
DLQ = Counter("novacron_dlq_total", "Records or samples sent to the dead-letter topic", ["reason"])
ALERTS = Counter(
    "novacron_alerts_total", "Incident messages emitted", ["status", "severity", "kind"]
)
FEEDBACK = Counter("novacron_feedback_total", "Operator verdicts applied", ["verdict", "outcome"])
VMS_TRACKED = Gauge("novacron_vms_tracked", "VMs with model state on this worker")
MODEL_UPDATE_SECONDS = Histogram(
    "novacron_model_update_seconds",
    "Time to score and learn the samples of one record, per sample",
    buckets=(1e-6, 5e-6, 1e-5, 2.5e-5, 5e-5, 1e-4, 2.5e-4, 1e-3, 5e-3),
)
PUBLISHED = Counter(
    "novacron_published_total",
    "Output messages handed to the producer, by topic id (outside Faust's topic sensors)",
    ["topic"],
)
GC_PAUSE_SECONDS = Histogram(
    "novacron_gc_pause_seconds",
    "Pauses of Python's garbage collector in the worker, by generation (2: a full collection)",
    ["generation"],
    buckets=(1e-4, 1e-3, 5e-3, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0),
)
FEEDBACK_REQUESTS = Counter(
    "novacron_feedback_requests_total", "POST /feedback requests by outcome", ["outcome"]
)


class GCPauses:
    """Times every collection of the garbage collector (a pause of the whole worker).

    The histogram's children are made up front: the callback runs inside the collector, and
    only observes into them."""

    def __init__(self) -> None:
        self._by_generation = [GC_PAUSE_SECONDS.labels(str(g)) for g in range(3)]
        self.longest_s = [0.0, 0.0, 0.0]
        self.frozen_objects = 0
        self._started = 0.0

    def __call__(self, phase: str, info: dict) -> None:
        if phase == "start":
            self._started = time.perf_counter()
            return
        generation = info["generation"]
        pause = time.perf_counter() - self._started
        self._by_generation[generation].observe(pause)
        if pause > self.longest_s[generation]:
            self.longest_s[generation] = pause

    def install(self) -> None:
        if self not in gc.callbacks:
            gc.callbacks.append(self)

    def freeze(self) -> None:
        """Keep every object alive now out of all later collections (for what lives as long
        as the process). Counted here once: counting walks the whole frozen list."""
        gc.freeze()
        self.frozen_objects = gc.get_freeze_count()

    def snapshot(self) -> dict:
        """Collections and longest pause per generation, and the objects frozen out of them."""
        return {
            "collections": [g["collections"] for g in gc.get_stats()],
            "longest_pause_s": [round(s, 6) for s in self.longest_s],
            "frozen_objects": self.frozen_objects,
            "young_threshold": gc.get_threshold()[0],
        }


GC_PAUSES = GCPauses()


class HistoryCollector:
    """Metrics read from the worker's `RecentHistory` at scrape time.

    - `novacron_forecasts_total{metric}`, `novacron_actions_total{action,resource}`;
    - `novacron_alerts_open`: incidents currently open on this worker;
    - `novacron_forecast_accuracy{metric,measure}` (mae, smape, mase, ...) and
      `novacron_forecast_coverage{metric,level}`: fleet means over each VM's latest forecast;
    - `novacron_forecast_yhat`, `_yhat_lower`, `_yhat_upper{vm_id,metric[,level]}`: the next
      forecast point, for the `top_n` VMs with the highest current anomaly score only.

    Label cardinality stays bounded: the per-VM gauges exist for at most `top_n` VMs times the
    forecast metrics (4) times the levels, and they are rebuilt on every scrape, so a VM that
    leaves the top N simply disappears instead of leaving a stale series behind. Every other
    label takes values from fixed, small sets (metrics, measures, levels, action kinds).
    """

    def __init__(self, history: RecentHistory, top_n: int = 10) -> None:
        self.history = history
        self.top_n = top_n

    def describe(self) -> list:
        return []

    def collect(self) -> Iterator[Metric]:
        h = self.history
        forecasts = CounterMetricFamily(
            "novacron_forecasts", "Forecast messages emitted", labels=["metric"]
        )
        for metric, n in sorted(h.forecast_counts.items()):
            forecasts.add_metric([str(metric)], n)
        actions = CounterMetricFamily(
            "novacron_actions", "Scaling actions emitted", labels=["action", "resource"]
        )
        for (action, resource), n in sorted(h.action_counts.items(), key=str):
            actions.add_metric([str(action), str(resource)], n)
        open_alerts = GaugeMetricFamily(
            "novacron_alerts_open", "Incidents currently open on this worker"
        )
        open_alerts.add_metric([], len(h.open_incidents))
        accuracy = GaugeMetricFamily(
            "novacron_forecast_accuracy",
            "Fleet mean of the rolling forecast accuracy figures",
            labels=["metric", "measure"],
        )
        coverage = GaugeMetricFamily(
            "novacron_forecast_coverage",
            "Fleet mean of the rolling forecast interval coverage",
            labels=["metric", "level"],
        )
        for metric, kinds in h.forecast_accuracy().items():
            for name, v in kinds.get("measure", {}).items():
                accuracy.add_metric([metric, name], v)
            for level, v in kinds.get("coverage", {}).items():
                coverage.add_metric([metric, level], v)
        yhat = GaugeMetricFamily(
            "novacron_forecast_yhat", "Next forecast value (top-N VMs)", labels=["vm_id", "metric"]
        )
        lower = GaugeMetricFamily(
            "novacron_forecast_yhat_lower",
            "Next forecast lower bound (top-N VMs)",
            labels=["vm_id", "metric", "level"],
        )
        upper = GaugeMetricFamily(
            "novacron_forecast_yhat_upper",
            "Next forecast upper bound (top-N VMs)",
            labels=["vm_id", "metric", "level"],
        )
        for vm_id in h.top_forecast_vms(self.top_n):
            for metric, fc in sorted(h.forecasts_of(vm_id).items()):
                if not fc["points"]:
                    continue
                first = fc["points"][0]
                if isinstance(first.get("yhat"), int | float):
                    yhat.add_metric([vm_id, metric], first["yhat"])
                for family, bounds in ((lower, first["lower"]), (upper, first["upper"])):
                    for level, v in bounds.items():
                        if isinstance(v, int | float):
                            family.add_metric([vm_id, metric, level], v)
        yield from (forecasts, actions, open_alerts, accuracy, coverage, yhat, lower, upper)


_collector: HistoryCollector | None = None


def watch_history(history: RecentHistory, top_n: int = 10) -> HistoryCollector:
    """Export `history` through the default registry (once per process; later calls retarget)."""
    global _collector
    if _collector is None:
        _collector = HistoryCollector(history, top_n)
        REGISTRY.register(_collector)
    else:
        _collector.history, _collector.top_n = history, top_n
    return _collector
