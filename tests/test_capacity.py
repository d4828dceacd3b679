"""The capacity planner: windows in, forecasts and guarded actions out, hosts decided together."""

from __future__ import annotations

import math

from streams.capacity import CapacityConfig, CapacityPlanner
from streams.windows import ClosedWindow, WindowStats

HOST = "host-a"


def window(vm: str, start: float, cpu: float, net_mbps: float, host: str = HOST) -> ClosedWindow:
    bps = net_mbps * 1e6 / 8
    metrics = {
        "cpu_pct": WindowStats(60, cpu * 60, cpu),
        "mem_pct": WindowStats(60, 2400, 40),
        "net_in_bps": WindowStats(60, bps * 60, bps),
        "net_out_bps": WindowStats(60, bps * 30, bps / 2),
    }
    return ClosedWindow(vm, host, 60.0, start, metrics)


def run(planner: CapacityPlanner, rates: dict[str, float], windows: range) -> tuple[list, list]:
    forecasts, actions = [], []
    for k in windows:
        for vm, mbps in rates.items():
            wave = 1 + 0.02 * math.sin(k + int(vm[-1]))
            f, a = planner.on_window(window(vm, 60.0 * k, 30.0, mbps * wave))
            forecasts += f
            actions += a
    return forecasts, actions


def test_forecasts_start_after_min_windows_and_actions_after_the_bands_are_trusted() -> None:
    planner = CapacityPlanner(CapacityConfig(min_windows=3, act_after_windows=20))
    forecasts, actions = run(planner, {"vm-1": 950.0}, range(10))
    assert {f["metric"] for f in forecasts} == {"cpu_pct", "mem_pct", "net_in_bps", "net_out_bps"}
    assert len(forecasts) == 4 * (10 - 2)  # from the third window on
    assert actions == [], "bands are not trusted for actions yet"
    _, actions = run(planner, {"vm-1": 950.0}, range(10, 30))
    ups = [a for a in actions if a["action"] == "scale_up" and a["resource"] == "bandwidth"]
    assert ups and ups[0]["target_allocation"] > ups[0]["current_allocation"] == 1000.0
    # nothing applied the recommendation, so it repeats, but never within the cooldown
    gaps = [b["issued_at"] - a["issued_at"] for a, b in zip(ups, ups[1:], strict=False)]
    assert all(gap >= planner.config.scaling.cooldown_up for gap in gaps), gaps


def test_a_host_forecast_to_saturate_sheds_exactly_one_vm() -> None:
    config = CapacityConfig(min_windows=3, act_after_windows=10)
    planner = CapacityPlanner(config)
    calm = {"vm-0": 300.0, "vm-1": 300.0, "vm-2": 250.0, "vm-3": 250.0}
    _, actions = run(planner, calm, range(15))
    assert [a for a in actions if a["action"] == "migrate"] == []
    # the host's VMs together head for 2,300 of its 2,000 Mbit/s; none exceeds its own allocation
    busy = {"vm-0": 700.0, "vm-1": 700.0, "vm-2": 450.0, "vm-3": 450.0}
    _, actions = run(planner, busy, range(15, 40))
    migrates = [a for a in actions if a["action"] == "migrate"]
    assert len(migrates) == 1, migrates
    (move,) = migrates
    assert move["host"] == HOST and move["vm_id"] in busy
    assert move["evidence"]["host_excess"]["bandwidth"] > 0


def test_vms_without_a_host_are_decided_alone_and_forgetting_drops_them() -> None:
    planner = CapacityPlanner(CapacityConfig(min_windows=3, act_after_windows=5))
    forecasts = []
    for k in range(8):
        f, _ = planner.on_window(window("vm-x", 60.0 * k, 30.0, 100.0, host=None))
        forecasts += f
    assert forecasts and all(f["vm_id"] == "vm-x" for f in forecasts)
    planner.forget("vm-x")
    f, _ = planner.on_window(window("vm-x", 60.0 * 9, 30.0, 100.0, host=None))
    assert f == [], "a forgotten VM starts over"
