"""Workload pattern of a VM from its recent history: periodic, trending, bursty or steady.

Rules, checked in this order on the recent samples of one utilisation series:

- trending: a linear fit explains most of the variance and moves the mean noticeably;
- periodic: strong autocorrelation at the seasonal period (given, or the detector's);
- bursty: rare, large excursions above the typical level (peak-to-median and spread);
- steady: none of the above.

Each label carries a strength in [0, 1] so callers can weigh it.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

PATTERNS: tuple[str, ...] = ("periodic", "bursty", "steady", "trending")


@dataclass(frozen=True)
class WorkloadPattern:
    kind: str
    strength: float
    details: dict

    def as_dict(self) -> dict:
        return {"kind": self.kind, "strength": round(self.strength, 3), **self.details}


def classify_workload(
    history: Sequence[float] | np.ndarray,
    period: int | None = None,
    *,
    min_samples: int = 24,
    trend_r2: float = 0.6,
    trend_change: float = 0.15,
    periodic_acf: float = 0.5,
    burst_ratio: float = 2.0,
) -> WorkloadPattern:
    """Label the pattern of `history` (oldest first)."""
    x = np.asarray(history, dtype=np.float64)
    x = x[np.isfinite(x)]
    if x.size < min_samples:
        return WorkloadPattern("steady", 0.0, {"samples": int(x.size), "insufficient": True})
    mean = float(np.mean(x))
    scale = max(abs(mean), float(np.std(x)), 1e-9)
    t = np.arange(x.size, dtype=np.float64)
    slope, intercept = np.polyfit(t, x, 1)
    fitted = slope * t + intercept
    total_var = float(np.var(x))
    r2 = 1.0 - float(np.var(x - fitted)) / total_var if total_var > 0 else 0.0
    change = abs(slope) * x.size / scale
    details = {"samples": int(x.size), "r2_trend": round(r2, 3), "slope": float(slope)}
    if r2 >= trend_r2 and change >= trend_change:
        return WorkloadPattern("trending", min(1.0, r2), details)

    if period and x.size >= 2 * period:
        acf = _lag_correlation(x - fitted, period)
        details["acf_period"] = round(acf, 3)
        details["period"] = int(period)
        if acf >= periodic_acf:
            return WorkloadPattern("periodic", min(1.0, acf), details)

    median = float(np.median(x))
    p99 = float(np.percentile(x, 99))
    mad = float(np.median(np.abs(x - median))) or 1e-9
    peak_ratio = p99 / median if median > 0 else float("inf")
    excursions = float(np.mean(x > median + 5.0 * 1.4826 * mad))
    details.update(peak_to_median=round(min(peak_ratio, 1e6), 3), burst_share=round(excursions, 4))
    if peak_ratio >= burst_ratio and 0.0 < excursions <= 0.2:
        strength = min(1.0, (peak_ratio - 1.0) / (2.0 * burst_ratio))
        return WorkloadPattern("bursty", strength, details)

    cv = float(np.std(x)) / scale
    details["cv"] = round(cv, 3)
    return WorkloadPattern("steady", max(0.0, 1.0 - cv), details)


def _lag_correlation(x: np.ndarray, lag: int) -> float:
    """Pearson correlation between the series and itself `lag` samples later."""
    a, b = x[:-lag], x[lag:]
    if a.size < 3 or np.std(a) == 0 or np.std(b) == 0:
        return 0.0
    return float(np.corrcoef(a, b)[0, 1])
