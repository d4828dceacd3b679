"""The capacity planner: windows in, forecasts and guarded actions out, hosts decided together."""

from __future__ import annotations

import math

import numpy as np
import pytest

from models import array_state
from streams.capacity import CapacityConfig, CapacityPlanner, UsageHistory
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


def test_a_migrate_carries_the_chosen_vms_kept_view_of_its_own_last_window() -> None:
    """Views are kept as rows of arrays between windows: the evidence of an action on a VM
    decided in another VM's window (a migrate) is that VM's view of its own last window,
    the larger direction's forecast and upper bound in Mbit/s, and its usage then."""
    planner = CapacityPlanner(CapacityConfig(min_windows=3, act_after_windows=10))
    calm = {"vm-0": 300.0, "vm-1": 300.0, "vm-2": 250.0, "vm-3": 250.0}
    busy = {"vm-0": 700.0, "vm-1": 700.0, "vm-2": 450.0, "vm-3": 450.0}
    latest: dict[str, dict[str, dict]] = {}
    usage: dict[str, float] = {}
    for k in range(40):
        for vm, mbps in (calm if k < 15 else busy).items():
            rate = mbps * (1 + 0.02 * math.sin(k + int(vm[-1])))
            forecasts, actions = planner.on_window(window(vm, 60.0 * k, 30.0, rate))
            latest[vm] = {f["metric"]: f["points"] for f in forecasts}
            usage[vm] = float(np.float32(rate))  # the usage history keeps float32
            for action in actions:
                if action["action"] != "migrate":
                    continue
                chosen = action["vm_id"]
                points = latest[chosen]
                pairs = list(zip(points["net_in_bps"], points["net_out_bps"], strict=True))
                evidence = action["evidence"]
                for key, field in (("forecast", "yhat"), ("upper", "upper_95")):
                    want = [max(a[field], b[field]) * 8 / 1e6 for a, b in pairs]
                    assert evidence[key] == want
                assert evidence["usage"] == usage[chosen]
                assert chosen != vm, "decided in another VM's window"
                return
    raise AssertionError("the busy host should migrate one VM")


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


def test_windows_learnt_in_batches_give_what_they_give_one_at_a_time() -> None:
    """A batch's windows are learnt together, in rounds in which no VM repeats; allocations
    reported mid-batch apply from their sample on, each field as last reported. Outputs must
    equal the one-by-one path."""
    config = CapacityConfig(min_windows=3, act_after_windows=12)
    one_by_one, batched = CapacityPlanner(config), CapacityPlanner(config)
    samples = []
    for k in range(60):
        for v in range(6):
            vm = f"vm-{v}"
            mbps = 150.0 * (v + 1) * (1 + 0.1 * math.sin(k / 4 + v)) * (1 + (k > 35) * v / 3)
            allocation = {"net_mbps": 800.0 + 10 * k} if (k + v) % 7 == 0 else None
            closed = [window(vm, 60.0 * k, 20.0 + v, mbps, host=f"host-{v % 2}")]
            samples.append((vm, allocation, closed if (k + v) % 5 else []))
            if (k + v) % 5 == 0:  # this VM's window closes two samples later
                samples[-1] = (vm, allocation, [])
                samples.append((vm, {"vcpus": 2.0 + (k + v) % 3}, []))  # another field
                samples.append((vm, None, closed))
    expected = []
    for vm, allocation, closed in samples:
        if allocation:
            one_by_one.set_allocation(vm, allocation)
        for w in closed:
            expected.append((w, *one_by_one.on_window(w)))
    got = []
    for start in range(0, len(samples), 17):  # batches that hold several windows of a VM
        got += batched.on_windows(samples[start : start + 17])
    assert got == expected
    assert sum(len(actions) for _, _, actions in got) > 0, "scaling decisions were compared"


def test_current_forecasts_are_the_latest_published_and_reading_them_changes_nothing() -> None:
    every_window = CapacityPlanner(CapacityConfig(min_windows=3, act_after_windows=12))
    read, unread = (CapacityPlanner(CapacityConfig(forecast_every=3)) for _ in range(2))
    latest: dict[str, dict] = {}
    for k in range(40):
        w = window("vm-1", 60.0 * k, 30.0 + 5 * math.sin(k / 3), 400.0 + 20 * math.cos(k))
        forecasts, _ = every_window.on_window(w)
        latest.update({f["metric"]: f for f in forecasts})
        current = {f["metric"]: f for f in every_window.current_forecasts("vm-1")}
        assert current == latest
        # with forecast_every=3 the bands are stale between messages: a read must not refresh
        # the kept ones, which score the next errors' coverage
        read.current_forecasts("vm-1")
        assert read.on_window(w) == unread.on_window(w)
    assert latest and every_window.current_forecasts("vm-unknown") == []


def _moved(planner: CapacityPlanner, config: CapacityConfig, vms: list[str]) -> CapacityPlanner:
    """A new planner holding `vms` as another worker would restore them."""
    other = CapacityPlanner(config)
    for vm in vms:
        other.load_vm(vm, planner.dump_vm(vm))
    return other


def test_a_vm_moved_to_another_planner_forecasts_and_acts_as_if_it_had_stayed() -> None:
    config = CapacityConfig(min_windows=3, act_after_windows=10)
    rates = {"vm-0": 700.0, "vm-1": 300.0, "vm-2": 250.0, "vm-3": 950.0}
    stayed = CapacityPlanner(config)
    run(stayed, rates, range(25))
    moved = _moved(stayed, config, sorted(rates))
    # cooldowns and the scaling history travel too: the same actions, at the same times
    expected = run(stayed, rates, range(25, 60))
    got = run(moved, rates, range(25, 60))
    assert got == expected
    assert {a["action"] for a in got[1]} == {"scale_down", "migrate"}, "the run should act"
    assert all(f["accuracy"]["n"] > 20 for f in got[0]), "the forecasters kept their past"


def test_a_restored_vm_skips_the_windows_its_state_already_reflects() -> None:
    config = CapacityConfig(min_windows=3, act_after_windows=10)
    stayed = CapacityPlanner(config)
    run(stayed, {"vm-1": 500.0}, range(12))
    moved = _moved(stayed, config, ["vm-1"])
    replayed = run(moved, {"vm-1": 500.0}, range(8, 12))  # redelivered after a takeover
    assert replayed == ([], [])
    assert run(moved, {"vm-1": 500.0}, range(12, 20)) == run(stayed, {"vm-1": 500.0}, range(12, 20))


def test_a_state_written_for_another_configuration_is_refused_and_changes_nothing() -> None:
    planner = CapacityPlanner(CapacityConfig(min_windows=3))
    run(planner, {"vm-1": 500.0}, range(6))
    state = planner.dump_vm("vm-1")
    other = CapacityPlanner(CapacityConfig(horizon=6))
    with pytest.raises(ValueError, match="does not fit"):
        other.load_vm("vm-1", state)
    assert not other.knows("vm-1")
    with pytest.raises(ValueError, match="unusable"):
        other.load_vm("vm-1", b"not a state at all")
    assert not other.knows("vm-1")
    forecasts, _ = run(other, {"vm-1": 500.0}, range(6, 10))
    assert forecasts and all(f["accuracy"].get("n", 0) < 10 for f in forecasts), "starts afresh"


def test_usage_history_keeps_the_latest_usages_of_each_resource_oldest_first() -> None:
    history = UsageHistory(("vcpu", "memory"), size=4, capacity=1)
    rows = [history.add() for _ in range(3)]  # grows past its capacity
    assert rows == [0, 1, 2]
    for usage in range(1, 8):
        history.append(1, 0, float(usage))
    history.append(1, 1, 9.0)
    history.append(2, 0, 5.5)
    assert history.ordered(1, 0).tolist() == [4.0, 5.0, 6.0, 7.0]
    assert history.latest(1, 0) == 7.0 and history.filled(1, 0) == 4
    assert history.ordered(1, 1).tolist() == [9.0] and history.filled(1, 1) == 1
    assert history.as_dict(1) == {"vcpu": [4.0, 5.0, 6.0, 7.0], "memory": [9.0]}
    assert history.as_dict(0) == {"vcpu": [], "memory": []}
    assert history.as_dict(2) == {"vcpu": [5.5], "memory": []}
    # a removed row comes back empty for the next VM
    history.remove(1)
    assert history.add() == 1
    assert history.as_dict(1) == {"vcpu": [], "memory": []}


def test_each_vm_keeps_its_own_allocation_and_forecasters_and_a_freed_row_starts_afresh() -> None:
    """Allocations and forecaster rows are rows of arrays shared by every VM: seventy VMs
    (past the first capacity) keep theirs apart, and a VM given a forgotten VM's row starts
    with the default allocation and no forecaster."""
    planner = CapacityPlanner(CapacityConfig(min_windows=3))
    vms = [f"vm-{i:02d}" for i in range(70)]
    for i, vm in enumerate(vms):
        planner.set_allocation(vm, {"vcpus": 1.0 + i, "mem_mib": 1024.0 * (i + 1)})
        for k in range(3 if i % 2 else 0):
            planner.on_window(window(vm, 60.0 * k, 30.0, 100.0))

    def state(vm: str) -> dict:
        return array_state.unpack(planner.dump_vm(vm))[0]

    for i, vm in enumerate(vms):
        assert state(vm)["allocation"] == {
            "vcpu": 1.0 + i,
            "memory": 1024.0 * (i + 1),
            "bandwidth": 1000.0,
        }
        assert len(planner.current_forecasts(vm)) == (4 if i % 2 else 0)
    planner.forget("vm-05")
    planner.on_window(window("vm-new", 0.0, 30.0, 100.0))
    assert state("vm-new")["allocation"] == {"vcpu": 4.0, "memory": 8192.0, "bandwidth": 1000.0}
    assert planner.current_forecasts("vm-new") == []
    assert state("vm-new")["usage"]["vcpu"] == [pytest.approx(1.2)]  # 30 % of 4 vCPUs
    assert len(planner.current_forecasts("vm-07")) == 4


def test_an_action_reads_the_workload_pattern_of_the_usage_history_kept() -> None:
    """A view reads its VM's usage history when an action is written, rather than keeping a
    copy: the pattern an action carries is that of the usages kept then, as
    `classify_workload` labels them (a steady rise here)."""
    from models.workload import classify_workload

    planner = CapacityPlanner(CapacityConfig(min_windows=3, act_after_windows=20, history=30))
    ups = []
    for k in range(40):
        _, actions = planner.on_window(window("vm-1", 60.0 * k, 30.0, 500.0 + 12.0 * k))
        for action in actions:
            if action["action"] == "scale_up" and action["resource"] == "bandwidth":
                view = planner._kept_view("vm-1").resources["bandwidth"]
                kept = list(view.history)
                assert len(kept) == min(30, k + 1) and kept[-1] == 500.0 + 12.0 * k
                ups.append((action, classify_workload(kept, view.period).as_dict()))
    assert ups, "a steady rise towards the allocation should scale bandwidth up"
    for action, expected in ups:
        assert action["pattern"] == expected
    assert expected["kind"] == "trending"
