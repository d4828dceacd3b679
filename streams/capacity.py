"""Forecasts and scaling actions from closed event-time windows of each VM.

Forecasters learn one point per window (the window mean), not one per sample: a forecast
resolution of a minute is what capacity decisions need, and it keeps the cost per sample low.
Every `forecast_every` windows a VM publishes one forecast message per metric, and the scaling
policy looks at its host: the VMs of a host are decided together once per window, with each
VM's latest view, so a host that is forecast to saturate yields one `migrate`.

The forecasters of all VMs are rows of one `ForecasterBank`: the windows a batch of records
closes are learnt and forecast together, in rounds in which no VM repeats.

`dump_vm` / `load_vm` carry a VM's forecasters, usage history and the scaling policy's memory
of it (cooldowns, a pending scale-down) to the worker that takes its partition over, which
then ignores the windows the state already reflects when their records are redelivered.
"""

from __future__ import annotations

import math
import sys
from array import array
from collections.abc import Iterator, MutableMapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from models import array_state
from models.forecaster_bank import ForecasterBank
from models.forecasting import level_key
from models.metric_bank import grown_rows, occurrence_groups
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


class UsageHistory:
    """The last `size` window usages of each resource of many VMs: one row per VM, of two
    arrays shared by every VM.

    A VM's usage history is kept for as long as the VM is watched, so it is a row of shared
    arrays: about 200 bytes less per VM than an object and two arrays of its own, and a tenth
    of the memory of Python floats in deques. Rows are handed out by `add` and taken back by
    `remove`."""

    def __init__(self, resources: Sequence[str], size: int, capacity: int = 64) -> None:
        self.resources = tuple(resources)
        self.size = max(1, size)
        r = len(self.resources)
        # float32: usages in allocation units need no more than its 7 digits
        self._values = np.zeros((capacity, r, self.size), dtype=np.float32)
        self._counts = np.zeros((capacity, r), dtype=np.int64)  # usages ever appended
        self._free: list[int] = []
        self._used = 0  # rows handed out so far (free ones included)

    def add(self) -> int:
        """An empty row for a VM."""
        if self._free:
            row = self._free.pop()
        else:
            if self._used == len(self._counts):  # double; rows not handed out stay untouched
                self._values = grown_rows(self._values, 2 * self._used)
                self._counts = grown_rows(self._counts, 2 * self._used)
            row = self._used
            self._used += 1
        self._counts[row] = 0
        return row

    def remove(self, row: int) -> None:
        self._free.append(row)

    def append(self, row: int, index: int, usage: float) -> None:
        count = int(self._counts[row, index])
        self._values[row, index, count % self.size] = usage
        self._counts[row, index] = count + 1

    def filled(self, row: int, index: int) -> int:
        return min(int(self._counts[row, index]), self.size)

    def latest(self, row: int, index: int) -> float:
        return float(self._values[row, index, (int(self._counts[row, index]) - 1) % self.size])

    def ordered(self, row: int, index: int) -> np.ndarray:
        """The resource's kept usages, oldest first (a copy)."""
        count = int(self._counts[row, index])
        values = self._values[row, index]
        if count <= self.size:
            return values[:count].copy()
        start = count % self.size
        return np.concatenate((values[start:], values[:start]))

    def as_dict(self, row: int) -> dict[str, list[float]]:
        return {r: self.ordered(row, i).tolist() for i, r in enumerate(self.resources)}


class UsageSeries(Sequence[float]):
    """One resource's kept usages, oldest first, read from its VM's row of the `UsageHistory`
    when asked.

    A VM's view holds this instead of a copy: the copy was 1.4 KB per watched VM, and it is
    read only when an action is written (for its workload pattern). It shows the usages as
    they are when read, which may include windows learnt after the view was made."""

    __slots__ = ("_history", "_index", "_row")

    def __init__(self, history: UsageHistory, row: int, index: int) -> None:
        self._history, self._row, self._index = history, row, index

    def __len__(self) -> int:
        return self._history.filled(self._row, self._index)

    def __getitem__(self, item):  # type: ignore[no-untyped-def]
        return self._history.ordered(self._row, self._index)[item]

    def __array__(self, dtype: object = None, copy: object = None) -> np.ndarray:
        values = self._history.ordered(self._row, self._index)
        return values if dtype is None else values.astype(dtype)


class _RowMaps:
    """One small mapping per planner row over a fixed tuple of keys (shared by every VM), all
    in one flat machine array: row r's values are `[r * len(keys), (r + 1) * len(keys))`.

    A watched VM's forecaster rows and allocation are two of these: no object, array or
    number object of its own (about 300 bytes per VM as two small maps of their own)."""

    def __init__(self, keys: tuple[str, ...], typecode: str, missing: float) -> None:
        self.keys = keys
        self.missing = missing  # the value of a key a row does not hold (NaN or -1)
        self._empty = array(typecode, [missing]) * len(keys)
        self.values = array(typecode)

    def reset(self, row: int) -> None:
        """Empty `row` (growing to it, doubling)."""
        start, width = row * len(self.keys), len(self.keys)
        if start >= len(self.values):
            rows = len(self.values) // width
            self.values.extend(self._empty * max(row + 1 - rows, rows))
        self.values[start : start + width] = self._empty

    def of(self, row: int) -> _RowMap:
        return _RowMap(self, row * len(self.keys))


class _RowMap(MutableMapping[str, Any]):
    """The mapping in one row of a `_RowMaps`, read and written in place."""

    __slots__ = ("_maps", "_start")

    def __init__(self, maps: _RowMaps, start: int) -> None:
        self._maps, self._start = maps, start

    def _absent(self, value: Any) -> bool:
        return value != value or value == self._maps.missing  # NaN or the marker

    def __getitem__(self, key: str) -> Any:
        value = self.get(key, None)
        if value is None:
            raise KeyError(key)
        return value

    def get(self, key: str, default: Any = None) -> Any:
        try:
            value = self._maps.values[self._start + self._maps.keys.index(key)]
        except ValueError:
            return default
        return default if self._absent(value) else value

    def __setitem__(self, key: str, value: Any) -> None:
        try:
            self._maps.values[self._start + self._maps.keys.index(key)] = value
        except ValueError:
            raise KeyError(f"{key!r} is not one of {self._maps.keys}") from None

    def __delitem__(self, key: str) -> None:
        self[key] = self._maps.missing

    def __iter__(self) -> Iterator[str]:
        keys, values, start = self._maps.keys, self._maps.values, self._start
        return (k for i, k in enumerate(keys) if not self._absent(values[start + i]))

    def __len__(self) -> int:
        return sum(1 for _ in self)


class _KeptViews:
    """Every VM's latest view for the scaling policy, kept until its next window as a row of
    arrays: its resources' allocation, usage, forecast and upper bound in allocation units,
    and its period. A `VMView` is made of a row only when a decision reads it (a host's
    decision reads its VMs' views). About 650 bytes per VM, against 1.5 KB as objects."""

    def __init__(self, resources: tuple[str, ...], horizon: int) -> None:
        self.resources = resources
        self._free: list[int] = []
        self._size = 0
        r, h = len(resources), horizon
        self._shapes = {
            "forecast": ((r, h), np.float64),
            "upper": ((r, h), np.float64),
            "points": ((r,), np.int16),  # points kept per resource; -1: not in the view
            "allocation": ((r,), np.float64),
            "usage": ((r,), np.float64),
            "period": ((), np.int32),  # 0: none
        }
        for name, (shape, dtype) in self._shapes.items():
            setattr(self, name, np.zeros((64, *shape), dtype=dtype))

    def put(self, row: int, period: int | None, resources: dict[str, tuple]) -> int:
        """Keep a view in `row` (-1: a new row); each resource is (allocation, usage,
        forecast, upper); returns the row."""
        if row < 0:
            row = self._free.pop() if self._free else self._new_row()
        self.points[row] = -1
        for i, resource in enumerate(self.resources):
            if resource not in resources:
                continue
            allocation, usage, point, high = resources[resource]
            self.allocation[row, i], self.usage[row, i] = allocation, usage
            self.points[row, i] = len(point)
            self.forecast[row, i, : len(point)] = point
            self.upper[row, i, : len(high)] = high
        self.period[row] = period or 0
        return row

    def _new_row(self) -> int:
        if self._size == self.period.shape[0]:
            for name in self._shapes:  # `put` writes every field of a row it reads back
                setattr(self, name, grown_rows(getattr(self, name), 2 * self._size))
        self._size += 1
        return self._size - 1

    def release(self, row: int) -> None:
        self._free.append(row)

    def view(
        self, row: int, vm_id: str, host: str | None, history: UsageHistory, usage_row: int
    ) -> VMView:
        """The VM's view kept in `row`; its usage history is row `usage_row` of `history`."""
        period = int(self.period[row]) or None
        resources = {}
        for i, resource in enumerate(self.resources):
            n = int(self.points[row, i])
            if n < 0:
                continue
            resources[resource] = ResourceView(
                allocation=float(self.allocation[row, i]),
                usage=float(self.usage[row, i]),
                forecast=self.forecast[row, i, :n].tolist(),
                upper=self.upper[row, i, :n].tolist(),
                history=UsageSeries(history, usage_row, i),
                period=period,
            )
        return VMView(vm_id, host or "", resources)


@dataclass(slots=True)
class _VMPlan:
    # its row in the planner's per-VM arrays: usage history, allocation (resource -> vCPUs,
    # MiB, Mbit/s) and forecaster rows (metric -> its forecaster's row in the bank)
    row: int
    host: str | None = None
    windows: int = 0
    last_end: float = -math.inf  # end of the latest window learnt
    view: int = -1  # its row in the kept views (-1: none yet)


@dataclass
class _Learnt:
    """What learning one window left for the decisions taken in window order."""

    means: dict[str, float]
    forecasts: list[dict] = field(default_factory=list)
    act: bool = False
    period: int | None = None  # the cpu forecaster's seasonal period


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
    _host_members: dict[str, set[str]] = field(default_factory=dict)
    _host_decided: dict[str, float] = field(default_factory=dict)
    _forecasters: ForecasterBank | None = None
    _window_s: float | None = None  # the forecast windows' size, once one was seen

    def __post_init__(self) -> None:
        self.policy = ScalingPolicy(self.config.scaling)
        self._resources = tuple(self.config.default_allocation)  # one tuple for every VM
        self._views = _KeptViews(self._resources, self.config.horizon)
        self._usage = UsageHistory(self._resources, self.config.history)
        self._allocations = _RowMaps(self._resources, "d", math.nan)
        self._forecaster_rows = _RowMaps(FORECAST_METRICS, "i", -1)
        self._level = level_key(self.config.scaling.level)

    def _plan(self, vm_id: str) -> _VMPlan:
        plan = self._vms.get(vm_id)
        if plan is None:
            plan = self._vms[vm_id] = _VMPlan(self._new_row())
            self._allocations.of(plan.row).update(self.config.default_allocation)
        return plan

    def _new_row(self) -> int:
        """An empty row of the per-VM arrays."""
        row = self._usage.add()
        self._allocations.reset(row)
        self._forecaster_rows.reset(row)
        return row

    def _release(self, plan: _VMPlan) -> None:
        """Take back the plan's row and its forecasters' rows."""
        if self._forecasters is not None:
            for row in self._forecaster_rows.of(plan.row).values():
                self._forecasters.remove(row)
        self._usage.remove(plan.row)

    def _bank(self, window_s: float) -> ForecasterBank:
        """The forecasters' bank, made for the size of the first window (a worker's forecast
        windows all have one size; it is the sampling interval assumed until one is seen)."""
        if self._forecasters is None:
            self._window_s = window_s
            self._forecasters = ForecasterBank(
                horizon=self.config.horizon,
                levels=self.config.levels,
                default_step_seconds=window_s,
            )
        return self._forecasters

    def set_allocation(self, vm_id: str, allocation: dict[str, float]) -> None:
        """The VM's current allocation as its samples report it (vcpus, mem_mib, net_mbps)."""
        allocations = self._allocations.of(self._plan(vm_id).row)
        for name, resource in ALLOCATION_FIELDS.items():
            if name in allocation:
                allocations[resource] = allocation[name]

    def on_window(self, window: ClosedWindow) -> tuple[list[dict], list[dict]]:
        """Learn a closed window; returns (forecast messages, scaling actions) now due."""
        learnt = self.on_windows([(window.vm_id, None, [window])])
        if not learnt:  # a window its state already reflects
            return [], []
        _, forecasts, actions = learnt[0]
        return forecasts, actions

    def on_windows(
        self, samples: Sequence[tuple[str, dict[str, float] | None, Sequence[ClosedWindow]]]
    ) -> list[tuple[ClosedWindow, list[dict], list[dict]]]:
        """Learn the windows closed by consecutive samples, each given as (vm_id, allocation it
        reported or None, windows it closed); returns (window, forecasts, actions) per window,
        in order. The same as `set_allocation` and `on_window` sample by sample. Windows that
        end no later than the VM's latest learnt one (redelivered after a takeover) are
        skipped: the state restored already reflects them."""
        samples = [(vm_id, alloc, self._unseen(vm_id, closed)) for vm_id, alloc, closed in samples]
        windows = [w for _, _, closed in samples for w in closed]
        learnt = self._learn(windows)
        out = []
        i = 0
        # A VM's allocation is read only when one of its windows is acted on: what its samples
        # reported is gathered per VM and set before that, and at the end.
        reported: dict[str, dict[str, float]] = {}
        for vm_id, allocation, closed in samples:
            if allocation:
                gathered = reported.get(vm_id)
                if gathered is None:
                    reported[vm_id] = dict(allocation)
                else:
                    gathered.update(allocation)
            if not closed:
                continue
            if vm_id in reported:
                self.set_allocation(vm_id, reported.pop(vm_id))
            for window in closed:
                out.append((window, learnt[i].forecasts, self._act(window, learnt[i])))
                i += 1
        for vm_id, allocation in reported.items():
            self.set_allocation(vm_id, allocation)
        return out

    def _unseen(self, vm_id: str, closed: Sequence[ClosedWindow]) -> Sequence[ClosedWindow]:
        plan = self._vms.get(vm_id)
        if not closed or plan is None or closed[0].end > plan.last_end:
            return closed
        return [w for w in closed if w.end > plan.last_end]

    def _learn(self, windows: list[ClosedWindow]) -> list[_Learnt]:
        """Feed every window's means to its VM's forecasters, and forecast those now due."""
        learnt = [
            _Learnt({name: s.mean for name, s in w.metrics.items() if s.count}) for w in windows
        ]
        c = self.config
        for group in occurrence_groups(w.vm_id for w in windows):
            bank = self._bank(windows[group[0]].size_s)
            rows, ys, ts = [], [], []
            for i in group:
                forecaster_rows = self._forecaster_rows.of(self._plan(windows[i].vm_id).row)
                for metric in FORECAST_METRICS:
                    if metric in learnt[i].means:
                        row = forecaster_rows.get(metric)
                        if row is None:
                            row = forecaster_rows[metric] = bank.add()
                        rows.append(row)
                        ys.append(learnt[i].means[metric])
                        ts.append(windows[i].end)
            bank.learn(rows, ys, ts)
            due: list[tuple[int, str, int]] = []
            for i in group:
                plan = self._vms[windows[i].vm_id]
                plan.windows += 1
                forecaster_rows = self._forecaster_rows.of(plan.row)
                counts = {m: int(bank.n[row]) for m, row in forecaster_rows.items()}
                ready = sorted(m for m, n in counts.items() if n >= c.min_windows)
                if not ready or plan.windows % c.forecast_every:
                    continue
                due.extend((i, m, forecaster_rows[m]) for m in ready)
                learnt[i].act = min(counts[m] for m in ready) >= c.act_after_windows
                cpu = forecaster_rows.get("cpu_pct")
                learnt[i].period = None if cpu is None else bank.period(cpu)
            if due:
                messages = bank.messages(
                    [row for _, _, row in due],
                    [windows[i].vm_id for i, _, _ in due],
                    [m for _, m, _ in due],
                    [windows[i].end for i, _, _ in due],
                )
                for (i, _, _), message in zip(due, messages, strict=True):
                    learnt[i].forecasts.append(message)
        return learnt

    def current_forecasts(self, vm_id: str) -> list[dict]:
        """The VM's forecast messages as its forecasters stand now, one per metric forecast so
        far: its latest published ones (newer ones when `forecast_every` > 1). Reading them
        changes nothing the forecasters learn."""
        plan = self._vms.get(vm_id)
        bank = self._forecasters
        if plan is None or bank is None:
            return []
        ready = sorted(
            (m, row)
            for m, row in self._forecaster_rows.of(plan.row).items()
            if bank.n[row] >= self.config.min_windows
        )
        if not ready:
            return []
        rows = [row for _, row in ready]
        return bank.messages(rows, [vm_id] * len(rows), [m for m, _ in ready], [None] * len(rows))

    def host_of(self, vm_id: str) -> str | None:
        plan = self._vms.get(vm_id)
        return None if plan is None else plan.host

    def _act(self, window: ClosedWindow, learnt: _Learnt) -> list[dict]:
        """Usage history, host membership and, when due, the scaling decisions of a window."""
        plan = self._plan(window.vm_id)
        plan.last_end = window.end
        if window.host is not None and window.host != plan.host:
            if plan.host is not None:
                self._host_members.get(plan.host, set()).discard(window.vm_id)
            # one string per host, not one per VM (each record decodes its own)
            plan.host = sys.intern(window.host)
            self._host_members.setdefault(plan.host, set()).add(window.vm_id)
        allocations = self._allocations.of(plan.row)
        for index, resource in enumerate(self._resources):
            usage = _usage(resource, learnt.means, allocations)
            if usage is not None:
                self._usage.append(plan.row, index, usage)
        if not learnt.act:
            return []
        plan.view = self._views.put(plan.view, learnt.period, self._view_resources(plan, learnt))
        return self._decide(window.vm_id, plan.host, window.end)

    def _view_resources(self, plan: _VMPlan, learnt: _Learnt) -> dict[str, tuple]:
        """resource -> (allocation, usage, forecast, upper) of the VM's view of this window."""
        by_metric = {f["metric"]: f["points"] for f in learnt.forecasts}
        upper = f"upper_{self._level}"
        resources = {}
        history, row = self._usage, plan.row
        allocations = self._allocations.of(row)
        for index, resource in enumerate(self._resources):
            if not history.filled(row, index):
                continue
            allocation = allocations[resource]
            if resource == "bandwidth":
                series = [by_metric[m] for m in ("net_in_bps", "net_out_bps") if m in by_metric]
                # per step, the larger direction, in Mbit/s
                yhats = zip(*[[p["yhat"] for p in points] for points in series], strict=True)
                highs = zip(*[[p[upper] for p in points] for points in series], strict=True)
                point = [max(step) * 8 / 1e6 for step in yhats]
                high = [max(step) * 8 / 1e6 for step in highs]
            else:
                metric, scale = (
                    ("cpu_pct", allocation / 100.0)
                    if resource == "vcpu"
                    else ("mem_pct", allocation / 100.0)
                )
                points = by_metric.get(metric, [])
                point = [max(0.0, p["yhat"]) * scale for p in points]
                high = [max(0.0, p[upper]) * scale for p in points]
            resources[resource] = (allocation, history.latest(row, index), point, high)
        return resources

    def _kept_view(self, vm_id: str) -> VMView | None:
        plan = self._vms.get(vm_id)
        if plan is None or plan.view < 0:
            return None
        return self._views.view(plan.view, vm_id, plan.host, self._usage, plan.row)

    def _decide(self, vm_id: str, host: str | None, now: float) -> list[dict]:
        if host is None:
            view = self._kept_view(vm_id)
            return [] if view is None else self.policy.decide(now, [view])
        if self._host_decided.get(host, -1.0) >= now:
            return []
        self._host_decided[host] = now
        views = (self._kept_view(v) for v in sorted(self._host_members.get(host, ())))
        members = [view for view in views if view is not None]
        return self.policy.decide(now, members, {host: HostView(host, self.config.host_capacity)})

    def knows(self, vm_id: str) -> bool:
        return vm_id in self._vms

    def dump_vm(self, vm_id: str) -> bytes | None:
        """The VM's forecasting and scaling state as bytes (None for an unknown VM)."""
        plan = self._vms.get(vm_id)
        if plan is None:
            return None
        bank = self._forecasters
        rows = self._forecaster_rows.of(plan.row) if bank is not None else {}
        scalars = {
            "planner_state": 1,
            "window_s": self._window_s,
            "allocation": dict(self._allocations.of(plan.row)),
            "usage": self._usage.as_dict(plan.row),
            "host": plan.host,
            "windows": plan.windows,
            "last_end": None if plan.last_end == -math.inf else plan.last_end,
            "policy": self.policy.vm_state(vm_id, plan.host),
        }
        forecasters = {
            metric: np.frombuffer(bank.dump_row(row), dtype=np.uint8)
            for metric, row in rows.items()
        }
        return array_state.pack(scalars, forecasters)

    def load_vm(self, vm_id: str, data: bytes) -> None:
        """Take a VM's state from `dump_vm` back (the VM must be unknown here). ValueError,
        with nothing changed, when the state does not fit this planner's configuration."""
        if vm_id in self._vms:
            raise ValueError(f"{vm_id} already has state here")
        plan = _VMPlan(self._new_row())
        allocations = self._allocations.of(plan.row)
        forecaster_rows = self._forecaster_rows.of(plan.row)
        try:
            state, forecasters = array_state.unpack(data)
            if state.get("planner_state") != 1:
                raise ValueError(f"unknown planner state version {state.get('planner_state')!r}")
            for index, (resource, default) in enumerate(self.config.default_allocation.items()):
                allocations[resource] = float(state["allocation"].get(resource, default))
                for usage in state["usage"].get(resource, ())[-self.config.history :]:
                    self._usage.append(plan.row, index, float(usage))
            plan.host = None if state["host"] is None else sys.intern(state["host"])
            plan.windows = int(state["windows"])
            last_end = state["last_end"]
            plan.last_end = -math.inf if last_end is None else float(last_end)
            self.policy.restore_vm_state(vm_id, plan.host, state["policy"])
            if forecasters:
                bank = self._bank(float(state["window_s"]))
                for metric, blob in forecasters.items():
                    forecaster_rows[metric] = bank.load_row(blob.tobytes())
        except (KeyError, TypeError, AttributeError, ValueError) as exc:
            self.policy.forget(vm_id)
            self._release(plan)
            raise ValueError(f"unusable forecast state for {vm_id}: {exc}") from exc
        self._vms[vm_id] = plan
        if plan.host is not None:
            self._host_members.setdefault(plan.host, set()).add(vm_id)

    def forget(self, vm_id: str) -> None:
        plan = self._vms.pop(vm_id, None)
        if plan is not None and plan.view >= 0:
            self._views.release(plan.view)
        if plan is not None and plan.host is not None:
            self._host_members.get(plan.host, set()).discard(vm_id)
        if plan is not None:
            self._release(plan)
        self.policy.forget(vm_id)
