"""What kind of anomaly it is and how severe: from the features that drove the score.

`GrowthTracker` is the per-metric evidence for slow monotonic growth (an EW mean of the sign of
successive changes: ~0 for noise, ~1 for a steady climb); `climb` is the evidence a climb gives
on its first anomalous sample, before that mean has caught up. `classify` maps the per-feature
attribution, the direction of the deviations, growth and drift flags to one of `KINDS`.
"""

from __future__ import annotations

KINDS: tuple[str, ...] = (
    "cpu_spike",
    "memory_leak",
    "io_bottleneck",
    "network_saturation",
    "level_shift",
    "other",
)
SEVERITIES: tuple[str, ...] = ("low", "medium", "high", "critical")

_FAMILY = {
    "cpu_pct": "cpu_spike",
    "disk_read_bps": "io_bottleneck",
    "disk_write_bps": "io_bottleneck",
    "net_in_bps": "network_saturation",
    "net_out_bps": "network_saturation",
}


class GrowthTracker:
    """EW mean of sign(x_t - x_{t-1}); values near 1 mean steady growth."""

    __slots__ = ("alpha", "last", "index", "n")

    def __init__(self, alpha: float = 0.1) -> None:
        self.alpha = alpha
        self.last = 0.0
        self.index = 0.0
        self.n = 0.0

    def learn_one(self, x: float) -> None:
        if self.n > 0:
            d = x - self.last
            sign = 1.0 if d > 0 else (-1.0 if d < 0 else 0.0)
            self.index += self.alpha * (sign - self.index)
        self.last = x
        self.n += 1.0

    def state(self) -> tuple[float, ...]:
        return (self.last, self.index, self.n)

    def load_state(self, values: tuple[float, ...]) -> None:
        self.last, self.index, self.n = values

    N_STATE = 3


def climb(deviation: float, rise: float, z: float) -> float:
    """How far a metric climbed on each of its latest two samples, in standard deviations: the
    smaller of the previous sample's excess over typical (`deviation - rise`) and the latest
    rise. A ramp climbs on both; a value that jumped in one sample, or noise, climbs ~0 on one
    of them. `z` is `deviation` in standard deviations (0 when not scored)."""
    if deviation <= 0.0 or rise <= 0.0 or z <= 0.0:
        return 0.0
    before = deviation - rise
    return (before if before < rise else rise) * z / deviation


def severity(score: float, threshold: float, medium: float, high: float, critical: float) -> str:
    """Severity band of a score at or above the alert threshold (None-free: below is 'low')."""
    if score >= critical:
        return "critical"
    if score >= high:
        return "high"
    if score >= medium and medium > threshold:
        return "medium"
    return "low"


def classify(
    attribution: dict[str, float],
    deviation: dict[str, float],
    growth: dict[str, float],
    level_shift: bool,
    leak_growth: float = 0.4,
    climbs: dict[str, float] | None = None,
    leak_climb: float = 2.0,
) -> str:
    """Kind of anomaly from what drove the score.

    - `memory_leak`: mem_pct is the main driver, above typical and growing: steadily (its
      growth index at least `leak_growth`), or by at least `leak_climb` standard deviations on
      each of its latest two samples (`climbs`, see `climb`);
    - `level_shift`: a drift detector confirmed a lasting shift;
    - otherwise the family of the main driver when it moved up (cpu_spike, io_bottleneck,
      network_saturation), else `other`.
    """
    if not attribution:
        return "level_shift" if level_shift else "other"
    top = max(attribution, key=attribution.__getitem__)
    if top == "mem_pct" and deviation.get(top, 0.0) > 0:
        climbed = climbs is not None and climbs.get(top, 0.0) >= leak_climb
        if climbed or growth.get(top, 0.0) >= leak_growth:
            return "memory_leak"
    if level_shift:
        return "level_shift"
    if deviation.get(top, 0.0) > 0 and top in _FAMILY:
        return _FAMILY[top]
    return "other"
