"""`make bench-fleet`'s runner on a small fleet: it runs, finds what is plain to find, and
writes what it printed as JSON."""

from __future__ import annotations

import json
from pathlib import Path

from bench.fleet_quality import VARIANTS, main, run_fleet_quality
from models.engine import EngineConfig


def test_a_small_fleet_finds_its_injected_anomalies_and_counts_the_rest(tmp_path: Path) -> None:
    result = run_fleet_quality(EngineConfig(), vms=20, ticks=600, anomalies=5, first_tick=200)
    assert result["injected"] == 5
    assert sum(k["injected"] for k in result["by_kind"].values()) == 5
    # a CPU pinned at 94-100 % and a saturated link stand far out of these VMs' noise
    assert result["by_kind"]["cpu_spike"]["found"] == 1
    assert result["by_kind"]["network_saturation"]["found"] == 1
    assert result["kind_right"] <= result["found"] <= 5
    assert result["kind_right_last"] <= result["found"]
    assert result["by_kind"]["cpu_spike"]["named"] == {"cpu_spike": 1}
    assert sum(result["false_by_severity"].values()) == result["false_incidents"]
    assert result["false_per_vm_day"] == result["false_incidents"] / (20 * 600 / 1440)


def test_the_command_writes_every_configuration_as_json(tmp_path: Path, capsys) -> None:
    out = tmp_path / "fleet.json"
    args = ["--vms", "10", "--ticks", "300", "--anomalies", "5", "--output", str(out)]
    assert main(args) == 0
    written = json.loads(out.read_text())
    assert list(written) == list(VARIANTS)
    assert "found" in capsys.readouterr().out
