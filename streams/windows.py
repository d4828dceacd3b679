"""Event-time tumbling windows per VM: mean, max and count per metric, closed by later samples.

A window [start, start + size) closes when a sample of the same VM arrives with
ts >= start + size + grace. Samples for a window that already closed are late: they are counted
and still scored by the anomaly engine, but no longer change any aggregate.

Longer windows (e.g. 5 minutes over 1-minute ones) are rollups: each is the sum of the shorter
windows inside it, merged as they close, so the two sizes always agree and a sample is added
once whatever the number of sizes. A rollup closes by the same rule (its own size, same grace).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

from models.engine import Sample


@dataclass
class WindowStats:
    """The aggregate of one metric in one window."""

    count: int = 0
    total: float = 0.0
    peak: float = -math.inf

    def add(self, value: float) -> None:
        self.count += 1
        self.total += value
        self.peak = max(self.peak, value)

    @property
    def mean(self) -> float:
        return self.total / self.count if self.count else math.nan

    def as_dict(self) -> dict:
        return {"mean": self.mean, "max": self.peak, "count": self.count}


@dataclass
class ClosedWindow:
    vm_id: str
    host: str | None
    size_s: float
    start: float
    metrics: dict[str, WindowStats]

    @property
    def end(self) -> float:
        return self.start + self.size_s

    def as_dict(self) -> dict:
        return {
            "vm_id": self.vm_id,
            "host": self.host,
            "size_s": self.size_s,
            "start": self.start,
            "end": self.end,
            "metrics": {name: s.as_dict() for name, s in self.metrics.items()},
        }


@dataclass
class _VMWindows:
    watermark: float = -math.inf  # the latest event time seen for the VM
    closed_until: float = -math.inf  # end of the latest window already closed
    next_close: float = math.inf  # event time at which the oldest open window closes
    host: str | None = None
    # window start -> metric -> [count, total, max]: flat lists keep the per-sample path cheap
    open: dict[float, dict[str, list[float]]] = field(default_factory=dict)
    # rollup size -> rollup start -> metric -> [count, total, max] of its closed windows
    rolling: dict[float, dict[float, dict[str, list[float]]]] = field(default_factory=dict)
    rolled_until: dict[float, float] = field(default_factory=dict)  # rollup size -> closed end


def _stats(raw: dict[str, list[float]]) -> dict[str, WindowStats]:
    return {name: WindowStats(int(c), t, m) for name, (c, t, m) in raw.items()}


def _merge(into: dict[str, list[float]], raw: dict[str, list[float]]) -> None:
    """Add one window's [count, total, max] per metric into another's."""
    for name, (count, total, peak) in raw.items():
        acc = into.get(name)
        if acc is None:
            into[name] = [count, total, peak]
        else:
            acc[0] += count
            acc[1] += total
            if peak > acc[2]:
                acc[2] = peak


@dataclass
class TumblingWindows:
    """Open windows of every VM for one window size, and for its rollups (multiples of it)."""

    size_s: float
    grace_s: float = 0.0
    rollups: tuple[float, ...] = ()
    late: int = 0
    _vms: dict[str, _VMWindows] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.size_s <= 0 or self.grace_s < 0:
            raise ValueError("window size must be > 0 and grace >= 0")
        for size in self.rollups:
            if size <= self.size_s or size % self.size_s:
                raise ValueError(f"a rollup ({size:g} s) must be a multiple of {self.size_s:g} s")

    def add(self, sample: Sample, host: str | None = None) -> list[ClosedWindow]:
        """Add one sample; returns the windows of its VM its event time closed, each size
        oldest first (the shortest size first)."""
        vm = self._vms.get(sample.vm_id)
        if vm is None:
            vm = self._vms[sample.vm_id] = _VMWindows()
        if host is not None:
            vm.host = host
        ts = sample.ts
        start = ts - ts % self.size_s
        if start < vm.closed_until:
            self.late += 1
            return []
        metrics = vm.open.get(start)
        if metrics is None:
            metrics = vm.open[start] = {}
            vm.next_close = min(vm.next_close, start + self.size_s + self.grace_s)
        for name, value in sample.values.items():
            acc = metrics.get(name)
            if acc is None:
                metrics[name] = [1, value, value]
            else:
                acc[0] += 1
                acc[1] += value
                if value > acc[2]:
                    acc[2] = value
        if ts > vm.watermark:
            vm.watermark = ts
        if ts < vm.next_close:
            return []
        return self._close_due(sample.vm_id, vm)

    def _close_due(self, vm_id: str, vm: _VMWindows) -> list[ClosedWindow]:
        lag = self.size_s + self.grace_s
        closed = []
        for w in sorted(w for w in vm.open if w + lag <= vm.watermark):
            raw = vm.open.pop(w)
            closed.append(ClosedWindow(vm_id, vm.host, self.size_s, w, _stats(raw)))
            vm.closed_until = max(vm.closed_until, w + self.size_s)
            for size in self.rollups:
                _merge(vm.rolling.setdefault(size, {}).setdefault(w - w % size, {}), raw)
        next_close = min(vm.open, default=math.inf) + lag
        for size, rolling in vm.rolling.items():
            due = size + self.grace_s
            for w in sorted(w for w in rolling if w + due <= vm.watermark):
                closed.append(ClosedWindow(vm_id, vm.host, size, w, _stats(rolling.pop(w))))
                vm.rolled_until[size] = w + size
            next_close = min(next_close, min(rolling, default=math.inf) + due)
        vm.next_close = next_close
        return closed

    def forget(self, vm_id: str) -> None:
        self._vms.pop(vm_id, None)

    def last_closed_end(self, vm_id: str, size_s: float | None = None) -> float | None:
        """End of the VM's latest closed window (of the base size, or of rollup `size_s`)."""
        vm = self._vms.get(vm_id)
        if vm is None:
            return None
        if size_s is None or size_s == self.size_s:
            return vm.closed_until if vm.closed_until > -math.inf else None
        return vm.rolled_until.get(size_s)

    def open_windows(self, vm_id: str, size_s: float | None = None) -> list[dict]:
        """The windows still filling for `vm_id`, as dicts (for the web views); a rollup's
        holds its closed windows and the open ones inside it."""
        vm = self._vms.get(vm_id)
        if vm is None:
            return []
        size = self.size_s if size_s is None else size_s
        if size == self.size_s:
            filling = vm.open
        else:
            filling = {}
            for w, raw in vm.rolling.get(size, {}).items():
                _merge(filling.setdefault(w, {}), raw)
            for w, raw in vm.open.items():
                _merge(filling.setdefault(w - w % size, {}), raw)
        return [
            ClosedWindow(vm_id, vm.host, size, w, _stats(m)).as_dict()
            for w, m in sorted(filling.items())
        ]
