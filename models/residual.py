"""Forecast residuals: a one-step damped-trend forecaster with an interval, and a detector on it.

`DampedTrendForecaster` is the compact per-metric state (level, trend, residual scale) that the
engine keeps for every VM. `ForecastResidualDetector` wraps one forecaster per feature behind
River's `AnomalyDetector` API: the raw score is how far the actual value falls from the
forecast, in units of the forecast interval's half-width scale.
"""

from __future__ import annotations

from river import base

# Mean absolute error to standard deviation for Gaussian residuals: sqrt(pi / 2).
_MAE_TO_STD = 1.2533141373155001


class DampedTrendForecaster:
    """Holt's linear method with a damped trend, winsorised, plus an EW residual scale.

    `forecast()` is the next value; `interval(q)` is `forecast() ± q * scale`. A residual larger
    than `clip` scales updates the state as if it were `clip` scales, so one spike does not drag
    the level; a confirmed level shift is handled by `reset_level`.
    """

    __slots__ = (
        "alpha",
        "beta",
        "phi",
        "scale_alpha",
        "clip",
        "rel_floor",
        "n",
        "level",
        "trend",
        "mae",
        "last",
    )

    def __init__(
        self,
        alpha: float = 0.3,
        beta: float = 0.05,
        phi: float = 0.9,
        scale_alpha: float = 0.02,
        clip: float = 4.0,
        rel_floor: float = 1e-3,
    ) -> None:
        self.alpha = alpha
        self.beta = beta
        self.phi = phi
        self.scale_alpha = scale_alpha
        self.clip = clip
        self.rel_floor = rel_floor
        self.n = 0.0
        self.level = 0.0
        self.trend = 0.0
        self.mae = 0.0
        self.last = 0.0

    def forecast(self) -> float:
        return self.level + self.phi * self.trend

    @property
    def scale(self) -> float:
        """Residual standard deviation estimate, floored relative to the level."""
        floor = self.rel_floor * (abs(self.level) + 1e-3)
        return max(_MAE_TO_STD * self.mae, floor)

    def interval(self, q: float = 3.0) -> tuple[float, float]:
        f = self.forecast()
        half = q * self.scale
        return f - half, f + half

    def residual_score(self, x: float) -> float:
        """|actual - forecast| in residual scales; 0 until two values were seen."""
        if self.n < 2:
            return 0.0
        return abs(x - self.forecast()) / self.scale

    def observe(self, x: float) -> float:
        """`residual_score(x)` against the state before `x`, then learn `x`."""
        n = self.n
        if n < 1:
            self.n = 1.0
            self.level = self.last = x
            return 0.0
        level = self.level
        f = level + self.phi * self.trend
        floor = self.rel_floor * (abs(level) + 1e-3)
        scale = _MAE_TO_STD * self.mae
        if scale < floor:
            scale = floor
        err = x - f
        score = abs(err) / scale if n >= 2 else 0.0
        n += 1.0
        self.n = n
        a = 1.0 / (n - 1.0) if 1.0 / (n - 1.0) > self.scale_alpha else self.scale_alpha
        if n > 10:
            limit = self.clip * scale
            if err > limit:
                err = limit
            elif err < -limit:
                err = -limit
        self.mae += a * (abs(err) - self.mae)
        self.level = f + self.alpha * err
        self.trend = self.phi * self.trend + self.alpha * self.beta * err
        self.last = x
        return score

    def learn_one(self, x: float) -> None:
        self.n += 1.0
        if self.n == 1.0:
            self.level = self.last = x
            return
        f = self.forecast()
        err = x - f
        a = max(self.scale_alpha, 1.0 / (self.n - 1.0))
        if self.n > 10:
            limit = self.clip * self.scale
            clipped = max(-limit, min(limit, err))
        else:
            clipped = err
        self.mae += a * (abs(clipped) - self.mae)
        self.level = f + self.alpha * clipped
        self.trend = self.phi * self.trend + self.alpha * self.beta * clipped
        self.last = x

    def reset_level(self, x: float) -> None:
        """Restart from `x` with no trend (after a confirmed level shift)."""
        self.level = x
        self.trend = 0.0
        self.last = x

    def state(self) -> tuple[float, ...]:
        return (self.n, self.level, self.trend, self.mae, self.last)

    def load_state(self, values: tuple[float, ...]) -> None:
        self.n, self.level, self.trend, self.mae, self.last = values

    N_STATE = 5


class ForecastResidualDetector(base.AnomalyDetector):
    """Anomaly score = largest forecast residual over the features, in residual scales.

    Parameters
    ----------
    alpha
        Level smoothing of the one-step forecaster.
    beta
        Trend smoothing (relative to `alpha`).
    phi
        Trend damping factor in (0, 1].
    scale_alpha
        Smoothing of the residual scale.

    Examples
    --------
    >>> det = ForecastResidualDetector()
    >>> for v in [10.0, 10.5, 9.5, 10.2, 9.8] * 10:
    ...     det.learn_one({"cpu": v})
    >>> det.score_one({"cpu": 10.0}) < det.score_one({"cpu": 30.0})
    True

    """

    def __init__(
        self,
        alpha: float = 0.3,
        beta: float = 0.05,
        phi: float = 0.9,
        scale_alpha: float = 0.02,
    ) -> None:
        self.alpha = alpha
        self.beta = beta
        self.phi = phi
        self.scale_alpha = scale_alpha
        self._forecasters: dict = {}

    def _new(self) -> DampedTrendForecaster:
        return DampedTrendForecaster(self.alpha, self.beta, self.phi, self.scale_alpha)

    def learn_one(self, x: dict) -> None:
        for name, value in x.items():
            if value is None:
                continue
            fc = self._forecasters.get(name)
            if fc is None:
                fc = self._forecasters[name] = self._new()
            fc.learn_one(float(value))

    def score_one(self, x: dict) -> float:
        best = 0.0
        for name, value in x.items():
            fc = self._forecasters.get(name)
            if fc is None or value is None:
                continue
            best = max(best, fc.residual_score(float(value)))
        return best

    def forecast_one(self) -> dict:
        """One-step forecast and 3-scale interval per feature."""
        return {name: (fc.forecast(), *fc.interval(3.0)) for name, fc in self._forecasters.items()}
