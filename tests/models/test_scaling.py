"""ScalingPolicy guards, host migration, action shape, and workload patterns."""

from __future__ import annotations

import json

import numpy as np
import pytest

from models.forecasting import IntervalForecaster
from models.scaling import (
    HostView,
    ResourceLimits,
    ResourceView,
    ScalingConfig,
    ScalingPolicy,
    VMView,
    action_id,
)
from models.workload import classify_workload

T0 = 1_700_000_000.0


def cpu(alloc: float, usage: float, upper: float | None = None, forecast: float | None = None):
    upper = usage if upper is None else upper
    forecast = usage if forecast is None else forecast
    return ResourceView(allocation=alloc, usage=usage, forecast=[forecast] * 12, upper=[upper] * 12)


def vm(resource_view: ResourceView, vm_id: str = "vm-1", host: str = "h-1") -> VMView:
    return VMView(vm_id, host, {"vcpu": resource_view})


def config(**kw) -> ScalingConfig:
    base = dict(stabilisation_window=600.0, cooldown_up=300.0, cooldown_down=900.0)
    base.update(kw)
    return ScalingConfig(**base)


def test_scale_up_on_forecast_upper_bound_sizes_to_target():
    policy = ScalingPolicy(config())
    # current 50 % is fine, but the 95 % upper bound reaches 7.2 of 8 vCPU (90 %).
    [act] = policy.decide(T0, [vm(cpu(8, 4, upper=7.2, forecast=6.5))])
    assert act["action"] == "scale_up" and act["resource"] == "vcpu"
    assert act["current_allocation"] == 8 and act["target_allocation"] == 12  # ceil(7.2 / 0.6)
    assert act["mode"] == "act"
    assert act["evidence"]["upper_peak"] == 7.2 and act["evidence"]["forecast_peak"] == 6.5
    assert 0 < act["confidence"] <= 1


def test_max_and_min_allocation_bounds():
    limits = {"vcpu": ResourceLimits(minimum=2, maximum=10, step=1)}
    policy = ScalingPolicy(config(limits=limits, stabilisation_window=0.0))
    [up] = policy.decide(T0, [vm(cpu(8, 7.9, upper=9.5))])
    assert up["target_allocation"] == 10  # clamped to the maximum
    assert policy.decide(T0 + 1000, [vm(cpu(10, 9.9, upper=12.0))]) == []  # already at max
    [down] = policy.decide(T0 + 5000, [vm(cpu(10, 0.1, upper=0.2))])
    assert down["action"] == "scale_down" and down["target_allocation"] == 2  # the minimum


def test_hysteresis_band_holds_between_thresholds():
    policy = ScalingPolicy(config(stabilisation_window=0.0))
    for k, util in enumerate([0.45, 0.6, 0.75, 0.79, 0.41]):
        usage = 10 * util
        assert policy.decide(T0 + 1000 * k, [vm(cpu(10, usage, upper=usage))]) == []
    # After a scale-up sized to the 60 % target, the same demand does not trigger anything.
    [up] = policy.decide(T0 + 10_000, [vm(cpu(10, 8.5, upper=9.0))])
    new_alloc = up["target_allocation"]
    assert policy.decide(T0 + 20_000, [vm(cpu(new_alloc, 8.5, upper=9.0))]) == []


def test_cooldown_per_vm_and_resource():
    policy = ScalingPolicy(config(cooldown_up=300.0))
    hot = cpu(4, 3.8, upper=4.5)
    assert len(policy.decide(T0, [vm(hot)])) == 1
    assert policy.decide(T0 + 120, [vm(hot)]) == []  # same VM, same resource: cooling down
    other = policy.decide(T0 + 120, [vm(hot, vm_id="vm-2")])
    assert [a["vm_id"] for a in other] == ["vm-2"]  # other VMs are not affected
    mem = ResourceView(allocation=4096, usage=3900, forecast=[3900] * 12, upper=[4000] * 12)
    both = VMView("vm-1", "h-1", {"vcpu": hot, "memory": mem})
    assert [a["resource"] for a in policy.decide(T0 + 130, [both])] == ["memory"]
    assert len(policy.decide(T0 + 300, [vm(hot)])) == 1  # cooldown over


def test_scale_down_needs_the_whole_stabilisation_window():
    policy = ScalingPolicy(config(stabilisation_window=600.0, cooldown_down=0.0))
    idle = cpu(16, 2.0, upper=3.0)
    for dt in (0, 120, 300, 540):
        assert policy.decide(T0 + dt, [vm(idle)]) == []
    [down] = policy.decide(T0 + 600, [vm(idle)])
    assert down["action"] == "scale_down" and down["target_allocation"] == 5  # ceil(3 / 0.6)


def test_interrupted_window_restarts_and_window_maximum_is_used():
    policy = ScalingPolicy(config(stabilisation_window=600.0, cooldown_down=0.0))
    policy.decide(T0, [vm(cpu(16, 2.0, upper=3.0))])
    policy.decide(T0 + 300, [vm(cpu(16, 8.0, upper=9.0))])  # 56 %: in the band, resets
    assert policy.decide(T0 + 600, [vm(cpu(16, 2.0, upper=3.0))]) == []
    policy.decide(T0 + 900, [vm(cpu(16, 3.0, upper=5.4))])  # bigger recommendation: 9
    [down] = policy.decide(T0 + 1200, [vm(cpu(16, 1.0, upper=1.2))])
    assert down["target_allocation"] == 9  # the largest recommendation in the window


def test_only_wishes_that_can_still_be_the_windows_largest_are_kept():
    policy = ScalingPolicy(config(stabilisation_window=600.0, cooldown_down=0.0))
    for dt, upper in ((0, 5.4), (100, 3.0), (200, 1.2), (300, 3.0)):  # wishes 9, 5, 2, 5
        assert policy.decide(T0 + dt, [vm(cpu(16, 1.0, upper=upper))]) == []
    kept = policy.vm_state("vm-1", None)["resources"]["vcpu"]["down_recs"]
    assert kept == [[T0, 9], [T0 + 300, 5]]
    [down] = policy.decide(T0 + 650, [vm(cpu(16, 1.0, upper=1.2))])  # the 9 has left the window
    assert down["target_allocation"] == 5


def test_each_resource_keeps_its_own_wishes_and_they_survive_a_move() -> None:
    """The three resources of one VM under the threshold keep their wishes apart (they share
    the VM's memory); one returning to the band drops only its own; a policy given the VM's
    state decides as the first one would have."""

    def views(mem_upper: float) -> list[VMView]:
        return [
            VMView(
                "vm-1",
                "h-1",
                {
                    "vcpu": cpu(16, 1.0, upper=3.0),  # wish 5
                    "memory": cpu(16384, 1000.0, upper=mem_upper),
                    "bandwidth": cpu(5000, 300.0, upper=600.0),  # wish 1000
                },
            )
        ]

    policy = ScalingPolicy(config(stabilisation_window=600.0, cooldown_down=0.0))
    for dt, mem_upper in ((0, 6000.0), (100, 3000.0), (200, 2000.0)):  # memory wishes 10240 ..
        assert policy.decide(T0 + dt, views(mem_upper)) == []
    kept = policy.vm_state("vm-1", None)["resources"]
    assert kept["vcpu"]["down_recs"] == [[T0 + 200, 5]]
    assert kept["memory"]["down_recs"] == [[T0, 10240], [T0 + 100, 5120], [T0 + 200, 3584]]
    assert kept["bandwidth"]["down_recs"] == [[T0 + 200, 1000]]
    assert {r: kept[r]["down_since"] for r in kept} == dict.fromkeys(kept, T0)

    policy.decide(T0 + 300, views(9000.0))  # memory back in the band: its wishes go
    kept = policy.vm_state("vm-1", None)["resources"]
    assert "memory" not in kept and kept["vcpu"]["down_recs"] == [[T0 + 300, 5]]
    assert kept["bandwidth"]["down_recs"] == [[T0 + 300, 1000]]

    moved = ScalingPolicy(config(stabilisation_window=600.0, cooldown_down=0.0))
    moved.restore_vm_state("vm-1", None, json.loads(json.dumps(policy.vm_state("vm-1", None))))
    assert moved.vm_state("vm-1", None) == policy.vm_state("vm-1", None)
    decided = {}
    for dt in (400, 600, 900, 1000):
        decided[dt] = moved.decide(T0 + dt, views(2000.0))
        assert decided[dt] == policy.decide(T0 + dt, views(2000.0))
    resources = {dt: [a["resource"] for a in actions] for dt, actions in decided.items()}
    assert resources == {400: [], 600: ["bandwidth", "vcpu"], 900: [], 1000: ["memory"]}


def test_no_scale_down_on_a_forecast_dip_alone():
    policy = ScalingPolicy(config(stabilisation_window=0.0, cooldown_down=0.0))
    dip = cpu(16, 9.0, upper=4.0, forecast=2.0)  # forecast low, but 56 % used right now
    for dt in range(0, 3600, 300):
        assert policy.decide(T0 + dt, [vm(dip)]) == []


def test_recommend_only_mode_flags_actions():
    policy = ScalingPolicy(config(mode="recommend"))
    [act] = policy.decide(T0, [vm(cpu(4, 3.9, upper=4.2))])
    assert act["mode"] == "recommend"
    with pytest.raises(ValueError):
        ScalingConfig(mode="maybe")
    with pytest.raises(ValueError):
        ScalingConfig(up_threshold=0.5, down_threshold=0.6)


def saturated_fleet():
    """Host with 32 vCPU; forecast demand 30 > 90 % of 32 = 28.8 (excess 1.2)."""
    vms = [
        VMView("vm-a", "h-1", {"vcpu": cpu(24, 14.0, upper=17.0)}),
        VMView("vm-b", "h-1", {"vcpu": cpu(8, 4.0, upper=4.5)}),
        VMView("vm-c", "h-1", {"vcpu": cpu(8, 5.0, upper=6.0)}),
        VMView("vm-d", "h-1", {"vcpu": cpu(4, 2.0, upper=2.5)}),
        VMView("vm-x", "h-2", {"vcpu": cpu(8, 2.0, upper=2.5)}),
    ]
    hosts = {"h-1": HostView("h-1", {"vcpu": 32}), "h-2": HostView("h-2", {"vcpu": 32})}
    return vms, hosts


def test_host_saturation_yields_exactly_one_migrate_for_the_right_vm():
    policy = ScalingPolicy(config())
    vms, hosts = saturated_fleet()
    actions = policy.decide(T0, vms, hosts)
    migrates = [a for a in actions if a["action"] == "migrate"]
    assert len(migrates) == 1
    # Every VM alone clears the 1.2 vCPU excess; vm-d does with the smallest footprint.
    assert migrates[0]["vm_id"] == "vm-d" and migrates[0]["host"] == "h-1"
    assert migrates[0]["evidence"]["host_forecast_demand"]["vcpu"] == pytest.approx(30.0)
    assert migrates[0]["evidence"]["host_excess"]["vcpu"] == pytest.approx(1.2)
    # Within the migrate cooldown the host does not shed another VM.
    assert [a for a in policy.decide(T0 + 60, vms, hosts) if a["action"] == "migrate"] == []


def test_when_no_single_vm_clears_the_overload_the_biggest_relief_moves():
    policy = ScalingPolicy(config())
    vms = [VMView(f"vm-{i}", "h-1", {"vcpu": cpu(8, 5.0, upper=6.0 + i)}) for i in range(4)]
    # demand 6+7+8+9 = 30 on a 20-vCPU host: excess 12, no VM alone clears it.
    actions = policy.decide(T0, vms, {"h-1": HostView("h-1", {"vcpu": 20})})
    migrates = [a for a in actions if a["action"] == "migrate"]
    assert [a["vm_id"] for a in migrates] == ["vm-3"]
    # Scale-ups of the saturated resource on that host wait for the migration.
    assert [a for a in actions if a["action"] == "scale_up"] == []


def test_decisions_are_deterministic_and_ids_stable():
    vms, hosts = saturated_fleet()
    hot = VMView("vm-z", "h-2", {"vcpu": cpu(4, 3.9, upper=4.4)})
    first = ScalingPolicy(config()).decide(T0, [*vms, hot], hosts)
    second = ScalingPolicy(config()).decide(T0, [hot, *reversed(vms)], hosts)
    assert first == second
    assert first[0]["action_id"] == action_id(
        first[0]["vm_id"], first[0]["resource"], first[0]["action"], T0
    )
    assert action_id("vm", "vcpu", "scale_up", T0) != action_id("vm", "vcpu", "scale_up", T0 + 1)


def test_action_dict_fields():
    rng = np.random.default_rng(0)
    history = list(50 + 20 * np.sin(2 * np.pi * np.arange(288 * 2) / 288) + rng.normal(0, 2, 576))
    view = ResourceView(800, 760, [700] * 12, [790] * 12, history=history, period=288)
    policy = ScalingPolicy(config(action_ttl=900.0))
    [act] = policy.decide(T0, [VMView("vm-9", "h-3", {"bandwidth": view})])
    json.dumps(act)
    assert set(act) == {
        "action_id", "vm_id", "host", "action", "resource", "current_allocation",
        "target_allocation", "mode", "reason", "pattern", "confidence", "evidence",
        "issued_at", "expires_at",
    }  # fmt: skip
    assert act["expires_at"] == act["issued_at"] + 900.0 == T0 + 900.0
    assert act["target_allocation"] == 1400  # ceil(790 / 0.6 / 100) * 100
    assert act["pattern"]["kind"] == "periodic"
    assert "threshold" in act["reason"]


def test_resource_view_from_forecaster_output():
    f = IntervalForecaster(horizon=6, season_length=0)
    for v in np.random.default_rng(4).normal(78.0, 2.0, 300):  # cpu_pct on an 8-vCPU VM
        f.learn_one(float(v))
    view = ResourceView.from_forecast(8, 78.0, f.forecast(), level=0.95, scale=8 / 100)
    assert view.usage == pytest.approx(6.24)
    assert len(view.upper) == 6 and view.peak_upper > view.peak_forecast > 6.0
    [act] = ScalingPolicy(config()).decide(T0, [vm(view)])  # upper > 80 % of 8 vCPU
    assert act["action"] == "scale_up" and act["target_allocation"] >= 11


def test_forget_drops_vm_state():
    policy = ScalingPolicy(config())
    policy.decide(T0, [vm(cpu(4, 3.9, upper=4.4))])
    policy.forget("vm-1")
    assert len(policy.decide(T0 + 1, [vm(cpu(4, 3.9, upper=4.4))])) == 1


@pytest.mark.parametrize(
    ("kind", "values", "period"),
    [
        ("periodic", 50 + 20 * np.sin(2 * np.pi * np.arange(576) / 288), 288),
        ("trending", 10 + 0.1 * np.arange(300) + np.random.default_rng(1).normal(0, 1, 300), None),
        ("steady", 40 + np.random.default_rng(2).normal(0, 1, 300), None),
    ],
)
def test_workload_patterns(kind, values, period):
    assert classify_workload(values, period).kind == kind


def test_bursty_workload():
    rng = np.random.default_rng(3)
    x = 10 + rng.normal(0, 0.5, 400)
    x[rng.choice(400, 12, replace=False)] += 40  # rare large spikes
    pattern = classify_workload(x)
    assert pattern.kind == "bursty" and pattern.strength > 0.5
