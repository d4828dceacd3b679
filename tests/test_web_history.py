"""RecentHistory bounds and views, forecast normalisation, the Prometheus collector, rates,
the state-size estimate."""

from __future__ import annotations

import math

from prometheus_client import CollectorRegistry, generate_latest

from models.engine import AnomalyEngine, Assessment, Sample
from streams.history import SERIES_FIELDS, RecentHistory, SeriesRing, normalise_forecast
from streams.telemetry import HistoryCollector
from streams.web import RateMeter, StateSizeEstimate


def assessment(vm_id: str, ts: float, score: float, **values: float) -> Assessment:
    return Assessment(vm_id, ts, score, 99.9, values or {"cpu_pct": score / 2})


def alert(vm_id: str, status: str, ts: float, severity: str = "high", kind: str = "cpu_spike"):
    return {
        "incident_id": f"{vm_id}:1000",
        "vm_id": vm_id,
        "status": status,
        "ts": ts,
        "severity": severity,
        "kind": kind,
        "routing_key": f"host-of-{vm_id}",
    }


def forecast(vm_id: str, metric: str, mae: float, coverage: float, flat: bool = True) -> dict:
    if flat:
        point = {"step": 1, "ts": 10.0, "yhat": 5.0, "lower_80": 4.0, "upper_80": 6.0}
        point |= {"lower_95": 3.0, "upper_95": 7.0}
    else:
        point = {"ts": 10.0, "yhat": 5.0, "lower": {"80": 4.0}, "upper": {"80": 6.0}}
    return {
        "vm_id": vm_id,
        "metric": metric,
        "issued_at": 9.0,
        "model": "holt",
        "points": [point],
        "accuracy": {"n": 5, "mae": mae, "mase": None, "coverage": {"80": coverage}},
    }


def test_series_ring_keeps_the_last_rows_in_order_with_gaps_as_none() -> None:
    ring = SeriesRing(3)
    for i in range(5):
        row = [float(i), 10.0 * i, 99.9] + [math.nan] * (len(SERIES_FIELDS) - 3)
        ring.append(row)
    cols = ring.columns()
    assert cols["ts"] == [2.0, 3.0, 4.0]
    assert cols["score"] == [20.0, 30.0, 40.0]
    assert cols["cpu_pct"] == [None, None, None]
    assert ring.nbytes == 3 * len(SERIES_FIELDS) * 8


def test_history_bounds_vms_and_series_and_gives_alerting_vms_a_series() -> None:
    h = RecentHistory(samples_per_vm=4, series_vms=2, max_vms=3)
    h.observe([assessment(f"vm-{i}", 1.0, float(i)) for i in range(5)])
    assert sorted(h.latest) == ["vm-0", "vm-1", "vm-2"]
    assert h.untracked_vms == 2
    assert list(h.series) == ["vm-0", "vm-1"]
    h.published("anomalies", "vm-2", alert("vm-2", "open", 2.0))
    assert "vm-2" in h.series and len(h.series) == 2, "the alerting VM took the oldest slot"
    assert h.open_incidents["vm-2"]["status"] == "open"
    for ts in range(2, 10):
        h.observe([assessment("vm-2", float(ts), 50.0, cpu_pct=3.0)])
    assert h.vm_series("vm-2")["ts"] == [6.0, 7.0, 8.0, 9.0]
    h.published("anomalies", "vm-2", alert("vm-2", "resolved", 9.0))
    assert "vm-2" not in h.open_incidents
    assert h.incidents["vm-2:1000"]["status"] == "resolved"
    assert h.knows("vm-2") and not h.knows("vm-9")


def test_vm_rows_sort_page_and_filter() -> None:
    h = RecentHistory()
    h.observe([assessment(v, 5.0, s) for v, s in (("b", 10.0), ("a", 90.0), ("c", 50.0))])
    h.published("anomalies", "c", alert("c", "open", 5.0))
    total, rows = h.vm_rows("score", descending=True, offset=0, limit=2)
    assert total == 3 and [r["vm_id"] for r in rows] == ["a", "c"]
    assert rows[1]["open_incident"]["severity"] == "high"
    _, rows = h.vm_rows("vm_id", descending=False, offset=1, limit=5)
    assert [r["vm_id"] for r in rows] == ["b", "c"]
    total, rows = h.vm_rows(only_open=True)
    assert total == 1 and rows[0]["vm_id"] == "c"


def test_recent_alerts_filter_newest_first_and_capped() -> None:
    h = RecentHistory(recent_alerts=3)
    h.published("anomalies", "a", alert("a", "open", 1.0, "low", "memory_leak"))
    h.published("anomalies", "b", alert("b", "open", 2.0, "high"))
    h.published("anomalies", "b", alert("b", "update", 3.0, "critical"))
    h.published("anomalies", "a", alert("a", "resolved", 4.0, "low", "memory_leak"))
    assert [a["ts"] for a in h.recent_alerts_matching()] == [4.0, 3.0, 2.0]
    assert [a["ts"] for a in h.recent_alerts_matching(vm_id="a")] == [4.0, 1.0]
    assert [a["ts"] for a in h.recent_alerts_matching(severity="critical")] == [3.0]
    assert [a["ts"] for a in h.recent_alerts_matching(status="open", limit=1)] == [2.0]
    assert h.alert_counts[("open", "high", "cpu_spike")] == 1


def test_forecasts_are_normalised_from_flat_or_nested_bounds() -> None:
    flat = normalise_forecast(forecast("a", "cpu_pct", 1.0, 0.8))
    nested = normalise_forecast(forecast("a", "cpu_pct", 1.0, 0.8, flat=False))
    assert flat["levels"] == ["80", "95"] and nested["levels"] == ["80"]
    assert flat["points"][0]["lower"] == {"80": 4.0, "95": 3.0}
    assert nested["points"][0]["upper"] == {"80": 6.0}
    assert flat["points"][0]["yhat"] == nested["points"][0]["yhat"] == 5.0


def test_forecast_accuracy_is_the_mean_of_each_vms_latest_forecast() -> None:
    h = RecentHistory()
    h.published("forecasts", "a", forecast("a", "cpu_pct", 2.0, 0.5))
    h.published("forecasts", "b", forecast("b", "cpu_pct", 4.0, 0.9))
    h.published("forecasts", "a", forecast("a", "cpu_pct", 6.0, 0.7))  # replaces a's figures
    acc = h.forecast_accuracy()["cpu_pct"]
    assert acc["measure"] == {"mae": 5.0}
    assert math.isclose(acc["coverage"]["80"], 0.8)
    assert h.forecast_counts["cpu_pct"] == 3


def test_fleet_means_follow_each_metric_as_its_figures_change_names() -> None:
    """A VM's figures of several metrics are kept together: replacing one metric's (with the
    same names, or with a figure more or less) leaves the others, and forgetting a VM
    recounts the means from what is left."""
    h = RecentHistory()
    h.published("forecasts", "a", forecast("a", "cpu_pct", 2.0, 0.5))
    h.published("forecasts", "a", forecast("a", "mem_pct", 10.0, 0.6))
    h.published("forecasts", "b", forecast("b", "cpu_pct", 4.0, 0.9))
    young = forecast("a", "net_in_bps", 7.0, 0.0)
    del young["accuracy"]["coverage"]  # no bands yet
    h.published("forecasts", "a", young)
    h.published("forecasts", "a", forecast("a", "net_in_bps", 9.0, 0.8))  # now with coverage
    h.published("forecasts", "a", forecast("a", "cpu_pct", 6.0, 0.7))  # the same names
    acc = h.forecast_accuracy()
    assert acc["cpu_pct"]["measure"] == {"mae": 5.0}
    assert math.isclose(acc["cpu_pct"]["coverage"]["80"], 0.8)
    assert acc["mem_pct"]["measure"] == {"mae": 10.0}
    assert acc["net_in_bps"] == {"measure": {"mae": 9.0}, "coverage": {"80": 0.8}}
    assert h.vm_row("a")["forecast_metrics"] == ["cpu_pct", "mem_pct", "net_in_bps"]
    h.forget(["b"])
    assert h.forecast_accuracy()["cpu_pct"]["measure"] == {"mae": 6.0}
    assert h.vm_row("b")["forecast_metrics"] == []


def test_collector_exports_forecast_gauges_for_the_top_n_vms_only() -> None:
    current: dict[str, dict[str, dict]] = {}  # what the planner would answer: the latest ones
    h = RecentHistory(forecast_source=lambda vm_id: current.get(vm_id, {}))
    h.observe([assessment(v, 1.0, s) for v, s in (("low", 1.0), ("mid", 50.0), ("top", 99.0))])
    for vm in ("low", "mid", "top"):
        current[vm] = {"net_in_bps": forecast(vm, "net_in_bps", 1.0, 0.8)}
        h.published("forecasts", vm, current[vm]["net_in_bps"])
    h.published("actions", "top", {"vm_id": "top", "action": "scale_up", "resource": "vcpu"})
    registry = CollectorRegistry()
    registry.register(HistoryCollector(h, top_n=2))
    text = generate_latest(registry).decode()
    assert 'novacron_forecast_yhat{metric="net_in_bps",vm_id="top"} 5.0' in text
    assert 'vm_id="mid"' in text and 'vm_id="low"' not in text
    assert 'novacron_forecast_yhat_upper{level="95",metric="net_in_bps",vm_id="top"} 7.0' in text
    assert 'novacron_forecast_coverage{level="80",metric="net_in_bps"} 0.8' in text
    assert 'novacron_forecasts_total{metric="net_in_bps"} 3.0' in text
    assert 'novacron_actions_total{action="scale_up",resource="vcpu"} 1.0' in text


def test_rate_meter_divides_the_increase_by_the_elapsed_time() -> None:
    meter = RateMeter(window=3)
    assert meter.rates() == {}
    meter.mark({"samples": 0}, now=0.0)
    assert meter.rates() == {"samples": None}, "one mark: the rate is not known yet"
    for t, n in ((0.0, 0), (1.0, 100), (2.0, 300), (3.0, 600), (4.0, 1000)):
        meter.mark({"samples": n}, now=t)
    assert meter.rates() == {"samples": (1000 - 100) / 3.0}


def test_state_sizes_are_measured_again_only_once_the_estimate_is_old() -> None:
    engine = AnomalyEngine()
    for t in range(30):
        engine.process(
            [Sample(f"vm-{i}", float(t), {"cpu_pct": 10.0 + i + t % 3}) for i in range(8)]
        )
    vm_ids = [f"vm-{i}" for i in range(8)]
    measured: list[str] = []

    def size_of(vm_id: str) -> int:
        measured.append(vm_id)
        return engine.state_bytes(vm_id)

    estimate = StateSizeEstimate(sample=5, max_age_s=10.0)
    first = estimate.read(lambda: vm_ids, size_of, tracked=8, now=100.0)
    assert len(measured) == 5 and len(set(measured)) == 5, "five distinct VMs sampled"
    assert first["per_vm_mean"] == engine.state_bytes("vm-0") > 0
    assert first["estimated_total"] == round(8 * first["per_vm_mean"])
    assert (first["sampled_vms"], first["age_s"]) == (5, 0.0)

    again = estimate.read(lambda: vm_ids, size_of, tracked=16, now=109.0)
    assert len(measured) == 5, "within max_age_s nothing is serialised again"
    assert again["estimated_total"] == round(16 * first["per_vm_mean"]), "the count is current"
    assert again["age_s"] == 9.0

    estimate.read(lambda: vm_ids, size_of, tracked=8, now=110.0)
    assert len(measured) == 10

    moved = StateSizeEstimate(sample=10, max_age_s=10.0)  # all 10, two no longer held
    gone = moved.read(lambda: [*vm_ids, "moved-1", "moved-2"], engine.state_bytes, 8, now=0.0)
    assert gone["per_vm_mean"] == first["per_vm_mean"], "a size of 0 (not held) is not a VM's"


def test_no_state_size_is_kept_while_no_vm_is_known() -> None:
    estimate = StateSizeEstimate(max_age_s=10.0)
    calls: list[int] = []

    def ids() -> list[str]:
        calls.append(1)
        return []

    empty = estimate.read(ids, lambda vm_id: 0, tracked=0, now=0.0)
    assert empty == {"per_vm_mean": None, "estimated_total": None, "sampled_vms": 0, "age_s": None}
    estimate.read(ids, lambda vm_id: 0, tracked=0, now=1.0)
    assert len(calls) == 2, "an empty sample is not reused: the first VMs are measured at once"


def test_prune_forgets_vms_the_engine_no_longer_owns() -> None:
    h = RecentHistory()
    h.observe([assessment(v, 1.0, 10.0) for v in ("a", "b")])
    h.published("anomalies", "b", alert("b", "open", 1.0))
    h.published("forecasts", "a", forecast("a", "cpu_pct", 2.0, 0.5))
    h.published("forecasts", "b", forecast("b", "cpu_pct", 4.0, 0.9))
    assert h.prune(lambda vm_id: vm_id == "a") == 1
    assert not h.knows("b") and "b" not in h.open_incidents and "b" not in h.series
    assert h.forecast_accuracy()["cpu_pct"]["measure"] == {"mae": 2.0}


def test_a_top_page_of_a_large_fleet_equals_the_sorted_list() -> None:
    h = RecentHistory()
    h.observe([assessment(f"vm-{i:03d}", float(i % 7), float((i * 37) % 101)) for i in range(400)])
    for sort in ("score", "last_ts"):
        for descending in (True, False):
            _, everything = h.vm_rows(sort, descending, 0, 400)
            _, page = h.vm_rows(sort, descending, 10, 20)
            assert page == everything[10:30]
