"""Predictive scaling policy: resize VMs from forecast upper bounds, migrate off saturated hosts.

`ScalingPolicy.decide(now, vms, hosts)` is a pure function of its inputs and the policy's own
small state (last action per VM resource, recent scale-down recommendations, last migration per
host); time is passed in, never read from a clock.

Per VM and resource (vcpu, memory, bandwidth), with utilisation = usage / allocation:

- scale_up when the forecast upper bound (at `config.level`) or the current utilisation goes
  above `up_threshold`; the target brings the forecast peak back to `target_utilisation`
  (and grows by `censored_growth` at least when usage sits at the allocation, where the real
  demand is hidden);
- scale_down only when both the forecast upper bound and the current utilisation are below
  `down_threshold` (hysteresis: down < target < up), and only once that has held for the whole
  stabilisation window; the target is the largest recommendation seen in that window;
- min/max allocation bounds and steps per resource; cooldowns per VM resource and direction.

Per host: when the sum of its VMs' forecast upper bounds exceeds `host_saturation` of its
capacity, resizing cannot help (usage, not allocation, saturates the host), so one `migrate` is
issued for the VM whose move clears the overload with the smallest footprint, or, when no single
VM clears it, for the VM that relieves it most. Scale-ups of that resource on the host wait.
"""

from __future__ import annotations

import math
import uuid
from array import array
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field

from models.workload import classify_workload

RESOURCES: tuple[str, ...] = ("vcpu", "memory", "bandwidth")
ACTIONS: tuple[str, ...] = ("scale_up", "scale_down", "migrate")
_ACTION_NAMESPACE = uuid.UUID("6f1c9a52-3f0e-4c55-9a57-2b0d3c1e8a10")


@dataclass(frozen=True)
class ResourceLimits:
    """Allowed allocation range of one resource and its granularity."""

    minimum: float
    maximum: float
    step: float

    def clamp(self, value: float) -> float:
        stepped = math.ceil(value / self.step - 1e-9) * self.step
        return min(self.maximum, max(self.minimum, stepped))


def default_limits() -> dict[str, ResourceLimits]:
    return {
        "vcpu": ResourceLimits(1, 64, 1),  # vCPUs
        "memory": ResourceLimits(512, 262_144, 512),  # MiB
        "bandwidth": ResourceLimits(100, 25_000, 100),  # Mbit/s
    }


@dataclass
class ScalingConfig:
    up_threshold: float = 0.8
    down_threshold: float = 0.4
    target_utilisation: float = 0.6
    level: float = 0.95  # which band's upper bound the forecasts carry
    stabilisation_window: float = 600.0  # seconds a scale-down must hold
    cooldown_up: float = 300.0  # seconds after any action before a scale-up
    cooldown_down: float = 900.0  # seconds after any action before a scale-down
    # Usage at the allocation hides the real demand: grow by at least this factor then.
    censored_utilisation: float = 0.98
    censored_growth: float = 2.0
    host_saturation: float = 0.9
    migrate_cooldown: float = 1800.0  # seconds between migrations off one host
    action_ttl: float = 600.0
    mode: str = "act"  # "act" or "recommend"
    limits: dict[str, ResourceLimits] = field(default_factory=default_limits)

    def __post_init__(self) -> None:
        if not self.down_threshold < self.target_utilisation < self.up_threshold:
            raise ValueError("need down_threshold < target_utilisation < up_threshold")
        if self.mode not in ("act", "recommend"):
            raise ValueError("mode must be 'act' or 'recommend'")


@dataclass(frozen=True, slots=True)
class ResourceView:
    """One resource of one VM; usage, forecast and bounds in allocation units."""

    allocation: float
    usage: float
    forecast: Sequence[float] = ()
    upper: Sequence[float] = ()
    history: Sequence[float] = ()  # recent usage, oldest first
    period: int | None = None  # seasonal period of the history in samples, if known

    @classmethod
    def from_forecast(
        cls,
        allocation: float,
        usage: float,
        points: Sequence,
        level: float,
        scale: float = 1.0,
        history: Sequence[float] = (),
        period: int | None = None,
    ) -> ResourceView:
        """Build from `ForecastPoint`s of a usage metric; `scale` converts metric to allocation
        units (e.g. vcpus / 100 for cpu_pct, 1e-6 for bit/s to Mbit/s)."""
        return cls(
            allocation=allocation,
            usage=usage * scale,
            forecast=[p.yhat * scale for p in points],
            upper=[p.upper[level] * scale for p in points],
            history=[v * scale for v in history] if scale != 1.0 else history,
            period=period,
        )

    @property
    def peak_upper(self) -> float:
        return max(max(self.upper, default=self.usage), self.usage)

    @property
    def peak_forecast(self) -> float:
        return max(self.forecast, default=self.usage)


@dataclass(frozen=True, slots=True)
class VMView:
    vm_id: str
    host: str
    resources: Mapping[str, ResourceView]


@dataclass(frozen=True)
class HostView:
    host_id: str
    capacity: Mapping[str, float]  # per resource, allocation units


class _ResourceMemory:
    """What the policy remembers of each VM's resources, one array of doubles per VM.

    Per resource (in a fixed order): the time of its last action and since when it has been
    under the scale-down threshold (NaN: none), and how many scale-down wishes it keeps; then
    the wishes, resource after resource, as (time, desired size) pairs: those that may still
    be the largest of the stabilisation window, their sizes decreasing. A VM with two resources
    under the threshold (three wishes) takes about 280 bytes, against 640 in three dicts keyed
    by (VM, resource) holding numbers and arrays of their own."""

    def __init__(self, resources: Sequence[str]) -> None:
        self._index = {r: i for i, r in enumerate(resources)}
        self._blank = array("d", [math.nan, math.nan, 0.0]) * len(resources)
        self._vms: dict[str, array] = {}

    def _get(self, vm_id: str, resource: str) -> tuple[array | None, int]:
        return self._vms.get(vm_id), 3 * self._index[resource]

    def _row(self, vm_id: str) -> array:
        row = self._vms.get(vm_id)
        if row is None:
            row = self._vms[vm_id] = array("d", self._blank)
        return row

    def last_action(self, vm_id: str, resource: str) -> float | None:
        row, at = self._get(vm_id, resource)
        return None if row is None or row[at] != row[at] else row[at]

    def set_last_action(self, vm_id: str, resource: str, when: float) -> None:
        self._row(vm_id)[3 * self._index[resource]] = when

    def down_since(self, vm_id: str, resource: str) -> float | None:
        row, at = self._get(vm_id, resource)
        return None if row is None or row[at + 1] != row[at + 1] else row[at + 1]

    def _wishes_at(self, row: array, resource: str) -> slice:
        i = self._index[resource]
        start = len(self._blank) + 2 * int(sum(row[3 * j + 2] for j in range(i)))
        return slice(start, start + 2 * int(row[3 * i + 2]))

    def wishes(self, vm_id: str, resource: str) -> array:
        """The resource's wishes, flat (t0, d0, t1, d1, ...), as a copy."""
        row = self._vms.get(vm_id)
        return array("d") if row is None else row[self._wishes_at(row, resource)]

    def set_down(self, vm_id: str, resource: str, since: float, wishes: array) -> None:
        """The resource is under the threshold since `since`, with these wishes."""
        row = self._row(vm_id)
        row[self._wishes_at(row, resource)] = wishes
        at = 3 * self._index[resource]
        row[at + 1], row[at + 2] = since, len(wishes) // 2

    def reset_down(self, vm_id: str, resource: str) -> None:
        """The resource is no longer under the threshold; a VM with nothing left is dropped."""
        row, at = self._get(vm_id, resource)
        if row is None or row[at + 1] != row[at + 1]:
            return
        del row[self._wishes_at(row, resource)]
        row[at + 1], row[at + 2] = math.nan, 0.0
        head = row[: len(self._blank)]
        if all(v != v for i, v in enumerate(head) if i % 3 < 2):
            del self._vms[vm_id]  # no last action and nothing pending for any resource

    def forget(self, vm_id: str) -> None:
        self._vms.pop(vm_id, None)


def action_id(vm_id: str, resource: str, action: str, ts: float) -> str:
    """Deterministic id of an action from what and when it was decided."""
    return str(uuid.uuid5(_ACTION_NAMESPACE, f"{vm_id}|{resource}|{action}|{ts!r}"))


class ScalingPolicy:
    """Turns forecasts and current utilisation into scale_up / scale_down / migrate actions."""

    def __init__(self, config: ScalingConfig | None = None) -> None:
        self.config = config or ScalingConfig()
        # last action per VM resource and the scale-down wishes of those under the threshold
        self._memory = _ResourceMemory(tuple(self.config.limits))
        self._last_migration: dict[str, float] = {}
        self._migrating: dict[str, float] = {}  # vm_id -> when its migrate was issued

    # ------------------------------------------------------------------ public
    def decide(
        self,
        now: float,
        vms: Iterable[VMView],
        hosts: Mapping[str, HostView] | None = None,
    ) -> list[dict]:
        """All actions for this decision time, sorted by (vm_id, resource, action)."""
        vms = sorted(vms, key=lambda v: v.vm_id)
        actions: list[dict] = []
        blocked: set[tuple[str, str]] = set()  # (host, resource) with scale-ups on hold
        for host in sorted((hosts or {}).values(), key=lambda h: h.host_id):
            on_host = [v for v in vms if v.host == host.host_id]
            saturated, migrate = self._host_decision(now, host, on_host)
            blocked.update((host.host_id, r) for r in saturated)
            if migrate is not None:
                actions.append(migrate)
        for vm in vms:
            for resource in sorted(vm.resources):
                act = self._resource_decision(now, vm, resource, blocked)
                if act is not None:
                    actions.append(act)
        return sorted(actions, key=lambda a: (a["vm_id"], a["resource"], a["action"]))

    def forget(self, vm_id: str) -> None:
        """Drop the state kept for a VM that no longer exists."""
        self._memory.forget(vm_id)
        self._migrating.pop(vm_id, None)

    def vm_state(self, vm_id: str, host: str | None) -> dict:
        """What the policy remembers of a VM (cooldowns, pending scale-down, migration) and
        of its host's last migration, JSON-ready, for `restore_vm_state`."""
        resources = {}
        memory = self._memory
        for resource in self.config.limits:  # decisions are only taken for these
            entry: dict = {}
            last, since = memory.last_action(vm_id, resource), memory.down_since(vm_id, resource)
            if last is not None:
                entry["last_action"] = last
            if since is not None:
                entry["down_since"] = since
                flat = memory.wishes(vm_id, resource).tolist()
                entry["down_recs"] = [flat[i : i + 2] for i in range(0, len(flat), 2)]
            if entry:
                resources[resource] = entry
        state: dict = {"resources": resources}
        if vm_id in self._migrating:
            state["migrating"] = self._migrating[vm_id]
        if host is not None and host in self._last_migration:
            state["host_last_migration"] = self._last_migration[host]
        return state

    def restore_vm_state(self, vm_id: str, host: str | None, state: dict) -> None:
        """Take back what `vm_state` returned (a host's latest migration time wins)."""
        memory = self._memory
        for resource, entry in state.get("resources", {}).items():
            if resource not in self.config.limits:  # decisions are only taken for those
                continue
            if "last_action" in entry:
                memory.set_last_action(vm_id, resource, float(entry["last_action"]))
            if "down_since" in entry:
                pairs = [(float(t), float(d)) for t, d in entry.get("down_recs", ())]
                wishes = array("d", [v for pair in pairs for v in pair])
                memory.set_down(vm_id, resource, float(entry["down_since"]), wishes)
        if "migrating" in state:
            self._migrating[vm_id] = float(state["migrating"])
        if host is not None and "host_last_migration" in state:
            when = float(state["host_last_migration"])
            self._last_migration[host] = max(when, self._last_migration.get(host, when))

    # ------------------------------------------------------------------ per resource
    def _resource_decision(
        self, now: float, vm: VMView, resource: str, blocked: set[tuple[str, str]]
    ) -> dict | None:
        cfg = self.config
        view = vm.resources[resource]
        limits = cfg.limits.get(resource)
        if limits is None or view.allocation <= 0:
            return None
        memory = self._memory
        alloc = view.allocation
        util_now = view.usage / alloc
        util_upper = view.peak_upper / alloc
        desired = limits.clamp(max(view.peak_upper, view.usage) / cfg.target_utilisation)
        last = memory.last_action(vm.vm_id, resource)

        if util_upper > cfg.up_threshold or util_now > cfg.up_threshold:
            memory.reset_down(vm.vm_id, resource)
            if (vm.host, resource) in blocked:
                return None
            if last is not None and now - last < cfg.cooldown_up:
                return None
            floor = alloc + limits.step
            if util_now >= cfg.censored_utilisation:
                floor = max(floor, alloc * cfg.censored_growth)
            target = max(desired, limits.clamp(floor))
            if target <= alloc:
                return None  # already at the maximum allocation
            reason = (
                f"forecast upper bound {util_upper:.0%} / current {util_now:.0%} of allocation "
                f"above the {cfg.up_threshold:.0%} scale-up threshold"
            )
            conf = self._up_confidence(view, alloc, util_now)
            memory.set_last_action(vm.vm_id, resource, now)
            return self._action(now, vm, resource, "scale_up", alloc, target, reason, conf)

        if util_upper < cfg.down_threshold and util_now < cfg.down_threshold:
            since = memory.down_since(vm.vm_id, resource)
            since = now if since is None else since
            recs = memory.wishes(vm.vm_id, resource)
            while recs and recs[-1] <= desired:
                del recs[-2:]  # an earlier wish no larger than this one can no longer be the max
            recs.extend((now, desired))
            expired = 0  # the wishes older than the window; the one made now stays
            while expired < len(recs) - 2 and recs[expired] < now - cfg.stabilisation_window:
                expired += 2
            del recs[:expired]
            memory.set_down(vm.vm_id, resource, since, recs)
            if now - since < cfg.stabilisation_window:
                return None  # not yet held for the whole window
            if last is not None and now - last < cfg.cooldown_down:
                return None
            target = max(recs[1::2])
            if target >= alloc:
                return None  # at the minimum already, or the window still wants this size
            reason = (
                f"forecast upper bound {util_upper:.0%} and current {util_now:.0%} of allocation "
                f"below the {cfg.down_threshold:.0%} scale-down threshold for "
                f"{cfg.stabilisation_window:.0f}s"
            )
            conf = min(1.0, 0.5 + 0.5 * (cfg.down_threshold - util_upper) / cfg.down_threshold)
            memory.set_last_action(vm.vm_id, resource, now)
            memory.reset_down(vm.vm_id, resource)
            return self._action(now, vm, resource, "scale_down", alloc, target, reason, conf)

        memory.reset_down(vm.vm_id, resource)
        return None

    def _up_confidence(self, view: ResourceView, alloc: float, util_now: float) -> float:
        thr = self.config.up_threshold * alloc
        upper_share = _share_above(view.upper, thr)
        point_share = _share_above(view.forecast, thr)
        now_over = 1.0 if util_now > self.config.up_threshold else 0.0
        return min(1.0, 0.35 * upper_share + 0.45 * point_share + 0.2 * now_over)

    # ------------------------------------------------------------------ per host
    def _host_decision(
        self, now: float, host: HostView, on_host: Sequence[VMView]
    ) -> tuple[list[str], dict | None]:
        cfg = self.config
        demand: dict[str, float] = {}
        for vm in on_host:
            for r, view in vm.resources.items():
                demand[r] = demand.get(r, 0.0) + view.peak_upper
        excess = {
            r: demand.get(r, 0.0) - cfg.host_saturation * cap
            for r, cap in host.capacity.items()
            if cap > 0
        }
        saturated = sorted(r for r, e in excess.items() if e > 0)
        if not saturated:
            return [], None
        last = self._last_migration.get(host.host_id)
        if last is not None and now - last < cfg.migrate_cooldown:
            return saturated, None
        candidates = [
            v
            for v in on_host
            if v.vm_id not in self._migrating
            or now - self._migrating[v.vm_id] >= cfg.migrate_cooldown
        ]
        if not candidates:
            return saturated, None

        def relief(vm: VMView) -> list[float]:
            return [vm.resources[r].peak_upper if r in vm.resources else 0.0 for r in saturated]

        def footprint(vm: VMView) -> float:
            return sum(
                vm.resources[r].peak_upper / host.capacity[r]
                for r in vm.resources
                if host.capacity.get(r, 0) > 0
            )

        clears = [
            v
            for v in candidates
            if all(rel >= excess[r] for rel, r in zip(relief(v), saturated, strict=True))
        ]
        if clears:
            chosen = min(clears, key=lambda v: (footprint(v), v.vm_id))
        else:
            chosen = max(
                candidates,
                key=lambda v: (
                    sum(
                        min(rel, excess[r]) / host.capacity[r]
                        for rel, r in zip(relief(v), saturated, strict=True)
                    ),
                    v.vm_id,
                ),
            )
        worst = max(saturated, key=lambda r: excess[r] / host.capacity[r])
        view = chosen.resources.get(worst)
        alloc = view.allocation if view is not None else 0.0
        overload = {r: demand[r] / host.capacity[r] for r in saturated}
        reason = (
            f"host {host.host_id} forecast to reach "
            + ", ".join(f"{r} {u:.0%}" for r, u in overload.items())
            + f" of capacity (limit {cfg.host_saturation:.0%}); resizing cannot relieve it"
        )
        conf = min(1.0, 0.5 + 0.5 * max(excess[r] / (0.1 * host.capacity[r]) for r in saturated))
        host_evidence = {
            "host_capacity": {r: float(c) for r, c in sorted(host.capacity.items())},
            "host_forecast_demand": {r: float(d) for r, d in sorted(demand.items())},
            "host_excess": {r: float(excess[r]) for r in saturated},
            "vm_relief": dict(zip(saturated, map(float, relief(chosen)), strict=True)),
        }
        self._last_migration[host.host_id] = now
        self._migrating[chosen.vm_id] = now
        action = self._action(now, chosen, worst, "migrate", alloc, alloc, reason, conf)
        action["evidence"].update(host_evidence)
        return saturated, action

    # ------------------------------------------------------------------ output
    def _action(
        self,
        now: float,
        vm: VMView,
        resource: str,
        kind: str,
        current: float,
        target: float,
        reason: str,
        confidence: float,
    ) -> dict:
        cfg = self.config
        view = vm.resources.get(resource)
        evidence: dict = {"level": cfg.level}
        pattern: dict = {"kind": "steady", "strength": 0.0}
        if view is not None:
            evidence.update(
                usage=float(view.usage),
                utilisation=float(view.usage / view.allocation) if view.allocation else None,
                forecast_peak=float(view.peak_forecast),
                upper_peak=float(view.peak_upper),
                forecast=[float(v) for v in view.forecast],
                upper=[float(v) for v in view.upper],
                thresholds={
                    "up": cfg.up_threshold,
                    "down": cfg.down_threshold,
                    "target": cfg.target_utilisation,
                },
            )
            history = view.history if len(view.history) else [view.usage]
            pattern = classify_workload(history, view.period).as_dict()
        return {
            "action_id": action_id(vm.vm_id, resource, kind, now),
            "vm_id": vm.vm_id,
            "host": vm.host,
            "action": kind,
            "resource": resource,
            "current_allocation": float(current),
            "target_allocation": float(target),
            "mode": cfg.mode,
            "reason": reason,
            "pattern": pattern,
            "confidence": round(float(confidence), 3),
            "evidence": evidence,
            "issued_at": now,
            "expires_at": now + cfg.action_ttl,
        }


def _share_above(values: Sequence[float], threshold: float) -> float:
    if not len(values):
        return 0.0
    return sum(1 for v in values if v > threshold) / len(values)
