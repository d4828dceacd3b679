"""Multi-step forecasts of one VM metric with calibrated prediction intervals.

`IntervalForecaster` learns one series online:

- point forecasts from additive exponential smoothing with a damped trend and, when the series
  has one, a seasonal component (ETS(A,Ad,A) in error-correction form); the innovation is
  clipped at a few robust scales so that isolated spikes do not drag the level;
- the seasonal period is found automatically (autocorrelation at candidate lags, daily by
  default, over a bounded block-averaged buffer, re-checked twice per period);
- intervals per horizon step from online conformal quantile tracking of the observed h-step
  errors (`models.conformal.ConformalBands`: long-run coverage at the nominal levels, a few
  floats per step);
- rolling accuracy (exponentially weighted): MAE, sMAPE, MASE against seasonal-naive and naive
  forecasts of the same targets, and interval coverage per level.

State is a handful of small numpy arrays, bounded whatever the length of the stream.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from functools import cache

import numpy as np

from models import array_state, half_history
from models.conformal import MAE_TO_SIGMA, ConformalBands, normal_half_widths
from models.seasonal_curve import KNOTS, SeasonalCurve
from models.seasonality import DAY_SECONDS, SeasonalityDetector

METRICS: tuple[str, ...] = ("net_in_bps", "net_out_bps", "cpu_pct", "mem_pct")


@cache
def _normal_quantiles(levels: tuple[float, ...]) -> list[float]:
    """Half-widths of central normal intervals at `levels`, in standard deviations."""
    return normal_half_widths(levels).tolist()


def seasonal_block(lag: int, slots: int) -> int:
    """Samples per value of the seasonal-naive reference for periods up to `lag`: 1 while a
    period fits in `slots` values, else the fewest consecutive samples whose means do."""
    return max(1, lag // slots)


@cache
def pending_layout(horizon: int) -> tuple[np.ndarray, np.ndarray]:
    """Steps 1..horizon, and where each step's ring starts in the triangle of pending forecasts.

    A forecast for s steps ahead waits s samples for its truth, so step s keeps a ring of s
    slots: the forecast issued after sample j sits at start[s - 1] + j % s, which is where the
    sample of index n finds the one made s steps before it (j = n - s). The triangle holds
    horizon * (horizon + 1) / 2 values, against horizon**2 for a table of origins by steps."""
    steps = np.arange(1, horizon + 1)
    starts = steps * (steps - 1) // 2
    for array in (steps, starts):  # shared by every forecaster: read-only
        array.flags.writeable = False
    return steps, starts


def level_key(level: float) -> str:
    """'80' for 0.8, '97.5' for 0.975: the suffix of per-level keys in messages."""
    return f"{level * 100:g}"


@dataclass(frozen=True)
class ForecastPoint:
    """Forecast for `step` samples ahead; bounds keyed by level (e.g. 0.8, 0.95)."""

    step: int
    yhat: float
    lower: dict[float, float]
    upper: dict[float, float]
    ts: float | None = None


@dataclass(slots=True)
class _Accuracy:
    """Exponentially weighted error statistics: per horizon step the two that the
    seasonal-naive switch compares, and the published figures as means over the steps each
    truth scores (messages give only those; per step they would be 12 times the state)."""

    horizon: int
    n_levels: int
    window: int
    count: np.ndarray = field(init=False)  # truths scored, per step
    # per step, as rows of one table: |seasonal-naive error| and |the model's own error|
    table: np.ndarray = field(init=False)
    abs_snaive: np.ndarray = field(init=False)
    abs_model: np.ndarray = field(init=False)
    # over the steps scored: mean |error|, sMAPE and mean |naive error|
    means: np.ndarray = field(init=False)
    coverage: np.ndarray = field(init=False)  # per level: share of the steps scored inside
    cov_count: int = 0  # truths scored while there were bands
    seasonal_count: int = 0  # truths scored against a real seasonal-naive forecast

    def __post_init__(self) -> None:
        h = self.horizon
        # float32 state: computed in float64, rounded on storing (a fleet keeps one per series)
        self.count = np.zeros(h, dtype=np.int32)
        self.table = np.zeros((2, h), dtype=np.float32)
        self.abs_snaive, self.abs_model = self.table  # row views
        self.means = np.zeros(3, dtype=np.float32)
        self.coverage = np.zeros(self.n_levels, dtype=np.float32)

    def update(
        self,
        k: int,
        err: np.ndarray,
        model_err: np.ndarray,
        smape: np.ndarray,
        naive_err: np.ndarray,
        snaive_err: float | np.ndarray,
        seasonal: bool,
        covered: np.ndarray | None,
    ) -> None:
        """Record the errors of steps 1..k for one new truth."""
        self.count[:k] += 1
        self.seasonal_count += seasonal
        rate = np.maximum(1.0 / self.count[:k], 1.0 / self.window)
        new = np.empty((2, k))  # in the table's row order
        new[0] = snaive_err
        new[1] = np.abs(model_err)
        stats = self.table[:, :k]
        stats += rate * (new - stats)
        # means over steps 1..k, summed over all `horizon` places (zeros beyond k) as the
        # bank sums them, so that both round alike
        scored = np.zeros((3, self.horizon))
        scored[0, :k] = np.abs(err)
        scored[1, :k] = smape
        scored[2, :k] = naive_err
        step_means = np.add.reduce(scored, axis=1) / k
        self.means += max(1.0 / self.count[0], 1.0 / self.window) * (step_means - self.means)
        if covered is not None:
            self.cov_count += 1
            shares = np.zeros((self.horizon, self.n_levels))
            shares[:k] = covered
            share = np.add.reduce(shares, axis=0) / k
            self.coverage += max(1.0 / self.cov_count, 1.0 / self.window) * (share - self.coverage)

    @property
    def nbytes(self) -> int:
        return sum(a.nbytes for a in (self.count, self.table, self.means, self.coverage))


class IntervalForecaster:
    """Online multi-step forecaster of one series with conformal prediction intervals.

    Args:
        horizon: default number of steps to forecast (and steps tracked for errors/bands).
        levels: nominal coverage levels of the intervals.
        season_length: seasonal period in samples; None detects it, 0 disables seasonality.
        step_seconds: sampling interval; None infers it from the timestamps passed to
            `learn_one` (falling back to `default_step_seconds` when none are given).
        candidate_periods: seasonal periods (seconds) tried by the detector.
        max_period_samples: candidate periods longer than this many samples are not tried;
            the default 2,880 tracks a daily season at sampling intervals of 30 s and longer.
        seasonal_slots: values the seasonal-naive reference keeps per period. A longer period
            keeps means of consecutive samples instead (`seasonal_block`): with the default
            288 and a daily period, one value per 5 minutes, so one sample a minute costs 290
            two-byte values instead of 1,441. At 5-minute samples and slower it is exact.
        alpha, beta, gamma, phi: level, trend, seasonal smoothing and trend damping.
        season_knots: points of the seasonal curve per period (`SeasonalCurve`); a period
            of at most this many samples has one value per phase.
        symmetric: symmetric bands from |errors|, else separate lower/upper error quantiles.
        band_rate: how far a band moves after each error, as a share of its width (of the
            step's mean absolute error when narrower): quantile tracking, where larger adapts
            faster and jitters more (`ConformalBands`).
        band_window: effective window (samples) of each step's mean absolute error.
        accuracy_window: effective window (samples) of the rolling accuracy figures.
        clip_scales: innovations beyond this many robust scales are clipped for learning.
        switch_ratio: per step, forecast seasonal-naive instead when its rolling MAE is below
            this fraction of the model's (0 disables the switch).
    """

    __slots__ = (
        "_accuracy",
        "_damp",
        "_detector",
        "_detector_origin",
        "_diffs",
        "_n_diffs",
        "_step_estimate",
        "_history",
        "_history_block",
        "_history_exp",
        "_history_sum",
        "_level",
        "_pending",
        "_pending_exp",
        "_pending_model",
        "_period",
        "_scale",
        "_season",
        "_trend",
        "alpha",
        "bands",
        "beta",
        "candidate_periods",
        "clip_scales",
        "max_period_samples",
        "default_step_seconds",
        "detect_threshold",
        "gamma",
        "horizon",
        "last_ts",
        "levels",
        "n",
        "phi",
        "season_knots",
        "season_length",
        "seasonal_slots",
        "step_seconds",
        "switch_ratio",
    )

    def __init__(
        self,
        horizon: int = 12,
        levels: Sequence[float] = (0.8, 0.95),
        season_length: int | None = None,
        *,
        step_seconds: float | None = None,
        default_step_seconds: float = 300.0,
        candidate_periods: Sequence[float] = (DAY_SECONDS,),
        max_period_samples: int = 2880,
        seasonal_slots: int = 288,
        detect_threshold: float = 0.3,
        alpha: float = 0.1,
        beta: float = 0.003,
        gamma: float = 0.05,
        phi: float = 0.9,
        season_knots: int = KNOTS,
        symmetric: bool = True,
        band_rate: float = 0.1,
        band_window: int = 30,
        accuracy_window: int = 288,
        clip_scales: float = 4.0,
        switch_ratio: float = 0.9,
    ) -> None:
        if horizon < 1:
            raise ValueError("horizon must be >= 1")
        self.horizon = horizon
        self.levels = tuple(sorted(levels))
        self.season_length = season_length
        self.step_seconds = step_seconds
        self.default_step_seconds = default_step_seconds
        self.candidate_periods = tuple(candidate_periods)
        self.max_period_samples = max_period_samples
        if seasonal_slots < 1:
            raise ValueError("seasonal_slots must be >= 1")
        self.seasonal_slots = seasonal_slots
        self.detect_threshold = detect_threshold
        self.alpha, self.beta, self.gamma, self.phi = alpha, beta, gamma, phi
        self.season_knots = season_knots
        self.clip_scales = clip_scales
        self.switch_ratio = switch_ratio

        self.n = 0
        self.last_ts: float | None = None
        # ring of recent regular sampling intervals (float32: seconds to 7 digits)
        self._diffs = np.zeros(9, dtype=np.float32)
        self._n_diffs = 0
        self._step_estimate = 0.0  # median of the ring, refreshed as it fills and cycles
        self._level = 0.0
        self._trend = 0.0
        self._scale = 0.0  # EW mean |one-step innovation|
        self._period = season_length if season_length else None
        self._season: SeasonalCurve | None = (
            SeasonalCurve(self._period, season_knots) if self._period else None
        )
        self._detector: SeasonalityDetector | None = None
        self._detector_origin = 0  # sample index the detector's phase 0 refers to
        # The history holds float16 codes of values / 2**_history_exp: first a ring of the
        # last horizon + 1 samples (the naive reference), then one of the seasonal-naive
        # reference's values, each the mean of _history_block consecutive samples (one slot,
        # unused, until there is a seasonal lag). _history_sum: the sum of the samples of
        # the block being filled.
        self._history = np.zeros(horizon + 2, dtype=np.float16)
        self._history_exp = 0
        self._history_block = 1
        self._history_sum = 0.0
        if self._period:
            self._start_seasonal_history(self._period)
        # forecasts waiting for their truth, as float16 codes under 2**_pending_exp (rounded
        # to 2**-11 of each, far below any error they are scored for)
        triangle = horizon * (horizon + 1) // 2  # see pending_layout
        self._pending = np.zeros(triangle, dtype=np.float16)  # issued forecasts
        self._pending_model = np.zeros(triangle, dtype=np.float16)  # ETS alone
        self._pending_exp = 0
        self._damp = np.cumsum(phi ** np.arange(1, horizon + 1))
        self.bands = ConformalBands(horizon, self.levels, symmetric, band_rate, band_window)
        self._accuracy = _Accuracy(horizon, len(self.levels), accuracy_window)

    # ------------------------------------------------------------------ properties
    @property
    def period(self) -> int | None:
        """Seasonal period in samples currently used (None when non-seasonal)."""
        return self._period

    @property
    def model_name(self) -> str:
        season = f"seasonal[{self._period}]" if self._period else "nonseasonal"
        switch = "+snaive" if self._snaive_steps().any() else ""
        return f"ets-damped-{season}{switch}+conformal"

    @property
    def interval_seconds(self) -> float:
        """Sampling interval in seconds (configured, inferred or default)."""
        if self.step_seconds:
            return float(self.step_seconds)
        if self._n_diffs:
            return self._step_estimate
        return self.default_step_seconds

    # ------------------------------------------------------------------ learning
    def learn_one(self, y: float, ts: float | None = None) -> IntervalForecaster:
        """Learn the next sample. Samples at or before the last ts are ignored; when a gap in
        `ts` shows missed samples, they are filled with the model's own one-step forecasts so
        that the seasonal phase stays aligned with time."""
        y = float(y)
        if not math.isfinite(y):
            return self
        if ts is not None:
            if self.last_ts is not None:
                if ts <= self.last_ts:
                    return self
                missing = self._missing_samples(ts - self.last_ts)
                if missing:
                    self._fill_gap(missing)
                else:
                    self._diffs[self._n_diffs % self._diffs.size] = ts - self.last_ts
                    self._n_diffs += 1
                    if self._n_diffs <= self._diffs.size or self._n_diffs % self._diffs.size == 0:
                        filled = self._diffs[: min(self._n_diffs, self._diffs.size)]
                        self._step_estimate = float(np.median(filled))
            self.last_ts = ts
        if self.n > 0:
            self._score_pending(y)
        self._update_state(y)
        self._update_seasonality(y)
        self._advance(y)
        return self

    def _advance(self, y: float) -> None:
        """Store the sample, move the clock on, and record the forecasts issued now."""
        code, self._history_exp = half_history.code_for(self._history, self._history_exp, y)
        recent = self.horizon + 1
        self._history[self.n % recent] = code
        block = self._history_block
        within = self.n % block
        self._history_sum = y if within == 0 else self._history_sum + y
        slot = recent + (self.n // block) % (self._history.size - recent)
        self._history[slot] = half_history.encode(
            self._history_sum / (within + 1), self._history_exp
        )
        self.n += 1
        if self.season_length and self.n == self.season_length:
            self._init_season_from_first_period()
        model_path = self._path(self.horizon)
        steps, starts = pending_layout(self.horizon)
        slots = starts + (self.n - 1) % steps  # issued after the sample of index n - 1
        codes, self._pending_exp = half_history.codes_for(
            (self._pending, self._pending_model),
            self._pending_exp,
            np.stack((self._combine(model_path), model_path)),
        )
        self._pending[slots], self._pending_model[slots] = codes

    def _missing_samples(self, diff: float) -> int:
        """Samples skipped in a gap of `diff` seconds (0 while the interval is unknown)."""
        if not self.step_seconds and self._n_diffs < 3:
            return 0
        missing = int(round(diff / self.interval_seconds)) - 1
        if missing <= 0:
            return 0
        if self._period:
            return missing % self._period if missing >= self._period else missing
        return min(missing, self.horizon)

    def _fill_gap(self, missing: int) -> None:
        for _ in range(missing):
            if self.n == 0:
                return
            guess = float(self._path(1)[0])
            self._level += self.phi * self._trend
            self._trend *= self.phi
            self._update_seasonality(guess)
            self._advance(guess)

    def _score_pending(self, y: float) -> None:
        """Compare the forecasts made 1..H steps ago for this sample with the truth."""
        k = min(self.horizon, self.n)
        steps, starts = pending_layout(self.horizon)
        steps = steps[:k]
        slots = starts[:k] + self.n % steps
        origins = self.n - steps  # sample index each forecast was issued after
        forecasts = half_history.decode(self._pending[slots], self._pending_exp)
        err = y - forecasts
        model_err = y - half_history.decode(self._pending_model[slots], self._pending_exp)
        covered = self.bands.update_many(err)
        denom = np.abs(y) + np.abs(forecasts)
        smape = np.where(denom > 0, 200.0 * np.abs(err) / np.where(denom > 0, denom, 1.0), 0.0)
        naive = self._recent_past(origins)
        naive_err = np.abs(y - naive)
        lag = self._snaive_lag
        seasonal = bool(lag and self.n >= lag)
        # no seasonal lag yet: seasonal-naive is the naive forecast
        snaive_err = abs(y - float(self._seasonal_past(self.n - lag))) if seasonal else naive_err
        self._accuracy.update(k, err, model_err, smape, naive_err, snaive_err, seasonal, covered)

    def _update_state(self, y: float) -> None:
        if self.n == 0:
            self._level = y
            return
        seasonal = self._season.value(self.n % self._period) if self._season is not None else 0.0
        err = y - (self._level + self.phi * self._trend + seasonal)
        if self.n < 3:
            self._scale = abs(err) if self.n == 1 else 0.5 * (self._scale + abs(err))
        limit = self.clip_scales * MAE_TO_SIGMA * self._scale
        learn_err = max(-limit, min(limit, err)) if self.n > 20 and limit > 0 else err
        self._scale += (0.05 if self.n > 20 else 0.2) * (abs(err) - self._scale)
        self._level = self._level + self.phi * self._trend + self.alpha * learn_err
        self._trend = self.phi * self._trend + self.beta * learn_err
        if self._season is not None:
            self._season.learn(self.n % self._period, self.gamma * learn_err)

    def _update_seasonality(self, y: float) -> None:
        if self.season_length is not None:
            return
        if self._detector is None:
            if not self.step_seconds and self._n_diffs < 3 and self.last_ts is not None:
                return  # wait until the sampling interval is known
            step = self.interval_seconds
            lags = [int(round(p / step)) for p in self.candidate_periods]
            lags = [lag for lag in lags if 4 <= lag <= self.max_period_samples]
            if not lags:
                self.season_length = 0
                return
            self._detector = SeasonalityDetector(lags, threshold=self.detect_threshold)
            self._detector_origin = self.n
            self._start_seasonal_history(max(lags))
        if self._detector.learn_one(y):
            self._set_period(self._detector.period)

    def _init_season_from_first_period(self) -> None:
        """Classical start for a given period: first period's deviations from its mean."""
        m = self.season_length
        first = self._seasonal_past(np.arange(m))
        self._season = SeasonalCurve.fit(first - first.mean(), self.season_knots)
        self._level = float(first.mean())
        self._trend = 0.0

    def _start_seasonal_history(self, lag: int, past: np.ndarray | None = None) -> None:
        """Make room for a seasonal-naive reference of lags up to `lag`, filled from `past`
        (the values of the last samples, oldest first), by default the recent ring's."""
        recent = self.horizon + 1
        if past is None:
            past = self._recent_past(np.arange(max(0, self.n - recent), self.n))
        block = seasonal_block(lag, self.seasonal_slots)
        slots = lag // block + 2  # blocks from n - lag to the one being filled
        history = np.zeros(recent + slots, dtype=np.float16)
        history[:recent] = self._history[:recent]
        self._history, self._history_block = history, block
        first = self.n - past.size
        for start in range(first - first % block, self.n, block):
            values = past[max(start, first) - first : start + block - first]
            mean = float(values.mean())
            history[recent + (start // block) % slots] = half_history.encode(
                mean, self._history_exp
            )
            # the block being filled: samples missing from its start count at the mean
            self._history_sum = mean * (self.n - start)

    def _set_period(self, period: int | None) -> None:
        self._period = period
        self._season = detected_season(
            self._detector, self._detector_origin, period, self.season_knots
        )

    # ------------------------------------------------------------------ forecasting
    def _path(self, horizon: int) -> np.ndarray:
        steps = np.arange(1, horizon + 1)
        if horizon <= self.horizon:
            damp = self._damp[:horizon]
        else:
            damp = np.cumsum(self.phi ** steps.astype(np.float64))
        path = self._level + damp * self._trend
        if self._season is not None:
            path = path + self._season.path((self.n - 1 + steps) % self._period)
        return path

    @property
    def _snaive_lag(self) -> int | None:
        """Lag of the seasonal-naive reference: the period, else the daily candidate lag."""
        if self._period:
            return self._period
        if self._detector is not None:
            return self._detector.candidate_lags[0]
        return None

    def _snaive_steps(self) -> np.ndarray:
        """Steps where the seasonal-naive forecast has lately beaten the model clearly."""
        acc = self._accuracy
        lag = self._snaive_lag
        if not lag or self.n < lag or acc.seasonal_count < acc.window:
            return np.zeros(self.horizon, dtype=bool)
        better = acc.abs_snaive < self.switch_ratio * acc.abs_model
        return better & (np.arange(1, self.horizon + 1) <= lag)

    def _combine(self, model_path: np.ndarray) -> np.ndarray:
        """Per step, the model's forecast or, where it has done clearly better, seasonal-naive."""
        use = self._snaive_steps()
        if not use.any():
            return model_path
        path = model_path.copy()
        steps = np.flatnonzero(use[: path.size]) + 1
        lag = self._snaive_lag
        path[steps - 1] = self._seasonal_past(self.n - 1 + steps - lag)
        return path

    def _recent_past(self, index: int | np.ndarray) -> np.ndarray:
        """The samples of these indices (the last horizon + 1 at most), as float64."""
        slots = np.asarray(index) % (self.horizon + 1)
        return half_history.decode(self._history[slots], self._history_exp)

    def _seasonal_past(self, index: int | np.ndarray) -> np.ndarray:
        """The seasonal-naive reference's values for these sample indices (within the
        longest lag), as float64: each the mean of its block of samples (of those seen so
        far, for the block being filled)."""
        recent = self.horizon + 1
        blocks = np.asarray(index) // self._history_block
        slots = recent + blocks % (self._history.size - recent)
        return half_history.decode(self._history[slots], self._history_exp)

    def forecast(self, horizon: int | None = None) -> list[ForecastPoint]:
        """Point forecasts and per-level bounds for the next `horizon` samples."""
        horizon = horizon or self.horizon
        if self.n == 0:
            return []
        path, lower, upper = self.forecast_arrays(horizon)
        return [
            ForecastPoint(
                h,
                yhat,
                dict(zip(self.levels, low, strict=True)),
                dict(zip(self.levels, high, strict=True)),
                ts,
            )
            for h, yhat, low, high, ts in zip(
                range(1, horizon + 1),
                path.tolist(),
                lower.tolist(),
                upper.tolist(),
                self._step_times(horizon),
                strict=True,
            )
        ]

    def forecast_arrays(self, horizon: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """The forecast as arrays: point path (horizon,), lower and upper (horizon, levels)."""
        path = self._combine(self._path(horizon))
        widths = self._band_widths(horizon)
        return path, path[:, None] - widths[:, :, 0], path[:, None] + widths[:, :, 1]

    def _step_times(self, horizon: int) -> list[float | None]:
        if self.last_ts is None:
            return [None] * horizon
        step_s = self.interval_seconds
        return [self.last_ts + h * step_s for h in range(1, horizon + 1)]

    def _band_widths(self, horizon: int) -> np.ndarray:
        """(below, above) distances per step and level, shape (horizon, levels, 2).

        Steps with a band take its conformal widths (widened by
        sqrt(h / horizon) beyond the tracked horizon); the others a normal band from the
        one-step error scale."""
        ready = self.bands.ready_steps()
        if horizon == self.horizon and ready.all():  # the usual case: the cached widths
            return self.bands.widths.copy()
        steps = np.minimum(np.arange(1, horizon + 1), self.horizon) - 1
        widths = self.bands.widths[steps]  # a copy (fancy indexing)
        if horizon > self.horizon:
            beyond = np.arange(self.horizon + 1, horizon + 1)
            widths[self.horizon :] *= np.sqrt(beyond / self.horizon)[:, None, None]
        not_ready = np.flatnonzero(~ready[steps])
        if not_ready.size:
            z_scores = _normal_quantiles(self.levels)
            for i in not_ready.tolist():
                sigma = MAE_TO_SIGMA * self._scale * math.sqrt(i + 1)
                widths[i] = [(z * sigma, z * sigma) for z in z_scores]
        return widths

    # ------------------------------------------------------------------ accuracy
    def accuracy(self) -> dict:
        """Rolling accuracy over the recent `accuracy_window` samples (averaged over steps)."""
        acc = self._accuracy
        seen = int(np.count_nonzero(acc.count))  # steps 1..seen have errors
        if not seen:
            return {"n": 0}
        mae, smape, naive = acc.means.tolist()
        # sum / count: what mean() computes, without its per-call overhead
        snaive = float(np.add.reduce(acc.abs_snaive[:seen], dtype=np.float64) / seen)
        out = {
            "n": int(acc.count[0]),
            "mae": mae,
            "smape": smape,
            "mase": mae / snaive if snaive > 0 else None,
            "mase_naive": mae / naive if naive > 0 else None,
        }
        if acc.cov_count:
            shares = acc.coverage.tolist()
            out["coverage"] = {level_key(lv): m for lv, m in zip(self.levels, shares, strict=True)}
        return out

    # ------------------------------------------------------------------ state
    def dump(self) -> bytes:
        """Everything the forecaster has learnt, as bytes (`load` with the same arguments
        gives a forecaster that forecasts and learns on exactly as this one)."""
        b, a, d = self.bands, self._accuracy, self._detector
        scalars = {
            "n": int(self.n),
            "last_ts": None if self.last_ts is None else float(self.last_ts),
            "n_diffs": int(self._n_diffs),
            "step_estimate": float(self._step_estimate),
            "level": float(self._level),
            "trend": float(self._trend),
            "scale": float(self._scale),
            "period": _optional_int(self._period),
            "season_length": _optional_int(self.season_length),
            "detector_origin": int(self._detector_origin),
            "history_size": int(self._history.size),
            "history_exp": int(self._history_exp),
            "history_block": int(self._history_block),
            "history_sum": float(self._history_sum),
            "pending_exp": int(self._pending_exp),
            "bands_started": int(b._started),
            "seasonal_count": int(a.seasonal_count),
            "cov_count": int(a.cov_count),
        }
        arrays = {**self._fixed_shape_state(), "history": self._history}
        if self._season is not None:
            arrays["season"] = self._season.values
        if d is not None:
            scalars["detector"] = {
                "lags": list(d.candidate_lags),
                "period": _optional_int(d.period),
                "blocks": int(d._blocks),
                "acc": float(d._acc),
                "acc_n": int(d._acc_n),
                "exp": int(d._exp),
            }
            arrays["detector_buffer"] = d._buffer[: min(d._blocks, d.capacity)]
        return array_state.pack(scalars, arrays)

    def _fixed_shape_state(self) -> dict[str, np.ndarray]:
        """The state arrays whose shapes the forecaster's arguments fix."""
        b, a = self.bands, self._accuracy
        return {
            "diffs": self._diffs,
            "pending": self._pending,
            "pending_model": self._pending_model,
            "error_count": b._count,
            "band_scale": b._scale,
            "widths": b._widths,
            "acc_count": a.count,
            "acc_table": a.table,
            "acc_means": a.means,
            "coverage": a.coverage,
        }

    @classmethod
    def load(cls, data: bytes, **args: object) -> IntervalForecaster:
        """A forecaster made with `args` holding the state `dump` wrote; ValueError when the
        state does not fit them (another horizon or levels, or an older state format)."""
        s, arrays = array_state.unpack(data)
        try:
            return cls._from_state(s, arrays, args)
        except (KeyError, TypeError) as exc:
            raise ValueError(f"not a forecaster state: missing or wrong {exc}") from exc

    @classmethod
    def _from_state(
        cls, s: dict, arrays: dict[str, np.ndarray], args: dict[str, object]
    ) -> IntervalForecaster:
        f = cls(**args)  # type: ignore[arg-type]
        b, a = f.bands, f._accuracy
        if "band_scale" not in arrays and "errors" in arrays:
            _upgrade_bands(s, arrays, b.warmup)
        if "pending" in arrays and arrays["pending"].ndim == 2:
            _upgrade_pending(s, arrays, f.horizon)
        if "pending_exp" not in s:  # written when pending forecasts were float32
            _code_pending(s, arrays)
        elif any(arrays[name].dtype != np.float16 for name in ("pending", "pending_model")):
            raise ValueError("forecaster state does not fit this configuration (pending)")
        if "acc_means" not in arrays:  # written when every figure was kept per step
            _upgrade_accuracy(s, arrays)
        fixed = f._fixed_shape_state()
        for name, template in fixed.items():
            got = arrays.get(name)
            if got is None or got.shape != template.shape:
                raise ValueError(f"forecaster state does not fit this configuration ({name})")
        f.n = int(s["n"])
        f.last_ts = s["last_ts"]
        f._n_diffs = int(s["n_diffs"])
        f._step_estimate = float(s["step_estimate"])
        f._level, f._trend, f._scale = float(s["level"]), float(s["trend"]), float(s["scale"])
        f._period = s["period"]
        f.season_length = s["season_length"]
        f._detector_origin = int(s["detector_origin"])
        f._pending_exp = int(s["pending_exp"])
        for name, target in fixed.items():  # in place: views of them (accuracy rows) hold
            target[...] = arrays[name]
        if "season" in arrays:
            season = arrays["season"]
            if not f._period:
                raise ValueError("forecaster state does not fit this configuration (season)")
            if season.shape == (f._period,) and f._period > f.season_knots:  # one per phase
                f._season = SeasonalCurve.fit(season, f.season_knots)  # written before curves
            else:
                f._season = SeasonalCurve(f._period, f.season_knots, season)
        else:
            f._season = None
        b._started = int(s["bands_started"])
        a.seasonal_count = int(s["seasonal_count"])
        a.cov_count = int(s["cov_count"])
        d = s.get("detector")
        if d is not None:
            detector = SeasonalityDetector(d["lags"], threshold=f.detect_threshold)
            buffer = arrays["detector_buffer"]
            if buffer.ndim != 1 or buffer.size > detector.capacity:
                raise ValueError("forecaster state does not fit this configuration (detector)")
            if "exp" in d:
                detector._buffer[: buffer.size] = buffer
                detector._exp = int(d["exp"])
            else:  # written when the buffer held block means as float32
                codes, detector._exp = half_history.encode_fitted(buffer)
                detector._buffer[: buffer.size] = codes
            detector.period = d["period"]
            detector._blocks = int(d["blocks"])
            detector._acc = float(d["acc"])
            detector._acc_n = int(d["acc_n"])
            f._detector = detector
        if "history_block" in s:
            history = arrays["history"]
            if (
                history.dtype != np.float16
                or history.shape != (int(s["history_size"]),)
                or history.size < f.horizon + 2
                or int(s["history_block"]) < 1
            ):
                raise ValueError("forecaster state does not fit this configuration (history)")
            f._history, f._history_exp = history.copy(), int(s["history_exp"])
            f._history_block, f._history_sum = int(s["history_block"]), float(s["history_sum"])
        else:
            _upgrade_history(f, s, arrays["history"])
        return f

    @property
    def nbytes(self) -> int:
        """Bytes held in numpy buffers (excludes fixed Python object overhead)."""
        total = self._history.nbytes + self._pending.nbytes + self._pending_model.nbytes
        total += self._damp.nbytes
        total += self.bands.nbytes + self._accuracy.nbytes
        if self._season is not None:
            total += self._season.nbytes
        if self._detector is not None:
            total += self._detector.nbytes
        return int(total)


def _upgrade_bands(scalars: dict, arrays: dict[str, np.ndarray], warmup: int) -> None:
    """Bring a state written when bands were quantiles of a window of past errors to the
    tracked form, in place: each step's error scale is the mean |error| of its window, its
    band the widths it had (none below `warmup` errors), so a rolling upgrade keeps every VM's
    forecasts and bands."""
    errors = arrays.pop("errors")
    arrays.pop("alpha", None)
    count, widths = arrays["error_count"], arrays["widths"]
    steps = count.size  # every per-step array must have one row per horizon step
    if (
        count.ndim != 1
        or errors.ndim != 2
        or widths.ndim == 0
        or errors.shape[0] != steps
        or widths.shape[0] != steps
    ):
        raise ValueError("forecaster state does not fit this configuration (errors)")
    filled = np.minimum(count, errors.shape[1])
    kept = np.arange(errors.shape[1])[None, :] < filled[:, None]
    total = np.where(kept, np.abs(errors.astype(np.float64)), 0.0).sum(axis=1)
    arrays["band_scale"] = total / np.maximum(filled, 1)
    widths = widths.copy()
    widths[count < warmup] = np.nan
    arrays["widths"] = widths
    scalars["bands_started"] = 0  # counted again from the steps' bands


def _upgrade_accuracy(scalars: dict, arrays: dict[str, np.ndarray]) -> None:
    """Bring a state written when all five error statistics and the coverage were kept per
    step to the current form, in place: the figures averaged over steps become the means, so
    the upgraded forecaster publishes the same figures (to float32)."""
    table, count = arrays["acc_table"], arrays["acc_count"]
    coverage, cov_count = arrays["coverage"], arrays.pop("cov_count")
    if table.ndim != 2 or table.shape[0] != 5 or coverage.ndim != 2 or cov_count.ndim != 1:
        raise ValueError("forecaster state does not fit this configuration (accuracy)")
    seen = int(np.count_nonzero(count))
    covered = int(np.count_nonzero(cov_count))
    # the old rows: |error|, sMAPE, |seasonal-naive error|, |naive error|, |model error|
    means = np.add.reduce(table[[0, 1, 3], :seen], axis=1, dtype=np.float64) / max(1, seen)
    shares = np.add.reduce(coverage[:covered], axis=0, dtype=np.float64) / max(1, covered)
    arrays["acc_means"] = means.astype(np.float32)
    arrays["acc_table"] = table[[2, 4]]
    arrays["coverage"] = shares.astype(np.float32)
    scalars["cov_count"] = int(cov_count[0])  # step 1 is scored with every truth


def _upgrade_pending(scalars: dict, arrays: dict[str, np.ndarray], horizon: int) -> None:
    """Bring the pending forecasts of a state written as a table of origins (ring rows) by
    steps to the triangle of `pending_layout`, in place: each forecast still waiting for its
    truth moves to its step's ring."""
    n = int(scalars["n"])
    steps, starts = pending_layout(horizon)
    for name in ("pending", "pending_model"):
        table = arrays[name]
        if table.shape != (horizon, horizon):
            raise ValueError(f"forecaster state does not fit this configuration ({name})")
        triangle = np.zeros(horizon * (horizon + 1) // 2, dtype=np.float32)
        for s in steps.tolist():
            for origin in range(max(0, n - s), n):  # its truth, sample origin + s, not yet seen
                triangle[starts[s - 1] + origin % s] = table[origin % horizon, s - 1]
        arrays[name] = triangle


def _code_pending(scalars: dict, arrays: dict[str, np.ndarray]) -> None:
    """Bring float32 pending forecasts (states written before they were coded) to float16
    codes under one fitted exponent, in place."""
    issued, model = arrays.get("pending"), arrays.get("pending_model")
    if issued is None or model is None or issued.shape != model.shape:
        raise ValueError("forecaster state does not fit this configuration (pending)")
    codes, scalars["pending_exp"] = half_history.encode_fitted(np.stack((issued, model)))
    arrays["pending"], arrays["pending_model"] = codes


def _upgrade_history(f: IntervalForecaster, scalars: dict, stored: np.ndarray) -> None:
    """Fill `f`'s history from a state written when it was one ring of every sample of the
    longest lag (sample i at i % size, float16 codes; float32 values before that): its last
    samples go to the recent ring, and the seasonal-naive reference is rebuilt from them."""
    size = int(scalars["history_size"])
    if stored.ndim != 1 or stored.size > size:
        raise ValueError("forecaster state does not fit this configuration (history)")
    if stored.dtype == np.float16:
        f._history_exp = int(scalars["history_exp"])
        values = half_history.decode(stored, f._history_exp)
    else:
        values = stored.astype(np.float64)
        _, f._history_exp = half_history.encode_fitted(values)
    ring = np.zeros(size)
    ring[: values.size] = values
    past = ring[np.arange(max(0, f.n - size), f.n) % size]  # oldest first
    recent = f.horizon + 1
    kept = np.arange(max(0, f.n - recent), f.n)
    f._history[kept % recent] = half_history.encode(past[past.size - kept.size :], f._history_exp)
    lags = list(f._detector.candidate_lags) if f._detector is not None else []
    lag = max(lags + [f.season_length or 0])
    if lag > 0:
        f._start_seasonal_history(lag, past)


def _optional_int(value: object) -> int | None:
    return None if value is None else int(value)  # type: ignore[call-overload]


def detected_season(
    detector: SeasonalityDetector, origin: int, period: int | None, knots: int
) -> SeasonalCurve | None:
    """The seasonal curve closest to the detector's profile for `period`, re-phased so that
    phase 0 is the model's sample 0 (the detector's phase 0 is the sample it started at,
    `origin`); None without a period."""
    if not period:
        return None
    return SeasonalCurve.fit(np.roll(detector.profile(period), origin % period), knots)


@cache
def _point_maker(keys: tuple[str, ...]) -> Callable[..., dict]:
    """`make(step, ts, yhat, lower, upper)` -> one point dict with flat per-level bounds.

    The bound names are written into the function as literal keys: building the dict in one
    expression is several times faster than filling it name by name, and a fleet's forecast
    messages carry millions of points.
    """
    bounds = ", ".join(
        f"{f'lower_{key}'!r}: lo[{i}], {f'upper_{key}'!r}: hi[{i}]" for i, key in enumerate(keys)
    )
    source = f"lambda step, ts, yhat, lo, hi: {{'step': step, 'ts': ts, 'yhat': yhat, {bounds}}}"
    return eval(source, {})  # keys are level_key() strings, quoted by repr above


def forecast_points(
    path: list[float],
    lower: list[list[float]],
    upper: list[list[float]],
    times: list[float | None],
    keys: Sequence[str],
) -> list[dict]:
    """A message's points: step, ts, yhat and flat per-level bounds (`lower_80`, ...)."""
    make = _point_maker(tuple(keys))
    rows = zip(range(1, len(path) + 1), times, path, lower, upper, strict=True)
    return [make(step, ts, yhat, lo, hi) for step, ts, yhat, lo, hi in rows]


def forecast_message(
    vm_id: str,
    metric: str,
    forecaster: IntervalForecaster,
    issued_at: float | None = None,
    horizon: int | None = None,
) -> dict:
    """JSON-ready forecast message for one VM metric.

    Each point carries `yhat` and flat per-level bounds (`lower_80`, `upper_80`, `lower_95`, ...);
    `ts` is the last observed ts plus `step` sampling intervals.
    """
    horizon = horizon or forecaster.horizon
    keys = [level_key(lvl) for lvl in forecaster.levels]
    points = []
    if forecaster.n:
        path, lower, upper = forecaster.forecast_arrays(horizon)
        times = forecaster._step_times(horizon)
        points = forecast_points(path.tolist(), lower.tolist(), upper.tolist(), times, keys)
    return {
        "vm_id": vm_id,
        "metric": metric,
        "issued_at": issued_at if issued_at is not None else forecaster.last_ts,
        "model": forecaster.model_name,
        "period": forecaster.period,
        "step_seconds": forecaster.interval_seconds,
        "levels": keys,
        "points": points,
        "accuracy": forecaster.accuracy(),
    }
