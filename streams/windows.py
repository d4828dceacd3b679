"""Event-time tumbling windows per VM: mean, max and count per metric, closed by later samples.

A window [start, start + size) closes when a sample of the same VM arrives with
ts >= start + size + grace. Samples for a window that already closed are late: they are counted
and still scored by the anomaly engine, but no longer change any aggregate.
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
    host: str | None = None
    open: dict[float, dict[str, WindowStats]] = field(default_factory=dict)


@dataclass
class TumblingWindows:
    """Open windows of every VM for one window size."""

    size_s: float
    grace_s: float = 0.0
    late: int = 0
    _vms: dict[str, _VMWindows] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.size_s <= 0 or self.grace_s < 0:
            raise ValueError("window size must be > 0 and grace >= 0")

    def add(self, sample: Sample, host: str | None = None) -> list[ClosedWindow]:
        """Add one sample; returns the windows of its VM its event time closed, oldest first."""
        vm = self._vms.get(sample.vm_id)
        if vm is None:
            vm = self._vms[sample.vm_id] = _VMWindows()
        if host is not None:
            vm.host = host
        start = math.floor(sample.ts / self.size_s) * self.size_s
        if start < vm.closed_until:
            self.late += 1
            return []
        metrics = vm.open.setdefault(start, {})
        for name, value in sample.values.items():
            stats = metrics.get(name)
            if stats is None:
                stats = metrics[name] = WindowStats()
            stats.add(value)
        vm.watermark = max(vm.watermark, sample.ts)
        due = [w for w in vm.open if w + self.size_s + self.grace_s <= vm.watermark]
        closed = []
        for w in sorted(due):
            closed.append(ClosedWindow(sample.vm_id, vm.host, self.size_s, w, vm.open.pop(w)))
            vm.closed_until = max(vm.closed_until, w + self.size_s)
        return closed

    def forget(self, vm_id: str) -> None:
        self._vms.pop(vm_id, None)

    def open_windows(self, vm_id: str) -> list[dict]:
        """The windows still filling for `vm_id`, as dicts (for the web views)."""
        vm = self._vms.get(vm_id)
        if vm is None:
            return []
        return [
            ClosedWindow(vm_id, vm.host, self.size_s, w, m).as_dict()
            for w, m in sorted(vm.open.items())
        ]
