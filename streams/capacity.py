"""Forecasts and scaling actions from closed event-time windows of each VM.

Forecasters learn one point per window (the window mean), not one per sample: a forecast
resolution of a minute is what capacity decisions need, and it keeps the cost per sample low.
Every `forecast_every` windows a VM publishes one forecast message per metric, and the scaling
policy looks at its host: the VMs of a host are decided together once per window, with each
VM's latest view, so a host that is forecast to saturate yields one `migrate`.
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass, field

from models.forecasting import IntervalForecaster, forecast_message, level_key
from models.scaling import HostView, ResourceView, ScalingConfig, ScalingPolicy, VMView
from streams.windows import ClosedWindow

FORECAST_METRICS: tuple[str, ...] = ("cpu_pct", "mem_pct", "net_in_bps", "net_out_bps")
ALLOCATION_FIELDS: dict[str, str] = {"vcpus": "vcpu", "mem_mib": "memory", "net_mbps": "bandwidth"}


@dataclass
class CapacityConfig:
    horizon: int = 12
    levels: tuple[float, ...] = (0.8, 0.95)
    forecast_every: int = 1  # windows between two forecasts of a VM
    min_windows: int = 3  # windows a VM needs before it is forecast
    act_after_windows: int = 36  # windows before its forecast bands are trusted for actions
    history: int = 48  # windows of usage kept per resource for the workload pattern
    default_allocation: dict[str, float] = field(
        default_factory=lambda: {"vcpu": 4.0, "memory": 8192.0, "bandwidth": 1000.0}
    )
    host_capacity: dict[str, float] = field(
        default_factory=lambda: {"vcpu": 16.0, "memory": 65536.0, "bandwidth": 2000.0}
    )
    scaling: ScalingConfig = field(default_factory=ScalingConfig)


@dataclass
class _VMPlan:
    forecasters: dict[str, IntervalForecaster]
    allocation: dict[str, float]
    history: dict[str, deque]
    host: str | None = None
    windows: int = 0


def _usage(resource: str, metrics: dict[str, float], allocation: dict[str, float]) -> float | None:
    """A window's mean usage in allocation units (vCPUs, MiB, Mbit/s)."""
    if resource == "vcpu" and "cpu_pct" in metrics:
        return metrics["cpu_pct"] / 100.0 * allocation["vcpu"]
    if resource == "memory" and "mem_pct" in metrics:
        return metrics["mem_pct"] / 100.0 * allocation["memory"]
    if resource == "bandwidth":
        rates = [metrics[m] for m in ("net_in_bps", "net_out_bps") if m in metrics]
        return max(rates) * 8 / 1e6 if rates else None
    return None


@dataclass
class CapacityPlanner:
    """Per-VM forecasters plus the fleet's scaling policy."""

    config: CapacityConfig = field(default_factory=CapacityConfig)
    _vms: dict[str, _VMPlan] = field(default_factory=dict)
    _views: dict[str, VMView] = field(default_factory=dict)
    _host_members: dict[str, set[str]] = field(default_factory=dict)
    _host_decided: dict[str, float] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.policy = ScalingPolicy(self.config.scaling)
        self._level = level_key(self.config.scaling.level)

    def _plan(self, vm_id: str) -> _VMPlan:
        plan = self._vms.get(vm_id)
        if plan is None:
            c = self.config
            plan = self._vms[vm_id] = _VMPlan(
                forecasters={},
                allocation=dict(c.default_allocation),
                history={r: deque(maxlen=c.history) for r in c.default_allocation},
            )
        return plan

    def set_allocation(self, vm_id: str, allocation: dict[str, float]) -> None:
        """The VM's current allocation as its samples report it (vcpus, mem_mib, net_mbps)."""
        plan = self._plan(vm_id)
        for name, resource in ALLOCATION_FIELDS.items():
            if name in allocation:
                plan.allocation[resource] = allocation[name]

    def on_window(self, window: ClosedWindow) -> tuple[list[dict], list[dict]]:
        """Learn a closed window; returns (forecast messages, scaling actions) now due."""
        plan = self._plan(window.vm_id)
        if window.host is not None and window.host != plan.host:
            if plan.host is not None:
                self._host_members.get(plan.host, set()).discard(window.vm_id)
            plan.host = window.host
            self._host_members.setdefault(window.host, set()).add(window.vm_id)
        means = {name: s.mean for name, s in window.metrics.items() if s.count}
        for metric in FORECAST_METRICS:
            if metric in means:
                forecaster = plan.forecasters.get(metric)
                if forecaster is None:
                    forecaster = plan.forecasters[metric] = IntervalForecaster(
                        horizon=self.config.horizon,
                        levels=self.config.levels,
                        default_step_seconds=window.size_s,
                    )
                forecaster.learn_one(means[metric], ts=window.end)
        for resource, history in plan.history.items():
            usage = _usage(resource, means, plan.allocation)
            if usage is not None:
                history.append(usage)
        plan.windows += 1
        ready = {m: f for m, f in plan.forecasters.items() if f.n >= self.config.min_windows}
        if not ready or plan.windows % self.config.forecast_every:
            return [], []
        forecasts = [
            forecast_message(window.vm_id, m, f, issued_at=window.end)
            for m, f in sorted(ready.items())
        ]
        if min(f.n for f in ready.values()) < self.config.act_after_windows:
            return forecasts, []
        self._views[window.vm_id] = self._view(window.vm_id, plan, forecasts)
        return forecasts, self._decide(window.vm_id, plan.host, window.end)

    def _view(self, vm_id: str, plan: _VMPlan, forecasts: list[dict]) -> VMView:
        by_metric = {f["metric"]: f["points"] for f in forecasts}
        upper = f"upper_{self._level}"
        resources = {}
        for resource, allocation in plan.allocation.items():
            if not plan.history[resource]:
                continue
            if resource == "bandwidth":
                series = [by_metric[m] for m in ("net_in_bps", "net_out_bps") if m in by_metric]
                point = (
                    [max(p[i]["yhat"] for p in series) * 8 / 1e6 for i in range(len(series[0]))]
                    if series
                    else []
                )
                high = (
                    [max(p[i][upper] for p in series) * 8 / 1e6 for i in range(len(series[0]))]
                    if series
                    else []
                )
            else:
                metric, scale = (
                    ("cpu_pct", allocation / 100.0)
                    if resource == "vcpu"
                    else ("mem_pct", allocation / 100.0)
                )
                points = by_metric.get(metric, [])
                point = [max(0.0, p["yhat"]) * scale for p in points]
                high = [max(0.0, p[upper]) * scale for p in points]
            forecaster = plan.forecasters.get("cpu_pct")
            resources[resource] = ResourceView(
                allocation=allocation,
                usage=plan.history[resource][-1],
                forecast=point,
                upper=high,
                history=list(plan.history[resource]),
                period=forecaster.period if forecaster else None,
            )
        return VMView(vm_id, plan.host or "", resources)

    def _decide(self, vm_id: str, host: str | None, now: float) -> list[dict]:
        if host is None:
            return self.policy.decide(now, [self._views[vm_id]])
        if self._host_decided.get(host, -1.0) >= now:
            return []
        self._host_decided[host] = now
        members = [
            self._views[v] for v in sorted(self._host_members.get(host, ())) if v in self._views
        ]
        return self.policy.decide(now, members, {host: HostView(host, self.config.host_capacity)})

    def forget(self, vm_id: str) -> None:
        plan = self._vms.pop(vm_id, None)
        self._views.pop(vm_id, None)
        if plan is not None and plan.host is not None:
            self._host_members.get(plan.host, set()).discard(vm_id)
        self.policy.forget(vm_id)
