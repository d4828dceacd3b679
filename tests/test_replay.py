"""Offline replay of CSVs through the worker's anomaly engine."""

from __future__ import annotations

import csv
import math
from datetime import UTC, datetime, timedelta
from pathlib import Path

import numpy as np
import pytest

from streams.replay import (
    AlertTracker,
    ReplayInputError,
    parse_ts,
    replay_csv,
    severity_rank,
)

START = datetime(2024, 3, 1, tzinfo=UTC)
STEP = timedelta(minutes=5)
METRICS_HEADER = [
    "vm_id",
    "host",
    "ts",
    "cpu_pct",
    "mem_pct",
    "disk_read_bps",
    "disk_write_bps",
    "net_in_bps",
    "net_out_bps",
]


def series(n: int, seed: int = 3) -> np.ndarray:
    """A daily-ish wave with noise and one spike near the end."""
    rng = np.random.default_rng(seed)
    t = np.arange(n)
    values = 40 + 10 * np.sin(2 * np.pi * t / 288) + rng.normal(0, 1.5, n)
    values[int(n * 0.8)] += 45
    return np.round(values, 3)


def write_nab(path: Path, values: np.ndarray) -> Path:
    with path.open("w", newline="") as handle:
        out = csv.writer(handle, lineterminator="\n")
        out.writerow(["timestamp", "value"])
        for i, v in enumerate(values):
            out.writerow([(START + i * STEP).strftime("%Y-%m-%d %H:%M:%S"), repr(float(v))])
    return path


def read_output(path: Path) -> list[dict[str, str]]:
    with path.open(newline="") as handle:
        return list(csv.DictReader(handle))


def test_nab_file_replays_row_for_row(tmp_path: Path) -> None:
    values = series(400)
    source = write_nab(tmp_path / "vm-7.csv", values)
    summary = replay_csv(source, tmp_path / "out.csv")
    rows = read_output(tmp_path / "out.csv")
    assert (tmp_path / "out.csv").read_text().splitlines()[
        0
    ] == "timestamp,value,anomaly_score,alert"
    assert summary.rows == len(rows) == 400
    assert summary.input_format == "nab"
    assert summary.vms == 1
    assert [float(r["value"]) for r in rows] == [float(v) for v in values]
    assert rows[0]["timestamp"] == "2024-03-01 00:00:00"
    scores = [float(r["anomaly_score"]) for r in rows]
    assert all(0.0 <= s <= 1.0 for s in scores)
    assert all(r["anomaly_score"] == repr(float(r["anomaly_score"])) for r in rows)
    alerts = [int(r["alert"]) for r in rows]
    assert set(alerts) <= {0, 1}
    assert sum(alerts) == summary.alerts


def test_replay_is_deterministic(tmp_path: Path) -> None:
    source = write_nab(tmp_path / "vm.csv", series(500))
    replay_csv(source, tmp_path / "a.csv")
    replay_csv(source, tmp_path / "b.csv")
    assert (tmp_path / "a.csv").read_bytes() == (tmp_path / "b.csv").read_bytes()


def test_no_look_ahead(tmp_path: Path) -> None:
    values = series(600)
    # Rows 256..299 share a chunk with rows 300.. in the long run only: an engine that learned a
    # whole chunk before scoring it would give them different scores in the two runs.
    prefix = 300
    changed = values.copy()
    changed[prefix:] = changed[prefix:][::-1] * 3.0 + 100.0
    replay_csv(write_nab(tmp_path / "vm.csv", values[:prefix]), tmp_path / "short.csv")
    long_dir = tmp_path / "long"
    long_dir.mkdir()
    replay_csv(write_nab(long_dir / "vm.csv", changed), tmp_path / "long.csv")
    short = read_output(tmp_path / "short.csv")
    long = read_output(tmp_path / "long.csv")[:prefix]
    assert short == long


def test_metrics_csv_matches_nab_file_with_same_samples(tmp_path: Path) -> None:
    values = series(300)
    write_nab(tmp_path / "vm-1.csv", values)
    metrics = tmp_path / "metrics.csv"
    with metrics.open("w", newline="") as handle:
        out = csv.writer(handle, lineterminator="\n")
        out.writerow(METRICS_HEADER)
        for i, v in enumerate(values):
            moment = START + i * STEP
            ts = moment.isoformat().replace("+00:00", "Z") if i % 2 else str(moment.timestamp())
            out.writerow(["vm-1", "host-a", ts, repr(float(v)), "", "", "", "", ""])
    nab = replay_csv(tmp_path / "vm-1.csv", tmp_path / "from_nab.csv")
    wide = replay_csv(metrics, tmp_path / "from_metrics.csv")
    assert wide.input_format == "vm.metrics"
    a, b = read_output(tmp_path / "from_nab.csv"), read_output(tmp_path / "from_metrics.csv")
    assert [r["anomaly_score"] for r in a] == [r["anomaly_score"] for r in b]
    assert [r["alert"] for r in a] == [r["alert"] for r in b]
    assert (nab.alerts, nab.rows) == (wide.alerts, wide.rows)


def test_metrics_csv_with_several_vms_and_metric_choice(tmp_path: Path) -> None:
    rng = np.random.default_rng(11)
    source = tmp_path / "fleet.csv"
    expected_values = []
    with source.open("w", newline="") as handle:
        out = csv.writer(handle, lineterminator="\n")
        out.writerow(METRICS_HEADER)
        for i in range(120):
            for vm in ("a", "b"):
                row = [round(float(x), 2) for x in rng.uniform(1, 90, 6)]
                expected_values.append(repr(row[4]))
                ts = (START + i * STEP).isoformat()
                out.writerow([vm, "h1", ts, *map(repr, row)])
    summary = replay_csv(source, tmp_path / "out.csv", metric="net_in_bps")
    rows = read_output(tmp_path / "out.csv")
    assert (summary.rows, summary.vms, summary.metric) == (240, 2, "net_in_bps")
    assert [r["value"] for r in rows] == expected_values
    assert all(0.0 <= float(r["anomaly_score"]) <= 1.0 for r in rows)


@pytest.mark.parametrize(
    ("content", "message"),
    [
        ("", "empty file"),
        ("time,val\n2024-01-01 00:00:00,1\n", "unrecognised header"),
        ("timestamp,value\n2024-01-01 00:00:00,1\n2024-01-01 00:05:00,abc\n", ":3: bad value"),
        ("timestamp,value\nyesterday,1\n", ":2: bad timestamp"),
        ("timestamp,value\n2024-01-01 00:00:00,1,2\n", ":2: expected 2 cells"),
        ("timestamp,value\n2024-01-01 00:00:00,nan\n", ":2: bad value"),
        ("vm_id,ts,mem_pct\nvm,0,1\n", "missing cpu_pct"),
        ("vm_id,ts,cpu_pct\nvm,0,\n", ":2: bad cpu_pct"),
        ("vm_id,ts,cpu_pct\n,0,5\n", ":2: empty vm_id"),
    ],
)
def test_malformed_csv_raises_clear_error(tmp_path: Path, content: str, message: str) -> None:
    source = tmp_path / "bad.csv"
    source.write_text(content)
    target = tmp_path / "out.csv"
    with pytest.raises(ReplayInputError, match=message):
        replay_csv(source, target)
    assert not target.exists()
    assert list(tmp_path.iterdir()) == [source]


def test_unknown_metric_is_rejected(tmp_path: Path) -> None:
    source = write_nab(tmp_path / "vm.csv", series(10))
    with pytest.raises(ValueError, match="unknown metric"):
        replay_csv(source, tmp_path / "out.csv", metric="gpu_pct")


def test_parse_ts_formats_agree() -> None:
    expected = datetime(2014, 2, 14, 14, 30, tzinfo=UTC).timestamp()
    assert parse_ts("2014-02-14 14:30:00") == expected
    assert parse_ts("2014-02-14T14:30:00Z") == expected
    assert parse_ts("2014-02-14T16:30:00+02:00") == expected
    assert parse_ts(str(expected)) == expected
    with pytest.raises(ValueError):
        parse_ts("inf")


def test_alerts_fire_on_open_and_rising_severity() -> None:
    tracker = AlertTracker()
    opened = {"incident_id": "vm:1", "status": "open", "severity": "low"}
    assert tracker.alert("vm", None) == 0
    assert tracker.alert("vm", opened) == 1
    assert tracker.alert("vm", {**opened, "status": "update", "severity": "low"}) == 0
    assert tracker.alert("vm", {**opened, "status": "update", "severity": "high"}) == 1
    assert tracker.alert("vm", {**opened, "status": "update", "severity": "medium"}) == 0
    assert tracker.alert("vm", {**opened, "status": "update", "severity": "critical"}) == 1
    assert tracker.alert("vm", {**opened, "status": "resolved"}) == 0
    assert tracker.alert("vm", {"incident_id": "vm:2", "status": "open"}) == 1
    assert tracker.alert("vm", {"incident_id": "vm:2", "status": "update", "severity": 2}) == 0
    assert tracker.alert("vm", {"incident_id": "vm:2", "status": "update", "severity": 3}) == 1
    assert tracker.count == 5


def test_severity_rank() -> None:
    assert severity_rank("LOW") < severity_rank("medium") < severity_rank("critical")
    assert severity_rank(0.7) == 0.7
    assert severity_rank(None) is None
    assert severity_rank("weird") is None
    assert severity_rank(math.nan) is None


def test_cli_replay_runs_the_engine_settings_of_the_environment(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from models.engine import EngineConfig
    from streams.cli import main

    source = write_nab(tmp_path / "vm.csv", series(500))
    monkeypatch.setenv("NOVACRON_ENGINE_SCALER_ALPHA", "0.05")
    assert main(["replay", "--input", str(source), "--output", str(tmp_path / "cli.csv")]) == 0
    replay_csv(source, tmp_path / "set.csv", config=EngineConfig(scaler_alpha=0.05))
    replay_csv(source, tmp_path / "default.csv")
    cli = (tmp_path / "cli.csv").read_bytes()
    assert cli == (tmp_path / "set.csv").read_bytes()
    assert cli != (tmp_path / "default.csv").read_bytes()
