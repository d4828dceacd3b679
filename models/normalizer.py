"""Robust online standardisation of one metric: exponentially weighted mean and variance.

Updates are winsorised (a deviation counts at most `clip` standard deviations), so a single
spike barely moves the estimate while a lasting change is followed at the EWMA's pace. The
state is three floats, cheap enough to keep one per metric for every VM of a fleet.
"""

from __future__ import annotations

import math


class EWStandardizer:
    """Exponentially weighted, winsorised mean/variance of a scalar stream.

    For the first `1/alpha` samples the weight is `1/n`, so the estimate starts as a plain
    running mean instead of being dragged toward the first value.

    `z(x)` is the standardised deviation of `x` from the typical value. Its scale is floored at
    `rel_floor * (|mean| + abs_floor)` so a flat series does not turn a tiny wiggle into a huge z.
    """

    __slots__ = ("alpha", "clip", "rel_floor", "abs_floor", "n", "mean", "var")

    def __init__(
        self,
        alpha: float = 0.01,
        clip: float = 3.0,
        rel_floor: float = 1e-3,
        abs_floor: float = 1e-3,
    ) -> None:
        self.alpha = alpha
        self.clip = clip
        self.rel_floor = rel_floor
        self.abs_floor = abs_floor
        self.n = 0.0
        self.mean = 0.0
        self.var = 0.0

    @property
    def std(self) -> float:
        floor = self.rel_floor * (abs(self.mean) + self.abs_floor)
        return max(math.sqrt(self.var), floor)

    def z(self, x: float) -> float:
        """Standardised deviation of `x`; 0 before anything was learned."""
        if self.n < 1:
            return 0.0
        return (x - self.mean) / self.std

    def observe(self, x: float) -> float:
        """`z(x)` against the state before `x`, then learn `x` (one call on the hot path)."""
        n = self.n
        if n < 1:
            self.n = 1.0
            self.mean = x
            return 0.0
        mean = self.mean
        var = self.var
        floor = self.rel_floor * (abs(mean) + self.abs_floor)
        std = math.sqrt(var)
        if std < floor:
            std = floor
        d = x - mean
        z = d / std
        n += 1.0
        self.n = n
        a = 1.0 / n if 1.0 / n > self.alpha else self.alpha
        if n > 10:
            limit = self.clip * std
            if d > limit:
                d = limit
            elif d < -limit:
                d = -limit
        self.mean = mean + a * d
        self.var = (1.0 - a) * (var + a * d * d)
        return z

    def learn_one(self, x: float) -> None:
        self.n += 1.0
        if self.n == 1.0:
            self.mean = x
            return
        a = max(self.alpha, 1.0 / self.n)
        d = x - self.mean
        if self.n > 10:
            limit = self.clip * self.std
            d = max(-limit, min(limit, d))
        self.mean += a * d
        self.var = (1.0 - a) * (self.var + a * d * d)

    def reset_level(self, x: float) -> None:
        """Re-centre on `x` (after a confirmed level shift), keeping the learned spread."""
        self.mean = x

    def state(self) -> tuple[float, ...]:
        return (self.n, self.mean, self.var)

    def load_state(self, values: tuple[float, ...]) -> None:
        self.n, self.mean, self.var = values

    N_STATE = 3
