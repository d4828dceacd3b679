"""A seasonal component as a cyclic piecewise-linear curve over a few knots.

A period of P samples (a day of one-minute samples: 1,440) is described by K evenly spaced
knots (48 by default: one every half hour of a day); the seasonal value at phase p is the
linear interpolation between the two knots around position p * K / P. Learning spreads an
error correction over those two knots by their interpolation weights (the gradient of the
squared error), scaled by K / P so that each knot moves, per period, as much as one value per
phase would. With P <= K there is one knot per phase and it is the classic per-phase seasonal
component.

Why: per-phase values cost P floats per series and learn each phase from one sample a period;
48 knots cost 48 floats, and each knot learns from the P / K samples around it. The knots are
stored as float32 (192 bytes for 48) and computed with in float64: reading converts them,
learning rounds the knot it moved.
"""

from __future__ import annotations

from functools import cache

import numpy as np

KNOTS = 48


@cache
def knot_map(period: int, knots: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Per phase: the knot at or before it, the next knot (cyclically) and the next one's
    interpolation weight. Shared by every curve of the same shape: read-only."""
    position = np.arange(period) * (knots / period)
    before = np.floor(position).astype(np.int64)
    weight = position - before
    after = (before + 1) % knots
    for array in (before, after, weight):
        array.flags.writeable = False
    return before, after, weight


@cache
def _least_squares(period: int, knots: int) -> np.ndarray:
    """The (knots, period) matrix that maps a per-phase profile to the knot values of the
    closest curve (the pseudo-inverse of the interpolation). Shared, like `knot_map`: a fleet
    finds its daily seasons at about the same time, and solving each fit afresh costs ~4 ms."""
    before, after, weight = knot_map(period, knots)
    design = np.zeros((period, knots))
    phases = np.arange(period)
    np.add.at(design, (phases, before), 1.0 - weight)
    np.add.at(design, (phases, after), weight)
    solver = np.linalg.pinv(design)
    solver.flags.writeable = False
    return solver


class SeasonalCurve:
    """Seasonal values of a period of `period` samples, through min(period, knots) knots."""

    __slots__ = ("period", "values", "_before", "_after", "_weight", "_gain")

    def __init__(self, period: int, knots: int = KNOTS, values: np.ndarray | None = None) -> None:
        if period < 1 or knots < 1:
            raise ValueError("period and knots must be positive")
        k = min(period, knots)
        self.period = period
        if values is None:
            self.values = np.zeros(k, dtype=np.float32)
        else:
            values = np.asarray(values)
            if values.shape != (k,):
                raise ValueError(f"a curve of period {period} has {k} knots, not {values.shape}")
            self.values = values.astype(np.float32)  # a copy
        self._before, self._after, self._weight = knot_map(period, k)
        self._gain = k / period

    @classmethod
    def fit(cls, profile: np.ndarray, knots: int = KNOTS) -> SeasonalCurve:
        """The curve closest (least squares) to a per-phase `profile` of one period."""
        profile = np.asarray(profile, dtype=np.float64)
        curve = cls(profile.size, knots)
        curve.values = (_least_squares(profile.size, curve.values.size) @ profile).astype(
            np.float32
        )
        return curve

    def value(self, phase: int) -> float:
        """The seasonal value at `phase` (0 <= phase < period)."""
        w = float(self._weight[phase])
        v = self.values
        return float(v[self._before[phase]]) * (1.0 - w) + float(v[self._after[phase]]) * w

    def path(self, phases: np.ndarray) -> np.ndarray:
        """The seasonal values at several phases (float64)."""
        w = self._weight[phases]
        v = self.values
        return v[self._before[phases]] * (1.0 - w) + v[self._after[phases]] * w

    def learn(self, phase: int, correction: float) -> None:
        """Move the curve at `phase` by `correction` (e.g. gamma * error), spread over the two
        knots around it."""
        amount = correction * self._gain
        w = float(self._weight[phase])
        v = self.values
        before, after = self._before[phase], self._after[phase]
        v[before] = float(v[before]) + amount * (1.0 - w)  # in float64, rounded on store
        v[after] = float(v[after]) + amount * w

    @property
    def nbytes(self) -> int:
        return int(self.values.nbytes)
