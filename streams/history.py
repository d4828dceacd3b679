"""Bounded recent history per VM (samples, scores, alerts, forecasts, actions) for web views.

Memory is bounded whatever the fleet size:

- `latest` keeps three floats (ts, score, threshold) for at most `max_vms` VMs;
- `series` keeps the last `samples_per_vm` rows of at most `series_vms` VMs, each row packed as
  doubles in a preallocated ring (8 bytes per value, NaN for a missing metric). When the budget
  is full a VM that raises an alert takes the series slot of the oldest VM without an open
  incident, so the VMs an operator wants to look at always have a chart;
- alerts, incidents and actions are capped lists or one entry per VM; of a VM's latest forecast
  per metric only its accuracy figures are kept (for the fleet means): the forecast itself is
  asked of `forecast_source` (the capacity planner) when a view wants it.
"""

from __future__ import annotations

import heapq
import math
from array import array
from collections import Counter, OrderedDict, deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

from models.engine import FEATURES, Assessment

METRICS: tuple[str, ...] = FEATURES
SERIES_FIELDS: tuple[str, ...] = ("ts", "score", "threshold", *METRICS)
_WIDTH = len(SERIES_FIELDS)
_NAN = float("nan")
_NANS = (_NAN,) * len(METRICS)  # `get` defaults, one per metric


class SeriesRing:
    """Fixed-capacity ring of rows of `SERIES_FIELDS` doubles."""

    __slots__ = ("capacity", "data", "start", "size")

    def __init__(self, capacity: int) -> None:
        self.capacity = capacity
        self.data = array("d", bytes(8 * _WIDTH * capacity))
        self.start = 0
        self.size = 0

    def append(self, row: list[float]) -> None:
        slot = (self.start + self.size) % self.capacity
        if self.size == self.capacity:
            self.start = (self.start + 1) % self.capacity
        else:
            self.size += 1
        base = slot * _WIDTH
        self.data[base : base + _WIDTH] = array("d", row)

    def columns(self) -> dict[str, list[float | None]]:
        """Oldest first, one list per field; missing metrics are None."""
        cols: dict[str, list[float | None]] = {name: [] for name in SERIES_FIELDS}
        lists = [cols[name] for name in SERIES_FIELDS]
        for i in range(self.size):
            base = ((self.start + i) % self.capacity) * _WIDTH
            for j in range(_WIDTH):
                v = self.data[base + j]
                lists[j].append(None if math.isnan(v) else v)
        return cols

    @property
    def nbytes(self) -> int:
        return self.data.itemsize * len(self.data)


def normalise_forecast(value: dict) -> dict:
    """A forecast message with every point's bounds as `lower`/`upper` dicts keyed by level.

    Accepts both nested bounds (`{"lower": {"80": ...}}`) and flat keys (`"lower_80": ...`).
    """
    points = []
    levels: set[str] = set()
    for p in value.get("points") or []:
        if not isinstance(p, dict) or not isinstance(p.get("ts"), int | float):
            continue
        lower = dict(p["lower"]) if isinstance(p.get("lower"), dict) else {}
        upper = dict(p["upper"]) if isinstance(p.get("upper"), dict) else {}
        for key, bound in p.items():
            if key.startswith("lower_"):
                lower[key[6:]] = bound
            elif key.startswith("upper_"):
                upper[key[6:]] = bound
        levels.update(lower)
        points.append({"ts": p["ts"], "yhat": p.get("yhat"), "lower": lower, "upper": upper})
    return {
        "vm_id": value.get("vm_id"),
        "metric": value.get("metric"),
        "issued_at": value.get("issued_at"),
        "model": value.get("model"),
        "levels": sorted(levels, key=_level_order),
        "points": points,
        "accuracy": value.get("accuracy") or {},
    }


def _level_order(level: str) -> float:
    try:
        return float(level)
    except ValueError:
        return math.inf


FigureKey = tuple[str, str]  # (kind, name): ("measure", "mae"), ("coverage", "80")
# A forecast's figures: their keys (one shared tuple per set of names) and their values.
Figures = tuple[tuple[FigureKey, ...], Sequence[float]]
_KEY_SETS: dict[tuple[FigureKey, ...], tuple[FigureKey, ...]] = {}
_MEASURES: dict[str, FigureKey] = {}  # ("measure", name) by name
# Where a VM's figures are: metric -> (offset in its values, keys); one shared dict per set of
# metrics and names.
Layout = dict[str, tuple[int, tuple[FigureKey, ...]]]
_LAYOUTS: dict[tuple[tuple[str, tuple[FigureKey, ...]], ...], Layout] = {}
# A VM's figures, kept for every VM with forecasts: its layout and the values of all its
# metrics in one array of doubles (about 300 bytes for four metrics; a dict per VM of a tuple
# of floats per metric took 850).
VMFigures = tuple[Layout, array]


def _vm_figures(figures: dict[str, Figures]) -> VMFigures:
    """A VM's figures from each metric's."""
    metrics = sorted(figures)
    signature = tuple((m, figures[m][0]) for m in metrics)
    layout = _LAYOUTS.get(signature)
    if layout is None:
        layout, at = {}, 0
        for metric, keys in signature:
            layout[metric] = (at, keys)
            at += len(keys)
        _LAYOUTS[signature] = layout
    values = array("d")
    for metric in metrics:
        values.extend(figures[metric][1])
    return layout, values


def _metric_figures(vm: VMFigures) -> dict[str, Figures]:
    """Each metric's figures of a VM's."""
    layout, values = vm
    return {m: (keys, values[at : at + len(keys)]) for m, (at, keys) in layout.items()}


def _accuracy_figures(accuracy: object) -> Figures:
    """The numeric figures of a forecast's `accuracy` object."""
    keys: list[FigureKey] = []
    values: list[float] = []
    if isinstance(accuracy, dict):
        for name, v in accuracy.items():
            if type(v) is float:  # the common case; NaN and infinities are skipped
                if v - v == 0.0 and name != "n":
                    keys.append(
                        _MEASURES.get(name) or _MEASURES.setdefault(name, ("measure", name))
                    )
                    values.append(v)
            elif name == "coverage" and isinstance(v, dict):
                for level, c in v.items():
                    if isinstance(c, int | float) and math.isfinite(c):
                        keys.append(("coverage", str(level)))
                        values.append(float(c))
            elif name != "n" and isinstance(v, int | float) and math.isfinite(v):
                keys.append(("measure", name))
                values.append(float(v))
    names = tuple(keys)
    return _KEY_SETS.get(names) or _KEY_SETS.setdefault(names, names), array("d", values)


@dataclass
class RecentHistory:
    """What this worker saw recently; every buffer is bounded (see module docstring)."""

    samples_per_vm: int = 240
    series_vms: int = 2_000
    max_vms: int = 200_000
    recent_alerts: int = 500
    alerts_per_vm: int = 20
    actions_per_vm: int = 10
    known_incidents: int = 10_000
    latest: dict[str, list[float]] = field(default_factory=dict)
    series: OrderedDict[str, SeriesRing] = field(default_factory=OrderedDict)
    alerts: deque = field(default_factory=deque)
    vm_alerts: dict[str, deque] = field(default_factory=dict)
    open_incidents: dict[str, dict] = field(default_factory=dict)
    incidents: OrderedDict[str, dict] = field(default_factory=OrderedDict)
    # vm -> metric -> accuracy figures of its latest forecast, counted in the fleet means
    forecast_figures: dict[str, VMFigures] = field(default_factory=dict)
    # vm -> metric -> its forecast as it stands now; set by the processor (the planner has them)
    forecast_source: Callable[[str], dict[str, dict]] | None = None
    last_actions: dict[str, deque] = field(default_factory=dict)
    alert_counts: Counter = field(default_factory=Counter)
    forecast_counts: Counter = field(default_factory=Counter)
    action_counts: Counter = field(default_factory=Counter)
    # metric -> (kind, name) -> [sum, count] over the VMs' latest forecasts
    accuracy_sums: dict[str, dict[tuple[str, str], list[float]]] = field(default_factory=dict)
    untracked_vms: int = 0

    # ------------------------------------------------------------------ feeding

    def observe(self, assessments: list[Assessment]) -> None:
        """Keep the latest score of each VM and the recent rows of VMs with a series."""
        for a in assessments:
            latest = self.latest.get(a.vm_id)
            if latest is None:
                if len(self.latest) >= self.max_vms:
                    self.untracked_vms += 1
                    continue
                latest = self.latest[a.vm_id] = [0.0, 0.0, 0.0]
            latest[0], latest[1], latest[2] = a.ts, a.score, a.threshold
            ring = self.series.get(a.vm_id)
            if ring is None:
                if len(self.series) >= self.series_vms:
                    continue
                ring = self.series[a.vm_id] = SeriesRing(self.samples_per_vm)
            ring.append([a.ts, a.score, a.threshold, *map(a.values.get, METRICS, _NANS)])

    def published(self, topic_id: str, key: str | None, value: dict) -> None:
        """Remember an output message this worker published."""
        if topic_id == "anomalies":
            self._alert(value)
        elif topic_id == "forecasts":
            self._forecast(value, key)
        elif topic_id == "actions":
            vm_id = value.get("vm_id") or key
            if vm_id is None or (
                vm_id not in self.last_actions and len(self.last_actions) >= self.max_vms
            ):
                return
            self.last_actions.setdefault(vm_id, deque(maxlen=self.actions_per_vm)).append(value)
            self.action_counts[(value.get("action"), value.get("resource"))] += 1

    def _alert(self, value: dict) -> None:
        vm_id, status = value.get("vm_id"), value.get("status")
        self.alerts.append(value)
        while len(self.alerts) > self.recent_alerts:
            self.alerts.popleft()
        self.alert_counts[(status, value.get("severity"), value.get("kind"))] += 1
        incident_id = value.get("incident_id")
        if isinstance(incident_id, str):
            self.incidents[incident_id] = value
            self.incidents.move_to_end(incident_id)
            while len(self.incidents) > self.known_incidents:
                self.incidents.popitem(last=False)
        if not isinstance(vm_id, str):
            return
        if vm_id in self.vm_alerts or len(self.vm_alerts) < self.max_vms:
            self.vm_alerts.setdefault(vm_id, deque(maxlen=self.alerts_per_vm)).append(value)
        if status == "resolved":
            self.open_incidents.pop(vm_id, None)
        else:
            self.open_incidents[vm_id] = value
            self._ensure_series(vm_id)

    def _ensure_series(self, vm_id: str) -> None:
        """Give an alerting VM a series slot, evicting the oldest VM without an open incident."""
        if vm_id in self.series:
            return
        if len(self.series) >= self.series_vms:
            victim = next((v for v in self.series if v not in self.open_incidents), None)
            if victim is None:
                return
            del self.series[victim]
        self.series[vm_id] = SeriesRing(self.samples_per_vm)

    def _forecast(self, value: dict, key: str | None) -> None:
        vm_id, metric = value.get("vm_id") or key, value.get("metric")
        if not isinstance(vm_id, str) or not isinstance(metric, str):
            return
        figures = _accuracy_figures(value.get("accuracy"))
        stored = self.forecast_figures.get(vm_id)
        if stored is None:
            if len(self.forecast_figures) >= self.max_vms:
                return
            self.forecast_figures[vm_id] = _vm_figures({metric: figures})
        else:
            layout, values = stored
            place = layout.get(metric)
            keys = figures[0]
            if place is not None and place[1] is keys:  # the usual case: the same names
                at = place[0]
                self._account(metric, (keys, values[at : at + len(keys)]), -1)
                values[at : at + len(keys)] = figures[1]
            else:
                per_metric = _metric_figures(stored)
                if place is not None:
                    self._account(metric, per_metric[metric], -1)
                per_metric[metric] = figures
                self.forecast_figures[vm_id] = _vm_figures(per_metric)
        self._account(metric, figures, +1)
        self.forecast_counts[metric] += 1

    def _account(self, metric: str, figures: Figures, sign: int) -> None:
        sums = self.accuracy_sums.get(metric)
        if sums is None:
            sums = self.accuracy_sums[metric] = {}
        keys, values = figures
        for key, v in zip(keys, values, strict=True):
            acc = sums.get(key)
            if acc is None:
                acc = sums[key] = [0.0, 0]
            acc[0] += sign * v
            acc[1] += sign

    def forget(self, vm_ids: list[str]) -> None:
        """Drop what is kept about VMs this worker no longer owns (their partition moved)."""
        for vm_id in vm_ids:
            for per_vm in (
                self.latest,
                self.series,
                self.vm_alerts,
                self.open_incidents,
                self.forecast_figures,
                self.last_actions,
            ):
                per_vm.pop(vm_id, None)
        if vm_ids:
            self._recount_accuracy()

    def prune(self, keep: Callable[[str], bool]) -> int:
        """Forget every VM for which `keep(vm_id)` is false; returns how many."""
        gone = [v for v in set(self.latest) | set(self.vm_alerts) if not keep(v)]
        self.forget(gone)
        return len(gone)

    def _recount_accuracy(self) -> None:
        self.accuracy_sums = {}
        for stored in self.forecast_figures.values():
            for metric, figures in _metric_figures(stored).items():
                self._account(metric, figures, +1)

    # ------------------------------------------------------------------ reading

    def knows(self, vm_id: str) -> bool:
        return vm_id in self.latest or vm_id in self.vm_alerts

    def vm_row(self, vm_id: str) -> dict:
        """One line of the fleet table."""
        latest = self.latest.get(vm_id)
        inc = self.open_incidents.get(vm_id)
        return {
            "vm_id": vm_id,
            "last_ts": latest[0] if latest else None,
            "score": latest[1] if latest else None,
            "threshold": latest[2] if latest else None,
            "open_incident": None
            if inc is None
            else {k: inc.get(k) for k in ("incident_id", "severity", "kind", "opened_at", "score")},
            "forecast_metrics": sorted(self.forecast_figures.get(vm_id, ({},))[0]),
        }

    def vm_rows(
        self,
        sort: str = "score",
        descending: bool = True,
        offset: int = 0,
        limit: int = 50,
        only_open: bool = False,
    ) -> tuple[int, list[dict]]:
        """(total, page) of VMs ordered by `sort` ("score", "vm_id" or "last_ts")."""
        ids = list(self.open_incidents) if only_open else list(self.latest)
        if sort == "vm_id":
            ids.sort(reverse=descending)
        else:
            col = 1 if sort == "score" else 0
            latest = self.latest

            def sort_key(vm_id: str) -> tuple[float, str]:
                row = latest.get(vm_id)
                return (row[col] if row else -math.inf, vm_id)

            want = offset + limit
            if want < len(ids) // 4:  # a page near the top: a partial selection, not a sort
                pick = heapq.nlargest if descending else heapq.nsmallest
                page = pick(want, ids, key=sort_key)[offset:]
                return len(ids), [self.vm_row(v) for v in page]
            ids.sort(key=sort_key, reverse=descending)
        return len(ids), [self.vm_row(v) for v in ids[offset : offset + limit]]

    def vm_series(self, vm_id: str) -> dict[str, list[float | None]] | None:
        ring = self.series.get(vm_id)
        return None if ring is None else ring.columns()

    def forecasts_of(self, vm_id: str) -> dict[str, dict]:
        """metric -> the VM's forecast (bounds keyed by level), as its forecasters stand now."""
        source = self.forecast_source
        if source is None or vm_id not in self.forecast_figures:
            return {}
        return {m: normalise_forecast(message) for m, message in source(vm_id).items()}

    def actions_of(self, vm_id: str) -> list[dict]:
        return list(self.last_actions.get(vm_id, ()))

    def alerts_of(self, vm_id: str) -> list[dict]:
        return list(self.vm_alerts.get(vm_id, ()))

    def recent_alerts_matching(
        self,
        severity: str | None = None,
        kind: str | None = None,
        vm_id: str | None = None,
        status: str | None = None,
        limit: int = 100,
    ) -> list[dict]:
        """Newest first."""
        out = []
        source = self.vm_alerts.get(vm_id, ()) if vm_id is not None else self.alerts
        for a in reversed(source):
            if severity is not None and a.get("severity") != severity:
                continue
            if kind is not None and a.get("kind") != kind:
                continue
            if status is not None and a.get("status") != status:
                continue
            out.append(a)
            if len(out) >= limit:
                break
        return out

    def forecast_accuracy(self) -> dict[str, dict[str, dict[str, float]]]:
        """metric -> {"measure": {name: fleet mean}, "coverage": {level: fleet mean}}."""
        out: dict[str, dict[str, dict[str, float]]] = {}
        for metric, sums in sorted(self.accuracy_sums.items()):
            for (kind, name), (total, count) in sorted(sums.items()):
                if count > 0:
                    out.setdefault(metric, {}).setdefault(kind, {})[name] = total / count
        return out

    def top_forecast_vms(self, n: int) -> list[str]:
        """Up to `n` VMs that have a forecast, highest current score first."""
        latest = self.latest

        def score(vm_id: str) -> float:
            row = latest.get(vm_id)
            return row[1] if row else -math.inf

        ids = sorted(self.forecast_figures, key=lambda v: (-score(v), v))
        return ids[:n]

    def sizes(self) -> dict[str, int]:
        return {
            "vms": len(self.latest),
            "vms_with_series": len(self.series),
            "series_bytes": sum(r.nbytes for r in self.series.values()),
            "recent_alerts": len(self.alerts),
            "open_incidents": len(self.open_incidents),
            "vms_with_forecasts": len(self.forecast_figures),
            "untracked_vm_samples": self.untracked_vms,
        }
