"""Many `IntervalForecaster`s as rows of shared arrays, stepped together.

A fleet's VMs close their windows together, and each forecaster's update is a few dozen numpy
operations on arrays of `horizon` elements. The bank keeps every forecaster's state as one row
of a set of arrays, so one window of a whole fleet costs those few dozen operations once, over
all the rows it touches, instead of once per forecaster. The forecasts and messages are
identical, bit for bit, to those of one `IntervalForecaster` per series.

A row's first sample and every next one at its regular interval take the vectorised path.
The rest is rare — a gap to fill, a late, untimed or non-finite sample, the start of the
seasonal detector, the first season of a given period: such a row is checked out as an
`IntervalForecaster`, learns there, and is written back.

A row's seasonality detector is kept in the arrays too (its block means, their scale and
its counters), not as an object: about half the memory, and its samples are summed for all
rows at once. The rare re-check of a detector's period works on a `SeasonalityDetector`
made from the row.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterator, Sequence
from typing import Any

import numpy as np

from models import half_history
from models.conformal import MAE_TO_SIGMA
from models.forecasting import (
    IntervalForecaster,
    _normal_quantiles,
    detected_season,
    forecast_points,
    level_key,
    pending_layout,
)
from models.seasonal_curve import SeasonalCurve, knot_map
from models.seasonality import SeasonalityDetector

_DIFFS = 9  # ring of recent sampling intervals, as in IntervalForecaster
_NONE = -1  # season_length "None" (detect the period)


class ForecasterBank:
    """Forecasters of many series, one row each; same arguments as `IntervalForecaster`."""

    def __init__(self, capacity: int = 64, **forecaster_args: Any) -> None:
        self._args = forecaster_args
        template = IntervalForecaster(**forecaster_args)
        self._template = template
        self.horizon = h = template.horizon
        self.levels = template.levels
        self._n_levels = len(self.levels)
        self._bands = template.bands  # its settings: rate, warmup, targets, start widths
        self._sides = 1 if self._bands.symmetric else 2
        self._acc_window = template._accuracy.window
        self._damp = template._damp
        self._steps, self._starts = pending_layout(h)
        self._keys = [level_key(lvl) for lvl in self.levels]
        self._free: list[int] = []
        self._size = 0  # rows handed out so far (free ones included)
        self._capacity = 0
        # rows of these fields are as wide as the widest row needs (they grow)
        self._row_widths = {"history": template._history.size, "det_buffer": 1}
        # the detector settings rows use (one per distinct candidate lags), and per setting
        # its block, buffer size, re-check interval (in blocks) and daily lag, as arrays
        self._detector_kinds: list[SeasonalityDetector] = []
        self._kind_index: dict[tuple[tuple[int, ...], float], int] = {}
        self._kind_block = self._kind_capacity = self._kind_recheck = self._kind_lag = np.zeros(
            0, dtype=np.int64
        )
        self._recent = h + 1  # the history's ring of recent samples, then its seasonal one
        self._knots = template.season_knots
        self._grow(max(1, capacity))

    # ------------------------------------------------------------------ rows
    def _fields(self) -> dict[str, tuple[tuple[int, ...], type]]:
        """Per-row arrays: name -> (shape of a row, dtype). Counts, indices and exponents are
        int32: a series of one sample a second passes 2**31 samples after 68 years."""
        h, lv = self.horizon, self._n_levels
        return {
            "n": ((), np.int32),
            "last_ts": ((), np.float64),  # NaN: none yet
            "n_diffs": ((), np.int32),
            "step_estimate": ((), np.float64),
            "diffs": ((_DIFFS,), np.float32),
            "level": ((), np.float64),
            "trend": ((), np.float64),
            "scale": ((), np.float64),
            "periods": ((), np.int32),  # 0: non-seasonal
            # the seasonal curve's knots (SeasonalCurve.values; the first min(period, knots))
            "season": ((self._knots,), np.float32),
            "season_length": ((), np.int32),  # _NONE: detect the period
            "detector_origin": ((), np.int32),
            "history_size": ((), np.int32),  # seasonal-naive slots (after the recent ring)
            "history": ((self._row_widths["history"],), np.float16),  # codes (half_history)
            "history_exp": ((), np.int32),
            "history_block": ((), np.int32),
            "history_sum": ((), np.float64),
            "pending": ((h * (h + 1) // 2,), np.float16),  # triangles, see pending_layout
            "pending_model": ((h * (h + 1) // 2,), np.float16),
            "pending_exp": ((), np.int32),
            "error_count": ((h,), np.int32),
            "band_scale": ((h,), np.float32),
            # (below, above) band widths; symmetric bands keep one side (the two are equal)
            "widths": ((h, lv, self._sides), np.float32),
            "started": ((), np.int32),
            "acc_count": ((h,), np.int32),
            "acc_table": ((2, h), np.float32),  # per step: |snaive error|, |model error|
            "acc_means": ((3,), np.float32),  # over steps: |error|, sMAPE, |naive error|
            "coverage": ((lv,), np.float32),
            "cov_count": ((), np.int32),
            "seasonal_count": ((), np.int32),
            # the seasonality detector (SeasonalityDetector's state); det_kind -1: none
            "det_kind": ((), np.int16),
            "det_buffer": ((self._row_widths["det_buffer"],), np.float16),
            "det_exp": ((), np.int32),
            "det_blocks": ((), np.int32),
            "det_acc": ((), np.float64),
            "det_acc_n": ((), np.int32),
            "det_period": ((), np.int32),  # 0: none detected
        }

    def _grow(self, capacity: int) -> None:
        """(Re)allocate every array for `capacity` rows, keeping the rows there are. New rows
        are set up when they are handed out, so memory the bank has not used yet is never
        touched (and not resident)."""
        before = self._capacity
        for name, (shape, dtype) in self._fields().items():
            array = np.empty((capacity, *shape), dtype=dtype)
            if before:
                array[:before] = getattr(self, name)
            setattr(self, name, array)
        self._capacity = capacity
        if not before:  # a new forecaster's state, as a row to copy into fresh rows
            self._checkin(0, self._template)
            self._fresh = {name: getattr(self, name)[0].copy() for name in self._fields()}

    def _reset(self, row: int) -> None:
        """The row becomes a new forecaster."""
        for name, value in self._fresh.items():
            if name in self._row_widths:  # may be wider than the fresh row by now
                getattr(self, name)[row] = 0.0
            else:
                getattr(self, name)[row] = value

    def add(self) -> int:
        """A row for a new series."""
        if self._free:
            row = self._free.pop()
        else:
            if self._size == self._capacity:
                self._grow(2 * self._capacity)
            row = self._size
            self._size += 1
        self._reset(row)
        return row

    def remove(self, row: int) -> None:
        """Forget a series; its row is reused for a new one."""
        self.det_kind[row] = -1
        self._free.append(row)

    def period(self, row: int) -> int | None:
        """Seasonal period in samples the row uses (None when non-seasonal)."""
        return int(self.periods[row]) or None

    # ------------------------------------------------------------------ object form
    def checkout(self, row: int) -> IntervalForecaster:
        """The row as an `IntervalForecaster` (a copy; `_checkin` writes it back)."""
        f = IntervalForecaster(**self._args)
        f.n = int(self.n[row])
        last = float(self.last_ts[row])
        f.last_ts = None if math.isnan(last) else last
        f._diffs = self.diffs[row].copy()
        f._n_diffs = int(self.n_diffs[row])
        f._step_estimate = float(self.step_estimate[row])
        f._level = float(self.level[row])
        f._trend = float(self.trend[row])
        f._scale = float(self.scale[row])
        period = int(self.periods[row])
        f._period = period or None
        season_length = int(self.season_length[row])
        f.season_length = None if season_length == _NONE else season_length
        if period:
            knots = min(period, self._knots)
            f._season = SeasonalCurve(period, self._knots, self.season[row, :knots])
        f._detector = self._detector(row)
        f._detector_origin = int(self.detector_origin[row])
        f._history = self._history_ring(row).copy()
        f._history_exp = int(self.history_exp[row])
        f._history_block = int(self.history_block[row])
        f._history_sum = float(self.history_sum[row])
        f._pending = self.pending[row].copy()
        f._pending_model = self.pending_model[row].copy()
        f._pending_exp = int(self.pending_exp[row])
        b = f.bands
        b._count = self.error_count[row].copy()
        b._scale = self.band_scale[row].copy()
        b._widths = np.repeat(self.widths[row], 3 - self._sides, axis=-1)
        b._started = int(self.started[row])
        a = f._accuracy
        a.count = self.acc_count[row].copy()
        a.table = self.acc_table[row].copy()
        a.abs_snaive, a.abs_model = a.table
        a.means = self.acc_means[row].copy()
        a.coverage = self.coverage[row].copy()
        a.cov_count = int(self.cov_count[row])
        a.seasonal_count = int(self.seasonal_count[row])
        return f

    def _checkin(self, row: int, f: IntervalForecaster) -> None:
        self.n[row] = f.n
        self.last_ts[row] = np.nan if f.last_ts is None else f.last_ts
        self.diffs[row] = f._diffs
        self.n_diffs[row] = f._n_diffs
        self.step_estimate[row] = f._step_estimate
        self.level[row] = f._level
        self.trend[row] = f._trend
        self.scale[row] = f._scale
        self.periods[row] = f._period or 0
        self.season_length[row] = _NONE if f.season_length is None else f.season_length
        if f._season is not None:
            self.season[row, : f._season.values.size] = f._season.values
        self._checkin_detector(row, f._detector)
        self.detector_origin[row] = f._detector_origin
        size = f._history.size
        if size > self._row_widths["history"]:
            self._widen("history", size)
        self.history_size[row] = size - self._recent
        self.history[row, :size] = f._history
        self.history_exp[row] = f._history_exp
        self.history_block[row] = f._history_block
        self.history_sum[row] = f._history_sum
        self.pending[row] = f._pending
        self.pending_model[row] = f._pending_model
        self.pending_exp[row] = f._pending_exp
        b = f.bands
        self.error_count[row] = b._count
        self.band_scale[row] = b._scale
        self.widths[row] = b._widths[..., -self._sides :]  # symmetric: the side it moves
        self.started[row] = b._started
        a = f._accuracy
        self.acc_count[row] = a.count
        self.acc_table[row] = a.table
        self.acc_means[row] = a.means
        self.coverage[row] = a.coverage
        self.cov_count[row] = a.cov_count
        self.seasonal_count[row] = a.seasonal_count

    def dump_row(self, row: int) -> bytes:
        """The row's state, as `IntervalForecaster.dump` writes it."""
        return self.checkout(row).dump()

    def load_row(self, data: bytes) -> int:
        """A new row holding a dumped forecaster's state (ValueError when it does not fit
        this bank's arguments; no row is taken then)."""
        forecaster = IntervalForecaster.load(data, **self._args)
        row = self.add()
        self._checkin(row, forecaster)
        return row

    def _widen(self, name: str, width: int) -> None:
        """Make the rows of a growing field (`_row_widths`) `width` wide."""
        old = getattr(self, name)
        grown = np.zeros((self._capacity, width), dtype=old.dtype)
        grown[: self._size, : old.shape[1]] = old[: self._size]
        setattr(self, name, grown)
        self._row_widths[name] = width

    # ------------------------------------------------------------------ detectors
    def _detector(self, row: int) -> SeasonalityDetector | None:
        """The row's seasonality detector as an object (a copy), None when it has none."""
        kind = int(self.det_kind[row])
        return None if kind < 0 else self._detector_of(row, kind)

    def _detector_of(self, row: int, kind: int) -> SeasonalityDetector:
        setting = self._detector_kinds[kind]
        d = SeasonalityDetector(setting.candidate_lags, threshold=setting.threshold)
        d._buffer[...] = self.det_buffer[row, : d.capacity]
        d._exp = int(self.det_exp[row])
        d._blocks = int(self.det_blocks[row])
        d._acc = float(self.det_acc[row])
        d._acc_n = int(self.det_acc_n[row])
        d.period = int(self.det_period[row]) or None
        return d

    def _checkin_detector(self, row: int, d: SeasonalityDetector | None) -> None:
        if d is None:
            self.det_kind[row] = -1
            self.det_exp[row] = self.det_blocks[row] = self.det_acc_n[row] = 0
            self.det_acc[row] = self.det_period[row] = 0
            return
        key = (d.candidate_lags, d.threshold)
        kind = self._kind_index.get(key)
        if kind is None:  # a setting not seen yet (another sampling interval)
            kind = self._kind_index[key] = len(self._detector_kinds)
            self._detector_kinds.append(d)
            kinds = self._detector_kinds
            self._kind_block = np.array([k.block for k in kinds], dtype=np.int64)
            self._kind_capacity = np.array([k.capacity for k in kinds], dtype=np.int64)
            self._kind_recheck = np.array([k.recheck_every_blocks for k in kinds], dtype=np.int64)
            self._kind_lag = np.array([k.candidate_lags[0] for k in kinds], dtype=np.int64)
        if d.capacity > self._row_widths["det_buffer"]:
            self._widen("det_buffer", d.capacity)
        self.det_kind[row] = kind
        self.det_buffer[row, : d.capacity] = d._buffer
        self.det_exp[row] = d._exp
        self.det_blocks[row] = d._blocks
        self.det_acc[row] = d._acc
        self.det_acc_n[row] = d._acc_n
        self.det_period[row] = d.period or 0

    def _learn_detectors(self, rows: np.ndarray, y: np.ndarray) -> None:
        """`SeasonalityDetector.learn_one` of these rows' detectors (rows without one are
        skipped); a row whose detector finds another period takes its season."""
        kind = self.det_kind[rows]
        has = kind >= 0
        if not has.any():
            return
        rows, y, kind = rows[has], y[has], kind[has]
        acc = self.det_acc[rows] + y
        acc_n = self.det_acc_n[rows] + 1
        full = acc_n >= self._kind_block[kind]  # a block mean to store
        self.det_acc[rows] = np.where(full, 0.0, acc)
        self.det_acc_n[rows] = np.where(full, 0, acc_n)
        if not full.any():
            return
        rows, kind, means = rows[full], kind[full], acc[full] / acc_n[full]
        blocks = self.det_blocks[rows]
        capacity = self._kind_capacity[kind]
        codes = self._coded(
            rows, means, self.det_exp, lambda i, row: (self.det_buffer[row, : capacity[i]],)
        )
        self.det_buffer[rows, blocks % capacity] = codes
        blocks = blocks + 1
        self.det_blocks[rows] = blocks
        for i in np.flatnonzero(blocks % self._kind_recheck[kind] == 0).tolist():
            row = int(rows[i])
            d = self._detector_of(row, int(kind[i]))
            period = d._check()
            if period != d.period:
                d.period = period
                self.det_period[row] = period or 0
                self._set_period(row, d)

    # ------------------------------------------------------------------ learning
    def learn(
        self, rows: Sequence[int] | np.ndarray, ys: Sequence[float], ts: Sequence[float]
    ) -> None:
        """Learn one sample per row (`rows` must not repeat), as `learn_one(y, ts)` would."""
        rows = np.asarray(rows, dtype=np.int64)
        ys = np.asarray(ys, dtype=np.float64)
        ts = np.asarray(ts, dtype=np.float64)
        fast, starting = self._fast_rows(rows, ys, ts)
        for i in np.flatnonzero(~fast).tolist():
            row = int(rows[i])
            f = self.checkout(row)
            f.learn_one(float(ys[i]), float(ts[i]))
            self._checkin(row, f)
        if fast.any():
            self._learn_fast(rows[fast], ys[fast], ts[fast], starting[fast])

    def _fast_rows(
        self, rows: np.ndarray, ys: np.ndarray, ts: np.ndarray
    ) -> tuple[np.ndarray, np.ndarray]:
        """Rows whose sample takes the vectorised path: a first sample, or the next one at the
        next interval; not a skip, a gap, a sample without timestamp, or a detector's start
        on a first sample. Also which of them start their seasonality detector with it."""
        t = self._template
        n = self.n[rows]
        n_diffs = self.n_diffs[rows]
        last = self.last_ts[rows]
        first = (n == 0) & np.isnan(last) & np.isfinite(ts)
        with np.errstate(invalid="ignore"):
            later = ts > last  # False for NaN (no timestamp yet)
        known = n_diffs >= 3 if not t.step_seconds else np.ones(rows.size, dtype=bool)
        with np.errstate(invalid="ignore"):
            steps = np.rint((ts - last) / self.interval_seconds(rows))
        regular = ~known | ~(steps > 1)  # a gap means missed samples: fill them one by one
        ordinary = (n > 0) & later & regular
        season_length = self.season_length[rows]
        detecting = season_length == _NONE
        started = self.det_kind[rows] >= 0
        # a detector starts once three intervals are known: the row's object does that
        waiting = np.zeros(rows.size, dtype=bool) if t.step_seconds else n_diffs + ordinary < 3
        fast = (
            (first | ordinary)
            & np.isfinite(ys)
            & (started | ~detecting | waiting | ordinary)
            & ((season_length <= 0) | (n + 1 != season_length))
        )
        return fast, fast & detecting & ~started & ~waiting

    def _learn_fast(
        self, rows: np.ndarray, y: np.ndarray, ts: np.ndarray, starting: np.ndarray
    ) -> None:
        """`learn_one` of one sample per row, as array operations; the rows `starting` their
        seasonality detector with this sample take that step, and only that, as objects."""
        n = self.n[rows]
        later = n > 0
        if later.all():
            self._note_intervals(rows, ts)
            self._score_pending(rows, n, y)
        else:
            self.last_ts[rows[~later]] = ts[~later]
            if later.any():
                self._note_intervals(rows[later], ts[later])
                self._score_pending(rows[later], n[later], y[later])
        learn_err = self._update_state(rows, n, y)
        self._learn_seasons(rows[later], n[later], self._template.gamma * learn_err[later])
        if starting.any():
            # the detector, its origin and the seasonal-naive history it needs, as the object
            # makes them (a one-off per series, but one a fleet started together pays at once)
            for row, value in zip(rows[starting].tolist(), y[starting].tolist(), strict=True):
                f = self.checkout(row)
                f._update_seasonality(value)  # also the new detector's first sample
                self._checkin(row, f)
            later = later & ~starting
        self._learn_detectors(rows[later], y[later])
        self._advance(rows, n, y)

    def _note_intervals(self, rows: np.ndarray, ts: np.ndarray) -> None:
        """Record the sampling intervals; re-estimate the interval (the median of the ring) as
        it fills and each time it has cycled."""
        n_diffs = self.n_diffs[rows]
        self.diffs[rows, n_diffs % _DIFFS] = ts - self.last_ts[rows]
        n_diffs = n_diffs + 1
        self.n_diffs[rows] = n_diffs
        self.last_ts[rows] = ts
        cycled = n_diffs % _DIFFS == 0
        if cycled.any():  # whole rings: one median per row, as np.median of each ring
            self.step_estimate[rows[cycled]] = np.median(self.diffs[rows[cycled]], axis=1)
        filling = (n_diffs < _DIFFS) & ~cycled
        if filling.any():  # the rings filled so far: one median per row, rows of a count together
            rows, n_diffs = rows[filling], n_diffs[filling]
            for count in np.unique(n_diffs).tolist():
                same = rows[n_diffs == count]
                self.step_estimate[same] = np.median(self.diffs[same, :count], axis=1)

    def _set_period(self, row: int, detector: SeasonalityDetector) -> None:
        period = detector.period
        self.periods[row] = period or 0
        curve = detected_season(detector, int(self.detector_origin[row]), period, self._knots)
        if curve is not None:
            self.season[row, : curve.values.size] = curve.values

    def _lags(self, rows: np.ndarray) -> np.ndarray:
        """Seasonal-naive lag per row (0 when there is none yet)."""
        periods = self.periods[rows]
        kind = self.det_kind[rows]
        waiting = (periods == 0) & (kind >= 0)  # the detector's first candidate meanwhile
        if not waiting.any():
            return periods.copy()
        return np.where(waiting, self._kind_lag[np.maximum(kind, 0)], periods)

    def _score_pending(self, rows: np.ndarray, n: np.ndarray, y: np.ndarray) -> None:
        """Compare the forecasts made 1..H steps ago for these samples with the truth."""
        h = self.horizon
        steps = self._steps
        k = np.minimum(h, n)
        valid = steps[None, :] <= k[:, None]
        cell = (rows[:, None], self._starts + n[:, None] % steps)
        pending_exp = self.pending_exp[rows][:, None]
        forecasts = half_history.decode(self.pending[cell], pending_exp)
        yy = y[:, None]
        err = yy - forecasts
        model_err = yy - half_history.decode(self.pending_model[cell], pending_exp)
        covered, has_band = self._update_bands(rows, k, valid, err)
        denom = np.abs(yy) + np.abs(forecasts)
        smape = np.where(denom > 0, 200.0 * np.abs(err) / np.where(denom > 0, denom, 1.0), 0.0)
        exp = self.history_exp[rows]
        naive = half_history.decode(
            self.history[rows[:, None], (n[:, None] - steps) % self._recent], exp[:, None]
        )
        naive_err = np.abs(yy - naive)
        lags = self._lags(rows)
        seasonal = (lags > 0) & (n >= lags)
        last_season = half_history.decode(
            self.history[rows, self._seasonal_slots(rows, n - lags)], exp
        )
        snaive_err = np.where(seasonal[:, None], np.abs(yy - last_season[:, None]), naive_err)
        # exponentially weighted statistics: per step of steps 1..k, and their means
        count = self.acc_count[rows] + valid
        self.acc_count[rows] = count
        self.seasonal_count[rows] += seasonal
        with np.errstate(divide="ignore"):
            rate = np.maximum(1.0 / count, 1.0 / self._acc_window)
        new = np.stack((snaive_err, np.abs(model_err)), axis=1)
        stats = self.acc_table[rows]
        self.acc_table[rows] = np.where(
            valid[:, None, :], stats + rate[:, None, :] * (new - stats), stats
        )
        scored = np.where(valid[:, None, :], np.stack((np.abs(err), smape, naive_err), axis=1), 0.0)
        step_means = np.add.reduce(scored, axis=2) / k[:, None]
        means = self.acc_means[rows]
        self.acc_means[rows] = means + rate[:, :1] * (step_means - means)
        if has_band.any():
            b = has_band
            cov_count = self.cov_count[rows[b]] + 1
            self.cov_count[rows[b]] = cov_count
            cov_rate = np.maximum(1.0 / cov_count, 1.0 / self._acc_window)[:, None]
            shares = np.where(valid[b][:, :, None], covered, 0.0)
            share = np.add.reduce(shares, axis=1) / k[b][:, None]
            old = self.coverage[rows[b]]
            self.coverage[rows[b]] = old + cov_rate * (share - old)

    def _update_bands(
        self, rows: np.ndarray, k: np.ndarray, valid: np.ndarray, err: np.ndarray
    ) -> tuple[np.ndarray, np.ndarray]:
        """Conformal bands' side of scoring, as `ConformalBands.update_many` for each row:
        coverage of the bands as they were, then quantile tracking. Returns coverage (rows with
        bands, steps, levels) and which rows had bands."""
        h, bands = self.horizon, self._bands
        started = self.started[rows]
        for i in np.flatnonzero(started < k).tolist():
            ready = self.error_count[rows[i]] >= bands.warmup
            started[i] = h if ready.all() else int(np.argmin(ready))
        self.started[rows] = started
        has_band = started >= k
        widths = self.widths[rows]
        scale = self.band_scale[rows]
        e = err[:, :, None]
        below, above = -e > widths[..., 0], e > widths[..., -1]
        covered = (~below[has_band] & ~above[has_band]).astype(np.float64)
        # symmetric: one band for both sides (the one width kept), a miss either side moves it
        miss = (below | above)[..., None] if bands.symmetric else np.stack((below, above), -1)
        step = bands.rate * np.maximum(widths, scale[:, :, None, None])
        moved = np.maximum(widths + step * (miss - bands._target[:, None]), 0.0)
        moved.sort(axis=2)  # levels back in order, as ConformalBands does
        count = self.error_count[rows] + valid
        with np.errstate(divide="ignore", invalid="ignore"):
            rate = np.maximum(1.0 / count, 1.0 / bands.scale_window)
            new_scale = np.where(valid, scale + rate * (np.abs(err) - scale), scale)
        new_scale = new_scale.astype(np.float32)  # as stored, as ConformalBands has it
        born = valid & (count == bands.warmup)
        if born.any():
            moved[born] = (new_scale[born][:, None] * bands._start)[:, :, None]
        self.widths[rows] = np.where(valid[:, :, None, None], moved, widths)
        self.band_scale[rows] = new_scale
        self.error_count[rows] = count
        return covered, has_band

    def _update_state(self, rows: np.ndarray, n: np.ndarray, y: np.ndarray) -> np.ndarray:
        """Error-correction update of level, trend and scale; returns the innovations learnt."""
        t = self._template
        seasonal = self._seasonal_values(rows, n[:, None])[:, 0]
        level, trend, scale = self.level[rows], self.trend[rows], self.scale[rows]
        err = y - (level + t.phi * trend + seasonal)
        abs_err = np.abs(err)
        scale = np.where(n == 1, abs_err, np.where(n == 2, 0.5 * (scale + abs_err), scale))
        limit = t.clip_scales * MAE_TO_SIGMA * scale
        old = n > 20
        learn_err = np.where(old & (limit > 0), np.maximum(-limit, np.minimum(limit, err)), err)
        new_scale = scale + np.where(old, 0.05, 0.2) * (abs_err - scale)
        new_level = level + t.phi * trend + t.alpha * learn_err
        new_trend = t.phi * trend + t.beta * learn_err
        first = n == 0  # a first sample only sets the level
        if first.any():
            new_scale = np.where(first, self.scale[rows], new_scale)
            new_level = np.where(first, y, new_level)
            new_trend = np.where(first, trend, new_trend)
        self.scale[rows] = new_scale
        self.level[rows] = new_level
        self.trend[rows] = new_trend
        return learn_err

    def _advance(self, rows: np.ndarray, n: np.ndarray, y: np.ndarray) -> None:
        """Store the samples, move the clocks on, record the forecasts issued now."""
        self.history[rows, n % self._recent] = self._coded(
            rows, y, self.history_exp, lambda _, row: (self._history_ring(row),)
        )
        block = self.history_block[rows]
        within = n % block
        total = np.where(within == 0, y, self.history_sum[rows] + y)
        self.history_sum[rows] = total
        self.history[rows, self._seasonal_slots(rows, n)] = half_history.encode(
            total / (within + 1), self.history_exp[rows]
        )
        n = n + 1
        self.n[rows] = n
        model_path = self._path(rows, n)
        cell = (rows[:, None], self._starts + (n - 1)[:, None] % self._steps)
        forecasts = np.stack((self._combine(rows, n, model_path), model_path), axis=1)

        def triangles(_: int, row: int) -> tuple[np.ndarray, ...]:
            return self.pending[row], self.pending_model[row]

        codes = self._coded(rows, forecasts, self.pending_exp, triangles)
        self.pending[cell], self.pending_model[cell] = codes[:, 0], codes[:, 1]

    def _path(self, rows: np.ndarray, n: np.ndarray) -> np.ndarray:
        path = self.level[rows][:, None] + self._damp * self.trend[rows][:, None]
        return path + self._seasonal_values(rows, n[:, None] - 1 + self._steps)

    def _season_groups(
        self, rows: np.ndarray
    ) -> Iterator[tuple[int, np.ndarray, tuple[np.ndarray, np.ndarray, np.ndarray], float]]:
        """Per seasonal period among `rows`: which of them have it, and its curves' knot map
        (the knot before each phase, the one after, the after one's weight) and gain."""
        periods = self.periods[rows]
        for period in np.unique(periods[periods > 0]).tolist():
            knots = min(period, self._knots)
            yield (
                period,
                np.flatnonzero(periods == period),
                knot_map(period, knots),
                knots / period,
            )

    def _seasonal_values(self, rows: np.ndarray, index: np.ndarray) -> np.ndarray:
        """Each row's seasonal curve at sample indices `index` (rows, k) (0 without a season),
        as `SeasonalCurve.path` gives them."""
        out = np.zeros(index.shape)
        for period, which, (before, after, weight), _gain in self._season_groups(rows):
            phases = index[which] % period
            knots = self.season[rows[which]]
            line = np.arange(which.size)[:, None]
            w = weight[phases]
            out[which] = knots[line, before[phases]] * (1.0 - w) + knots[line, after[phases]] * w
        return out

    def _learn_seasons(self, rows: np.ndarray, n: np.ndarray, corrections: np.ndarray) -> None:
        """`SeasonalCurve.learn` of each seasonal row's curve at its sample `n`."""
        for period, which, (before, after, weight), gain in self._season_groups(rows):
            phases = n[which] % period
            amount = corrections[which] * gain
            w = weight[phases]
            at = rows[which]
            for knot, share in ((before[phases], 1.0 - w), (after[phases], w)):
                self.season[at, knot] = self.season[at, knot].astype(np.float64) + amount * share

    def _switch_steps(self, rows: np.ndarray, n: np.ndarray, lags: np.ndarray) -> np.ndarray:
        """Per row and step, whether seasonal-naive has lately beaten the model clearly."""
        t = self._template
        able = (lags > 0) & (n >= lags) & (self.seasonal_count[rows] >= self._acc_window)
        table = self.acc_table[rows]
        better = table[:, 0] < t.switch_ratio * table[:, 1]
        return able[:, None] & better & (self._steps[None, :] <= lags[:, None])

    def _combine(self, rows: np.ndarray, n: np.ndarray, model_path: np.ndarray) -> np.ndarray:
        lags = self._lags(rows)
        use = self._switch_steps(rows, n, lags)
        if not use.any():
            return model_path
        path = model_path.copy()
        at, step = np.nonzero(use)  # (row, step - 1) of every switched step
        switched = rows[at]
        index = n[at] + step - lags[at]  # the sample a period before step's target
        codes = self.history[switched, self._seasonal_slots(switched, index)]
        path[at, step] = half_history.decode(codes, self.history_exp[switched])
        return path

    def _seasonal_slots(self, rows: np.ndarray, index: np.ndarray) -> np.ndarray:
        """Where the rows' seasonal-naive values of these sample indices are in `history`."""
        blocks = index // self.history_block[rows]
        return self._recent + blocks % self.history_size[rows]

    def _history_ring(self, row: int) -> np.ndarray:
        """The row's history (its recent ring, then its seasonal one), a view."""
        return self.history[row, : self._recent + self.history_size[row]]

    def _coded(
        self,
        rows: np.ndarray,
        values: np.ndarray,
        exponents: np.ndarray,
        rings: Callable[[int, int], tuple[np.ndarray, ...]],
    ) -> np.ndarray:
        """float16 codes of `values` (first axis: one entry per row of `rows`) under each
        row's scale in `exponents`. A row with a value too large for its scale widens it and
        re-codes the rings that share it (`rings(i, row)`), as `IntervalForecaster` does;
        the history, the pending forecasts and the detector's means all code this way."""
        codes = half_history.encode(values, exponents[rows].reshape(-1, *[1] * (values.ndim - 1)))
        over = np.isinf(codes)
        if over.ndim > 1:
            over = over.any(axis=tuple(range(1, over.ndim)))
        for i in np.flatnonzero(over).tolist():
            row = int(rows[i])
            codes[i], exponents[row] = half_history.codes_for(
                rings(i, row), int(exponents[row]), values[i]
            )
        return codes

    # ------------------------------------------------------------------ forecasting
    def forecast_arrays(self, rows: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Point paths (rows, H) and lower / upper bounds (rows, H, levels) of `rows`.

        Reading a forecast changes nothing the rows learn next."""
        widths = self.widths[rows]
        n = self.n[rows]
        path = self._combine(rows, n, self._path(rows, n))
        not_ready = self.error_count[rows] < self._bands.warmup
        if not_ready.any():
            sigma = MAE_TO_SIGMA * self.scale[rows][:, None] * np.sqrt(self._steps)
            z = np.asarray(_normal_quantiles(self.levels))
            normal = z[None, None, :] * sigma[:, :, None]
            widths[not_ready] = np.stack((normal,) * self._sides, axis=-1)[not_ready]
        return path, path[:, :, None] - widths[..., 0], path[:, :, None] + widths[..., -1]

    def interval_seconds(self, rows: np.ndarray) -> np.ndarray:
        """Sampling interval per row (configured, inferred or default), as the forecaster's."""
        t = self._template
        if t.step_seconds:
            return np.full(rows.size, float(t.step_seconds))
        return np.where(self.n_diffs[rows] > 0, self.step_estimate[rows], t.default_step_seconds)

    def messages(
        self,
        rows: Sequence[int],
        vm_ids: Sequence[str],
        metrics: Sequence[str],
        issued_at: Sequence[float | None],
    ) -> list[dict]:
        """One `forecast_message` per row (rows must have learnt at least one sample)."""
        rows = np.asarray(rows, dtype=np.int64)
        path, lower, upper = self.forecast_arrays(rows)
        step_s = self.interval_seconds(rows)
        times = (self.last_ts[rows][:, None] + self._steps * step_s[:, None]).tolist()
        switched = self._switch_steps(rows, self.n[rows], self._lags(rows)).any(axis=1)
        accuracy = self.accuracy(rows)
        paths, lowers, uppers = path.tolist(), lower.tolist(), upper.tolist()
        out = []
        for i, row in enumerate(rows.tolist()):
            period = int(self.periods[row]) or None
            season = f"seasonal[{period}]" if period else "nonseasonal"
            last_ts: float | None = float(self.last_ts[row])
            if math.isnan(last_ts):
                last_ts, times[i] = None, [None] * self.horizon
            out.append(
                {
                    "vm_id": vm_ids[i],
                    "metric": metrics[i],
                    "issued_at": issued_at[i] if issued_at[i] is not None else last_ts,
                    "model": f"ets-damped-{season}{'+snaive' if switched[i] else ''}+conformal",
                    "period": period,
                    "step_seconds": float(step_s[i]),
                    "levels": list(self._keys),
                    "points": forecast_points(paths[i], lowers[i], uppers[i], times[i], self._keys),
                    "accuracy": accuracy[i],
                }
            )
        return out

    def accuracy(self, rows: np.ndarray) -> list[dict]:
        """`IntervalForecaster.accuracy()` of each row."""
        h = self.horizon
        counts = self.acc_count[rows]
        seen = np.count_nonzero(counts, axis=1)
        snaive = np.add.reduce(self.acc_table[rows, 0], axis=1, dtype=np.float64) / h
        means = self.acc_means[rows].tolist()
        shares = self.coverage[rows].tolist()
        covered = self.cov_count[rows] > 0
        out = []
        for i, row in enumerate(rows.tolist()):
            if not seen[i]:
                out.append({"n": 0})
                continue
            mae, smape, naive = means[i]
            if seen[i] == h:
                snaive_mae = float(snaive[i])
            else:  # young rows: the same sum over the steps seen so far
                table = self.acc_table[row, 0, : seen[i]]
                snaive_mae = float(np.add.reduce(table, dtype=np.float64) / seen[i])
            figures = {
                "n": int(counts[i, 0]),
                "mae": mae,
                "smape": smape,
                "mase": mae / snaive_mae if snaive_mae > 0 else None,
                "mase_naive": mae / naive if naive > 0 else None,
            }
            if covered[i]:
                figures["coverage"] = dict(zip(self._keys, shares[i], strict=True))
            out.append(figures)
        return out

    @property
    def nbytes(self) -> int:
        """Bytes of the arrays (the seasonal detectors' included)."""
        return int(sum(v.nbytes for v in vars(self).values() if isinstance(v, np.ndarray)))
