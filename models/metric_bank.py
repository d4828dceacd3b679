"""Per-metric state of every VM in flat arrays, updated vectorised over a batch of samples.

The engine keeps, for each VM and metric, a robust standardiser (`normalizer.EWStandardizer`),
a damped-trend forecaster (`residual.DampedTrendForecaster`), a Page-Hinkley test
(`drift.CompactPageHinkley`) and a growth index (`classification.GrowthTracker`): 13 floats,
plus the running mean of the clipped z-score that the engine's `shift` channel reads.
Called one sample and one metric at a time they cost ~24 Python calls per sample; here the same
updates run as numpy operations over all samples of a batch, one row per VM slot and one column
per metric. The arithmetic is written in the same order as those classes, so the results are
identical to them bit for bit (IEEE +, -, *, /, sqrt are correctly rounded in both).

A batch that holds a VM more than once is processed in rounds (first occurrences, then
second ones, ...): VMs are independent, so this equals processing the samples in order.
numpy's per-call cost makes a round of a few rows slower than plain Python, so a batch whose
rounds average fewer than `_MIN_ROUND` rows (one VM's own history in a replay, a trickle of
live samples) runs through the scalar classes themselves, loaded from and stored to the rows.
"""

from __future__ import annotations

from collections.abc import Hashable, Iterable

import numpy as np

from models.classification import GrowthTracker
from models.drift import CompactPageHinkley
from models.normalizer import EWStandardizer
from models.residual import _MAE_TO_STD, DampedTrendForecaster

# Column groups in the order of the classes' `state()` tuples (the checkpoint layout).
SCALER = ("s_n", "s_mean", "s_var")
FORECASTER = ("f_n", "f_level", "f_trend", "f_mae", "f_last")
DRIFT = ("d_up", "d_down")
GROWTH = ("g_last", "g_index", "g_n")
FIELDS = SCALER + FORECASTER + DRIFT + GROWTH
# The shift channel's running mean of the clipped z-score: checkpointed by the engine on its
# own (`shift_state`), after the fields above.
SHIFT = "z_shift"
_ROWS = (*FIELDS, SHIFT)
_SHIFT_ROW = _ROWS.index(SHIFT)
_Z_CLIP = 8.0
_GROUP_ROWS = [[FIELDS.index(f) for f in group] for group in (SCALER, FORECASTER, DRIFT, GROWTH)]
_MIN_ROUND = 8


class MetricBank:
    """Per-(VM slot, metric) state; `observe` scores and learns a batch of samples."""

    def __init__(
        self,
        n_metrics: int,
        scaler: EWStandardizer | None = None,
        forecaster: DampedTrendForecaster | None = None,
        drift: CompactPageHinkley | None = None,
        growth: GrowthTracker | None = None,
        capacity: int = 64,
        shift_alpha: float = 0.2,
    ) -> None:
        """The scalar objects give every setting (and serve the small batches, see above);
        `shift_alpha` is the rate of the running mean of each metric's clipped z-score."""
        self.n_metrics = n_metrics
        self.shift_alpha = shift_alpha
        self._scalar = (
            scaler if scaler is not None else EWStandardizer(),
            forecaster if forecaster is not None else DampedTrendForecaster(),
            drift if drift is not None else CompactPageHinkley(),
            growth if growth is not None else GrowthTracker(),
        )
        # one row per slot, so that the rows not handed out yet are one untouched (and not
        # resident) block at the end, even in 2 MB transparent huge pages
        self._state = np.zeros((capacity, len(_ROWS), n_metrics))
        self._free: list[int] = list(range(capacity - 1, -1, -1))

    def column(self, field: str, slot: int, metric: int) -> float:
        """One float of one slot, e.g. `column("s_mean", slot, 0)` (the typical value)."""
        return float(self._state[slot, _ROWS.index(field), metric])

    # ------------------------------------------------------------------ slots

    def allocate(self) -> int:
        """A fresh slot (all state zero)."""
        if not self._free:
            capacity = self._state.shape[0]
            self._state = grown_rows(self._state, 2 * capacity)
            self._free = list(range(2 * capacity - 1, capacity - 1, -1))
        slot = self._free.pop()
        self._state[slot] = 0.0  # grown rows are unset, released ones hold their last state
        return slot

    def release(self, slot: int) -> None:
        self._free.append(slot)

    def state(self, slot: int) -> list[float]:
        """The slot's floats: per metric the scaler's, then forecasters', drifts', growth's."""
        out: list[float] = []
        for rows in _GROUP_ROWS:
            out.extend(self._state[slot, rows].T.ravel().tolist())  # metric-major
        return out

    def load_state(self, slot: int, values: list[float] | tuple[float, ...]) -> None:
        i = 0
        for rows in _GROUP_ROWS:
            size = len(rows) * self.n_metrics
            block = np.asarray(values[i : i + size], dtype=float).reshape(self.n_metrics, -1)
            self._state[slot, rows] = block.T
            i += size

    N_STATE_PER_METRIC = len(FIELDS)

    def shift_state(self, slot: int) -> list[float]:
        """The slot's running means of the clipped z-score, one per metric."""
        return self._state[slot, _SHIFT_ROW].tolist()

    def load_shift_state(self, slot: int, values: list[float] | tuple[float, ...]) -> None:
        self._state[slot, _SHIFT_ROW] = values

    # ------------------------------------------------------------------ batch update

    def observe(self, slots: np.ndarray, X: np.ndarray, warm: np.ndarray) -> tuple[np.ndarray, ...]:
        """Score each sample against its VM's state before it, then learn it, in order.

        `X` holds one row per sample (NaN: metric absent), `slots` the rows' VM slots and
        `warm` whether the VM is past its warm-up (drift is tested and the running means of z
        are learned only then). Returns z-scores, forecast residual scores and typical values
        (0 where absent) and, per row, the metrics whose level shift was confirmed (a bit mask,
        bit i for metric i; the level is then re-centred on the sample) and the largest
        |running mean of z| over its metrics (0 before warm-up); last, per metric, its rise
        since the VM's previous value of it (0 where absent or first) and its growth index
        with the sample learned (0 where absent): what the engine classifies the sample by,
        whatever later samples of the batch do to the state.
        """
        n = len(slots)
        rounds = batch_rounds(slots)
        if n < _MIN_ROUND * len(rounds):
            rows = [
                self._observe_one(slot, x_row, is_warm)
                for slot, x_row, is_warm in zip(
                    slots.tolist(), X.tolist(), warm.tolist(), strict=True
                )
            ]
            return tuple(map(np.array, zip(*rows, strict=True)))
        z = np.zeros(X.shape)
        residual = np.zeros(X.shape)
        typical = np.zeros(X.shape)
        shifted = np.zeros(n, dtype=np.int64)
        shift = np.zeros(n)
        rise = np.zeros(X.shape)
        growth = np.zeros(X.shape)
        present = ~np.isnan(X)
        outputs = (z, residual, typical, shifted, shift, rise, growth)
        for rows in rounds:
            self._observe_round(rows, slots[rows], X[rows], present[rows], warm[rows], outputs)
        return outputs

    def _observe_one(
        self, slot: int, x_row: list[float], warm: bool
    ) -> tuple[list[float], list[float], list[float], int, float, list[float], list[float]]:
        """One sample through the scalar classes (small batches): z, residual, typical,
        shifted, |running mean of z|, rise, growth index."""
        scaler, forecaster, drift, growth = self._scalar
        a = self.shift_alpha
        shift = 0.0
        block = self._state[slot]  # (fields, metrics), a view
        columns = block.T.tolist()
        m = len(x_row)
        z_out, res_out, typ_out = [0.0] * m, [0.0] * m, [0.0] * m
        rise_out, growth_out = [0.0] * m, [0.0] * m
        shifted = 0
        updated = []
        for i, x in enumerate(x_row):
            if x != x:  # NaN: absent
                continue
            v = columns[i]
            scaler.load_state(v[0:3])
            forecaster.load_state(v[3:8])
            drift.load_state(v[8:10])
            growth.load_state(v[10:13])
            typ_out[i] = scaler.mean if scaler.n else x
            z = z_out[i] = scaler.observe(x)
            res_out[i] = forecaster.observe(x)
            if warm and drift.update(z):
                shifted |= 1 << i
                scaler.reset_level(x)
                forecaster.reset_level(x)
            if growth.n > 0:
                rise_out[i] = x - growth.last
            growth.learn_one(x)
            growth_out[i] = growth.index
            mean_z = v[_SHIFT_ROW]
            if warm:
                z = _Z_CLIP if z > _Z_CLIP else (-_Z_CLIP if z < -_Z_CLIP else z)
                mean_z = mean_z + a * (z - mean_z)
                if abs(mean_z) > shift:
                    shift = abs(mean_z)
            columns[i] = (
                *scaler.state(),
                *forecaster.state(),
                *drift.state(),
                *growth.state(),
                mean_z,
            )
            updated.append(i)
        if len(updated) > 3:  # one bulk write beats several column writes
            block[:] = np.array(columns).T
        else:
            for i in updated:
                block[:, i] = columns[i]
        return z_out, res_out, typ_out, shifted, shift, rise_out, growth_out

    def _observe_round(self, rows, slots, X, present, warm, outputs):
        z_out, res_out, typ_out, shifted, shift_out, rise_out, growth_out = outputs
        scaler, forecaster, drift, growth = self._scalar
        # (fields, rows, metrics): a copy, written back at the end
        S = self._state[slots].transpose(1, 0, 2)
        x = np.where(present, X, 0.0)
        (
            s_n,
            s_mean,
            s_var,
            f_n,
            f_level,
            f_trend,
            f_mae,
            f_last,
            d_up,
            d_down,
            g_last,
            g_index,
            g_n,
            z_shift,
        ) = S

        # standardiser (EWStandardizer.observe)
        typ_out[rows] = np.where(present, np.where(s_n != 0.0, s_mean, x), 0.0)
        first = present & (s_n < 1)
        later = present & ~first
        floor = scaler.rel_floor * (np.abs(s_mean) + scaler.abs_floor)
        std = np.sqrt(s_var)
        std = np.where(std < floor, floor, std)
        d = x - s_mean
        with np.errstate(divide="ignore", invalid="ignore"):
            z = np.where(later, d / std, 0.0)
        n_next = s_n + 1.0
        inv = 1.0 / n_next
        a = np.where(inv > scaler.alpha, inv, scaler.alpha)
        limit = scaler.clip * std
        clipped = np.where(n_next > 10, np.clip(d, -limit, limit), d)
        mean_next = s_mean + a * clipped
        var_next = (1.0 - a) * (s_var + a * clipped * clipped)
        S[0] = np.where(first, 1.0, np.where(later, n_next, s_n))
        S[1] = np.where(first, x, np.where(later, mean_next, s_mean))
        S[2] = np.where(later, var_next, s_var)
        z_out[rows] = z

        # damped-trend forecaster (DampedTrendForecaster.observe)
        first = present & (f_n < 1)
        later = present & ~first
        f = f_level + forecaster.phi * f_trend
        floor = forecaster.rel_floor * (np.abs(f_level) + 1e-3)
        scale = _MAE_TO_STD * f_mae
        scale = np.where(scale < floor, floor, scale)
        err = x - f
        with np.errstate(divide="ignore", invalid="ignore"):
            res_out[rows] = np.where(later & (f_n >= 2), np.abs(err) / scale, 0.0)
        n_next = f_n + 1.0
        inv = 1.0 / np.maximum(n_next - 1.0, 1.0)  # n - 1 >= 1 wherever it is used
        a = np.where(inv > forecaster.scale_alpha, inv, forecaster.scale_alpha)
        limit = forecaster.clip * scale
        err = np.where(n_next > 10, np.clip(err, -limit, limit), err)
        S[3] = np.where(first, 1.0, np.where(later, n_next, f_n))
        S[6] = np.where(later, f_mae + a * (np.abs(err) - f_mae), f_mae)
        S[4] = np.where(first, x, np.where(later, f + forecaster.alpha * err, f_level))
        S[5] = np.where(
            later, forecaster.phi * f_trend + forecaster.alpha * forecaster.beta * err, f_trend
        )
        S[7] = np.where(present, x, f_last)

        # Page-Hinkley on z, only once the VM is warm (CompactPageHinkley.update)
        test = present & warm[:, None]
        zc = np.clip(z, -drift.clip, drift.clip)
        up = d_up + zc - drift.delta
        down = d_down - zc - drift.delta
        up = np.where(up > 0.0, up, 0.0)
        down = np.where(down > 0.0, down, 0.0)
        fired = test & ((up > drift.threshold) | (down > drift.threshold))
        S[8] = np.where(test, np.where(fired, 0.0, up), d_up)
        S[9] = np.where(test, np.where(fired, 0.0, down), d_down)
        if fired.any():  # re-centre the level of each shifted metric on the sample
            S[1] = np.where(fired, x, S[1])
            S[4] = np.where(fired, x, S[4])
            S[5] = np.where(fired, 0.0, S[5])
            S[7] = np.where(fired, x, S[7])
            shifted[rows] = fired @ (1 << np.arange(fired.shape[1]))

        # growth index (GrowthTracker.learn_one)
        rise = x - g_last
        step = np.sign(rise)
        grow = present & (g_n > 0)
        rise_out[rows] = np.where(grow, rise, 0.0)
        S[11] = np.where(grow, g_index + growth.alpha * (step - g_index), g_index)
        growth_out[rows] = np.where(present, S[11], 0.0)
        S[10] = np.where(present, x, g_last)
        S[12] = np.where(present, g_n + 1.0, g_n)

        # running mean of the clipped z-score (the shift channel), once the VM is warm
        mean_z = np.where(
            test, z_shift + self.shift_alpha * (np.clip(z, -_Z_CLIP, _Z_CLIP) - z_shift), z_shift
        )
        S[_SHIFT_ROW] = mean_z
        shift_out[rows] = np.max(np.where(test, np.abs(mean_z), 0.0), axis=1)
        self._state[slots] = S.transpose(1, 0, 2)


def grown_rows(array: np.ndarray, size: int) -> np.ndarray:
    """`array` with room for `size` rows along its first axis, the old ones copied. The new
    rows are left unset (and not resident until written): a bank resets a slot before use."""
    grown = np.empty((size, *array.shape[1:]), dtype=array.dtype)
    grown[: len(array)] = array
    return grown


def batch_rounds(slots: np.ndarray) -> list[np.ndarray]:
    """Row indices grouped so that no slot repeats within a group, in order of occurrence:
    the k-th group holds each slot's k-th row (`occurrence_groups`, for integer slots)."""
    n = len(slots)
    if n <= 1:
        return [np.arange(n)]
    order = np.argsort(slots, kind="stable")  # each slot's rows together, in row order
    ordered = slots[order]
    first = np.flatnonzero(np.concatenate(([True], ordered[1:] != ordered[:-1])))
    if len(first) == n:  # no slot repeats
        return [np.arange(n)]
    occurrence = np.empty(n, dtype=np.intp)
    occurrence[order] = np.arange(n) - np.repeat(first, np.diff(np.append(first, n)))
    rows = np.argsort(occurrence, kind="stable")
    return np.split(rows, np.cumsum(np.bincount(occurrence))[:-1])


def occurrence_groups(keys: Iterable[Hashable]) -> list[list[int]]:
    """Positions of `keys` grouped so that the k-th group holds each key's k-th occurrence."""
    groups: list[list[int]] = []
    seen: dict[Hashable, int] = {}
    for i, key in enumerate(keys):
        k = seen.get(key, 0)
        seen[key] = k + 1
        if k == len(groups):
            groups.append([i])
        else:
            groups[k].append(i)
    return groups
