"""Online conformal prediction bands per forecast horizon step, by quantile tracking.

For each step h and level L the bands keep the band's half-width q itself and move it after
every observed h-step error: up when the error fell outside the band, down a little when it
fell inside, in proportion to the band,

    q <- q + rate * max(q, scale) * (miss - (1 - L))

where `scale` is the step's recent mean absolute error: a band wider than the typical error
moves in proportion to itself, a narrower one (after a flat stretch shrank it to nothing) by a
share of the typical error, so it grows back within tens of errors. Symmetric bands judge
|error|; asymmetric ones track the lower and upper side apart, each aiming at (1 - L) / 2
misses. After each move the widths are sorted across levels, so that a wider level's band
always contains a narrower one's (rearrangement: it never moves a width further from its
quantile). The fixed point is the L-quantile of the errors, and no record of past errors is
needed: ln q moves by about rate * (miss - (1 - L)) per error, so whatever the errors do, the
share of misses over T errors is 1 - L up to about ln(q_T / q_0) / (rate * T). This is the
quantile-tracking form of online conformal prediction (Angelopoulos, Candes and Tibshirani,
"Conformal PID control for time series prediction", 2023), with the long-run coverage of
adaptive conformal inference (Gibbs and Candes, 2021), in a few floats per step instead of a
window of errors.

A step's band starts, once `warmup` errors have been seen, at the normal interval for their
mean absolute size; until then it has none (NaN) and `ready` is false.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from statistics import NormalDist

import numpy as np

# Mean absolute deviation to standard deviation, for normal errors.
MAE_TO_SIGMA = math.sqrt(math.pi / 2.0)


def normal_half_widths(levels: Sequence[float]) -> np.ndarray:
    """Half-widths of central normal intervals at `levels`, in standard deviations."""
    return np.array([NormalDist().inv_cdf(0.5 + lvl / 2) for lvl in levels])


class ConformalBands:
    """Per-step band half-widths, tracked online as quantiles of the observed errors.

    `update_many` scores the current bands against the errors of one truth and moves them;
    `widths` reads them.
    """

    __slots__ = (
        "horizon", "levels", "symmetric", "rate", "scale_window", "warmup",
        "_widths", "_scale", "_count", "_target", "_start", "_started",
    )  # fmt: skip

    def __init__(
        self,
        horizon: int,
        levels: Sequence[float] = (0.8, 0.95),
        symmetric: bool = True,
        rate: float = 0.1,
        scale_window: int = 30,
        warmup: int = 10,
    ) -> None:
        if not all(0.0 < lvl < 1.0 for lvl in levels):
            raise ValueError("levels must lie strictly between 0 and 1")
        if rate <= 0.0 or scale_window < 1 or warmup < 1:
            raise ValueError("rate, scale_window and warmup must be positive")
        self.horizon = horizon
        self.levels = tuple(sorted(levels))
        self.symmetric = symmetric
        self.rate = rate
        self.scale_window = scale_window
        self.warmup = warmup
        # (below, above) distances per (step, level); NaN until the step has `warmup` errors
        # float32 state: computed in float64, rounded on storing (a fleet keeps one per series)
        self._widths = np.full((horizon, len(self.levels), 2), np.nan, dtype=np.float32)
        self._scale = np.zeros(horizon, dtype=np.float32)  # per step, EW mean |error|
        self._count = np.zeros(horizon, dtype=np.int32)
        # share of errors each side of a band should miss (both sides together when symmetric)
        miss = 1.0 - np.asarray(self.levels)
        self._target = miss if symmetric else miss / 2.0
        # a new band: the normal interval whose mean absolute error is the step's scale
        self._start = normal_half_widths(self.levels) * MAE_TO_SIGMA
        self._started = 0  # steps 1..started all have bands; only grows

    def ready_steps(self) -> np.ndarray:
        """Per step, whether its band exists (`warmup` errors seen)."""
        return self._count >= self.warmup

    @property
    def widths(self) -> np.ndarray:
        """(below, above) distances, shape (horizon, levels, 2); read-only view."""
        view = self._widths.view()
        view.flags.writeable = False
        return view

    def half_widths(self, step: int) -> list[tuple[float, float]]:
        """(below, above) distances from the point forecast, one pair per level."""
        return [(float(b), float(a)) for b, a in self._widths[step - 1]]

    def update_many(self, errors: np.ndarray) -> np.ndarray | None:
        """Record the errors (truth - forecast) of steps 1..k (k = len(errors)) for one truth.

        Returns a (k, levels) array of 0/1 coverage by the bands as they were, or None while
        some of these steps have no band yet; moves the bands.
        """
        k = errors.size
        if self._started < k:
            ready = self.ready_steps()
            self._started = self.horizon if ready.all() else int(np.argmin(ready))
        widths = self._widths[:k]
        scale = self._scale[:k]
        e = errors[:, None]

        def moved(side: int, miss: np.ndarray) -> np.ndarray:
            """One side's widths after quantile tracking (NaN, no band yet, stays NaN)."""
            w = widths[:, :, side]
            step = self.rate * np.maximum(w, scale[:, None])
            return np.maximum(w + step * (miss - self._target), 0.0)

        if self.symmetric:  # one band for both sides: a miss either side moves it
            miss = np.abs(e) > widths[:, :, 1]
            hit = ~miss
            widths[:, :, 0] = widths[:, :, 1] = moved(1, miss)
        else:
            below, above = -e > widths[:, :, 0], e > widths[:, :, 1]
            hit = ~below & ~above
            widths[:, :, 0], widths[:, :, 1] = moved(0, below), moved(1, above)
        # levels tracked apart can cross; sorting them back (rearrangement) keeps bands nested
        widths.sort(axis=1)
        covered = hit.astype(np.float64) if self._started >= k else None
        count = self._count[:k] + 1
        self._count[:k] = count
        scale += np.maximum(1.0 / count, 1.0 / self.scale_window) * (np.abs(errors) - scale)
        born = count == self.warmup
        if born.any():
            widths[born] = (scale[born, None] * self._start)[:, :, None]
        return covered

    @property
    def nbytes(self) -> int:
        return int(self._widths.nbytes + self._scale.nbytes + self._count.nbytes)
