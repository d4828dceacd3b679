"""Online conformal prediction bands per forecast horizon step.

For each step h the bands keep a bounded ring of the errors of h-step-ahead forecasts, observed
once the truth arrived. The half-width at level L is the finite-sample conformal quantile of the
|errors| (or, asymmetric, the lower and upper quantiles of the signed errors).

Optionally the level actually used drifts by adaptive conformal inference (Gibbs & Candes, 2021):
after each observed miss the working level rises, after each hit it falls a little, so that the
long-run miss rate tracks 1 - L even when the error distribution shifts.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np


def conformal_quantile(sorted_errors: np.ndarray, level: float) -> float:
    """The ceil((n + 1) * level)-th smallest of n sorted errors (the largest one when beyond n)."""
    n = sorted_errors.size
    if n == 0:
        return float("nan")
    level = min(max(level, 0.0), 1.0)
    rank = int(np.ceil((n + 1) * level))
    return float(sorted_errors[min(max(rank, 1), n) - 1])


class ConformalBands:
    """Per-step residual windows turned into prediction intervals at several levels.

    `update` records errors (cheap); `refresh` recomputes every step's band widths in one
    vectorised pass; `half_widths` reads the cached widths.
    """

    __slots__ = (
        "horizon", "levels", "window", "symmetric", "adapt_rate",
        "_errors", "_count", "_alpha", "_widths", "_nominal", "_rows", "_started",
    )  # fmt: skip

    def __init__(
        self,
        horizon: int,
        levels: Sequence[float] = (0.8, 0.95),
        window: int = 100,
        symmetric: bool = True,
        adapt_rate: float = 0.005,
    ) -> None:
        if not all(0.0 < lvl < 1.0 for lvl in levels):
            raise ValueError("levels must lie strictly between 0 and 1")
        self.horizon = horizon
        self.levels = tuple(sorted(levels))
        self.window = window
        self.symmetric = symmetric
        self.adapt_rate = adapt_rate
        self._errors = np.zeros((horizon, window), dtype=np.float32)
        self._count = np.zeros(horizon, dtype=np.int64)
        # Working miscoverage per (step, level); starts at the nominal 1 - level.
        self._alpha = np.tile(1.0 - np.asarray(self.levels), (horizon, 1))
        # Cached (below, above) distances per (step, level); NaN until errors exist.
        self._widths = np.full((horizon, len(self.levels), 2), np.nan)
        self._nominal = 1.0 - np.asarray(self.levels)[None, :]
        self._rows = np.arange(horizon)[:, None]
        self._started = 0  # steps 1..started all have errors (a band); only grows

    def ready(self, step: int, min_errors: int = 10) -> bool:
        return int(self._count[step - 1]) >= min_errors

    def ready_steps(self, min_errors: int = 10) -> np.ndarray:
        """Per step, whether it has at least `min_errors` observed errors."""
        return self._count >= min_errors

    @property
    def widths(self) -> np.ndarray:
        """Cached (below, above) distances, shape (horizon, levels, 2); read-only view."""
        view = self._widths.view()
        view.flags.writeable = False
        return view

    def half_widths(self, step: int) -> list[tuple[float, float]]:
        """(below, above) distances from the point forecast, one pair per level."""
        return [(float(b), float(a)) for b, a in self._widths[step - 1]]

    def update(self, step: int, error: float) -> list[bool]:
        """Record the error (truth - forecast) of a `step`-ahead forecast.

        Returns, per level, whether the cached band covered it; adapts the working levels.
        """
        i = step - 1
        widths = self._widths[i]
        covered = [bool(-b <= error <= a) for b, a in widths]
        if self._count[i] > 0 and self.adapt_rate > 0.0:
            for j, hit in enumerate(covered):
                alpha = self._alpha[i, j] + self.adapt_rate * (
                    (1.0 - self.levels[j]) - (0.0 if hit else 1.0)
                )
                self._alpha[i, j] = min(max(alpha, 0.0), 1.0)
        self._errors[i, self._count[i] % self.window] = error
        self._count[i] += 1
        return covered

    def update_many(self, errors: np.ndarray) -> np.ndarray | None:
        """Record the errors of steps 1..k (k = len(errors)) for one truth, vectorised.

        Returns a (k, levels) array of 0/1 coverage by the cached bands, or None while some of
        these steps have no band yet.
        """
        k = errors.size
        widths = self._widths[:k]
        if self._started < k:
            seen = self._count > 0
            self._started = self.horizon if seen.all() else int(np.argmin(seen))
        covered = None
        if self._started >= k:
            e = errors[:, None]
            covered = ((-widths[:, :, 0] <= e) & (e <= widths[:, :, 1])).astype(np.float64)
            if self.adapt_rate > 0.0:
                alpha = self._alpha[:k] + self.adapt_rate * (self._nominal - (1.0 - covered))
                self._alpha[:k] = np.minimum(np.maximum(alpha, 0.0), 1.0)
        self._errors[self._rows[:k, 0], self._count[:k] % self.window] = errors
        self._count[:k] += 1
        return covered

    def refresh(self) -> None:
        """Recompute the cached band widths of every step from its error window."""
        n = np.minimum(self._count, self.window)
        if not n.any():
            return
        full = bool(n.min() == self.window)  # every ring filled: no empty slots to mask
        if not full:
            filled = np.arange(self.window)[None, :] < n[:, None]
        errs = self._errors  # float32; negation and abs are exact, so ranks and values match
        if self.symmetric:
            tails = [(np.abs(errs), 1.0 - self._alpha)]
        else:
            tails = [(-errs, 1.0 - self._alpha / 2.0), (errs, 1.0 - self._alpha / 2.0)]
        top = np.maximum(n, 1)[:, None]
        for side, (values, level) in enumerate(tails):
            ranked = np.sort(values if full else np.where(filled, values, np.inf), axis=1)
            rank = np.ceil((n[:, None] + 1) * level).astype(np.int64)
            rank = np.minimum(np.maximum(rank, 1), top) - 1
            q = ranked[self._rows, rank].astype(np.float64)
            if not full:
                q = np.where(n[:, None] > 0, q, np.nan)
            if self.symmetric:
                self._widths[:, :, 0] = q
                self._widths[:, :, 1] = q
            else:
                self._widths[:, :, side] = np.maximum(q, 0.0)

    @property
    def nbytes(self) -> int:
        return int(
            self._errors.nbytes + self._count.nbytes + self._alpha.nbytes + self._widths.nbytes
        )
