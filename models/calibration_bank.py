"""The tail calibrators of every VM in flat arrays, queried and updated vectorised over a batch.

The engine keeps a `calibration.TailCalibrator` per VM and detector channel, plus one for
their combination: six or seven Python calls per sample, and seven objects per VM. Here the
histograms of all VMs sit in one array (64 bins by (VM slot, column)), and `observe` answers
and learns a whole batch of (slot, column, raw score) pairs with numpy operations.

The results are identical to `TailCalibrator`'s bit for bit: the mass above a score is summed
over the same bins in the same order (a reduction over the first axis of a contiguous block
adds its rows in turn), the rest is +, -, *, / and comparisons, logarithms and exponentials
are numpy's ufuncs in both (see `calibration`), and the peaks-over-threshold tails of the few
pairs in a calibrator's upper tail are fitted together (`_tail_fits`) to the doubles that
`calibration.tail_p_value` gives. A call with few pairs (one VM's replay, a trickle of live
samples) runs through `TailCalibrator` objects checked out of the arrays instead, since
numpy's per-call cost would exceed the work.
"""

from __future__ import annotations

import copy
from array import array
from collections.abc import Sequence

import numpy as np

from models.calibration import (
    _BINS,
    _MIN_TAIL,
    _RESCALE_AT,
    _WIDTH,
    TailCalibrator,
)

_MIN_PAIRS = 24  # pairs below which a call runs through the scalar calibrators
_HALF = _BINS // 2
_LOWER = np.arange(_HALF)[:, None]  # bins 0..31
_UPPER = np.arange(_BINS - 1, _HALF - 1, -1)[:, None]  # bins 63..32, from the top
# Per (slot, column) scalars, in `TailCalibrator.to_bytes` order, then the top occupied bin.
_N, _WEIGHT, _TOTAL, _TOP = range(4)
_CENTRES_DOWN = np.arange(_BINS - 1, -1, -1) + 0.5  # each bin's centre, from the top bin down


class CalibrationBank:
    """Per-(VM slot, calibrator column) decayed histograms; `observe` is the batch hot path.

    `columns` give the calibrators' settings, one `TailCalibrator` per column (their own state
    is only scratch). Small calls load each calibrator from its row, observe, and write back
    what changed; a calibrator touched again within two small calls (one VM's replay, whose
    channel and combined calibrators take turns) is checked out into a `TailCalibrator`
    object instead, and kept there (up to `keep_out` of them) at the calibrators' own speed.
    Whatever reads the arrays writes them back first.
    """

    def __init__(
        self, columns: Sequence[TailCalibrator], capacity: int = 64, keep_out: int = 512
    ) -> None:
        self._settings = list(columns)
        self.n_columns = len(self._settings)
        self.keep_out = keep_out
        self._min_count = np.array([c.min_count for c in self._settings], dtype=np.float64)
        self._tail_mass = np.array([c.tail_mass for c in self._settings])
        self._prior_excess = np.array([c.prior_excess for c in self._settings])
        self._decay = np.array([c.decay for c in self._settings])
        self._winsor_p = np.array([c.winsor_p for c in self._settings])
        self._scales = np.array([c.scale for c in self._settings], dtype=np.float64)
        self._log_axes = np.array([c.log_axis for c in self._settings], dtype=bool)
        # Calibrator (slot, column) is row slot * n_columns + column: its 64 bins, contiguous.
        self._counts = np.zeros((capacity * self.n_columns, _BINS), dtype=np.float32)
        self._meta = np.zeros((capacity * self.n_columns, 4))
        self._meta[:, _WEIGHT] = 1.0
        self._out: dict[int, TailCalibrator] = {}  # checked out: their rows are stale
        # calibrators the last two small calls touched
        self._recent: tuple[set[int], set[int]] = (set(), set())

    # ------------------------------------------------------------------ slots

    @property
    def capacity(self) -> int:
        return self._meta.shape[0] // self.n_columns

    def grow(self, capacity: int) -> None:
        """Room for slots up to `capacity` - 1 at least, doubling. The new rows are left
        untouched (so not resident) until `reset` empties them for a VM."""
        capacity = max(capacity, 2 * self.capacity)
        old = self._meta.shape[0]
        counts = np.zeros((capacity * self.n_columns, _BINS), dtype=np.float32)
        counts[:old] = self._counts
        meta = np.zeros((capacity * self.n_columns, 4))
        meta[:old] = self._meta
        self._counts, self._meta = counts, meta

    def reset(self, slot: int) -> None:
        """Empty every calibrator of `slot`."""
        if slot >= self.capacity:
            self.grow(slot + 1)
        first = slot * self.n_columns
        for i in range(first, first + self.n_columns):
            self._out.pop(i, None)
        rows = slice(first, first + self.n_columns)
        self._counts[rows] = 0.0
        self._meta[rows] = 0.0
        self._meta[rows, _WEIGHT] = 1.0

    def count(self, slot: int, column: int) -> int:
        """Scores the calibrator has learned."""
        i = slot * self.n_columns + column
        cal = self._out.get(i)
        return cal.n if cal is not None else int(self._meta[i, _N])

    def min_count(self, column: int) -> int:
        """Scores a calibrator of `column` needs before it gives p-values."""
        return int(self._min_count[column])

    def to_bytes(self, slot: int, column: int) -> bytes:
        """The calibrator's state in `TailCalibrator.to_bytes` format."""
        i = slot * self.n_columns + column
        cal = self._out.get(i)
        if cal is not None:
            return cal.to_bytes()
        head = self._meta[i, :_TOP].astype("<f8").tobytes()
        return head + self._counts[i].astype("<f4").tobytes()

    def load_bytes(self, slot: int, column: int, data: bytes) -> None:
        """Restore one calibrator from `to_bytes` (or `TailCalibrator.to_bytes`) output."""
        i = slot * self.n_columns + column
        self._out.pop(i, None)
        cal = copy.copy(self._settings[column])
        cal.load_bytes(data)
        self._check_in(i, cal)

    def _check_out(self, i: int, column: int) -> TailCalibrator:
        if len(self._out) >= self.keep_out:
            self.check_in_all()
        cal = copy.copy(self._settings[column])
        n, cal.weight, cal.total, top = self._meta[i].tolist()
        cal.n, cal.top = int(n), int(top)
        cal.counts = array("f", self._counts[i].tolist())
        self._out[i] = cal
        return cal

    def _check_in(self, i: int, cal: TailCalibrator) -> None:
        self._meta[i] = (cal.n, cal.weight, cal.total, cal.top)
        self._counts[i] = cal.counts

    def check_in_all(self) -> None:
        """Write every checked-out calibrator back to the arrays."""
        for i, cal in self._out.items():
            self._check_in(i, cal)
        self._out.clear()

    # ------------------------------------------------------------------ batch update

    def observe(
        self,
        slots: Sequence[int] | np.ndarray,
        columns: Sequence[int] | np.ndarray,
        raws: Sequence[float] | np.ndarray,
    ) -> tuple[Sequence[float], Sequence[bool]]:
        """Each pair's p-value of `raw` under its calibrator, then learn `raw`.

        No (slot, column) pair may repeat within a call. Returns the p-values and, per pair,
        whether the calibrator was past `min_count` (else its p-value is the 1.0 of a young
        calibrator): lists for a few pairs, arrays for many (as they were given, arrays need
        no conversion either way).
        """
        if len(slots) < _MIN_PAIRS:
            return self._observe_scalar(_listed(slots), _listed(columns), _listed(raws))
        return self._observe_vectorised(slots, columns, raws)

    def _observe_scalar(self, slots, columns, raws) -> tuple[list[float], list[bool]]:
        ps: list[float] = []
        counted: list[bool] = []
        out, n_columns = self._out, self.n_columns
        last, before = self._recent
        touched = set()
        for slot, column, raw in zip(slots, columns, raws, strict=True):
            i = slot * n_columns + column
            touched.add(i)
            cal = out.get(i)
            if cal is None and (i in last or i in before):
                cal = self._check_out(i, column)
            if cal is not None:
                counted.append(cal.n >= cal.min_count)
                ps.append(cal.observe(raw))
                continue
            cal = self._settings[column]  # scratch: load, observe, write back what changed
            n, weight, cal.total, top = self._meta[i].tolist()
            cal.n, cal.weight, cal.top = int(n), weight, int(top)
            cal.counts = counts = array("f", self._counts[i].tolist())
            counted.append(n >= cal.min_count)
            pos = cal._position(raw)
            p = cal._p_at(pos)
            ps.append(p)
            if p < cal.winsor_p:
                pos = cal._winsorised(pos)
            cal._learn_at(pos)
            if cal.weight > weight:  # not rescaled: one bin changed
                b = int(pos) if pos < _BINS else _BINS - 1
                self._counts[i, b] = counts[b]
                self._meta[i] = (cal.n, cal.weight, cal.total, cal.top)
            else:
                self._check_in(i, cal)
        self._recent = (touched, last)
        return ps, counted

    def _observe_vectorised(self, slots, columns, raws) -> tuple[np.ndarray, np.ndarray]:
        if self._out:
            self.check_in_all()
        cols = np.asarray(columns, dtype=np.intp)
        index = np.asarray(slots, dtype=np.intp) * self.n_columns + cols
        # `TailCalibrator._position`, pair by pair
        raw = np.asarray(raws, dtype=np.float64)
        positive = raw > 0.0
        scaled = np.where(positive, raw, 0.0) * self._scales[cols]
        pos = np.where(self._log_axes[cols], np.log1p(scaled), scaled) / _WIDTH
        pos = np.where(positive, pos, 0.0)
        pairs = len(pos)
        counts = self._counts.take(index, axis=0)  # (pairs, bins), float32: summed in float64
        by_bin = counts.T  # a view: the blocks summed below are copied out of it contiguous
        n, weight, total, top = self._meta.take(index, axis=0).T
        young = (n < self._min_count[cols]) | (total <= 0.0)

        # Mass above `pos`, interpolated within its bin, summed over the shorter side. The
        # bins a pair does not sum are zeroed in a contiguous (bins, pairs) block, and a
        # reduction over its first axis adds its rows in turn: the calibrator's sums exactly.
        b = np.minimum(pos, _BINS).astype(np.intp)  # pos >= 0: truncation is floor
        beyond = b >= _BINS
        b = np.where(beyond, _BINS - 1, b)
        frac = np.where(beyond, 1.0, pos - b)
        at_b = counts[np.arange(pairs), b]
        low = b < _HALF
        under = np.add.reduce(_masked(by_bin[:_HALF], b > _LOWER), axis=0)
        low_side = total - under - at_b * frac
        low_side = np.where(low_side < 0.0, 0.0, low_side)
        over = np.add.reduce(_masked(by_bin[: _HALF - 1 : -1], b < _UPPER), axis=0)
        high_side = over + at_b * (1.0 - frac)
        above = np.where(low, low_side, high_side)
        tail = np.maximum(
            self._tail_mass[cols] * total, np.minimum(_MIN_TAIL * weight, 0.5 * total)
        )
        p = np.where(young, 1.0, (above + weight) / (total + weight))
        # the few pairs in the upper tail: peaks over threshold, as the calibrator does it
        in_tail = np.flatnonzero(~young & (above < tail))
        if in_tail.size:
            t, tot = tail[in_tail], total[in_tail]
            fitted, u, excess = _tail_fits(
                counts[in_tail], t, weight[in_tail], self._prior_excess[cols[in_tail]]
            )
            at = pos[in_tail]
            tail_p = t / tot * np.exp(-np.maximum(0.0, at - u) / excess)
            p_tail = np.where(fitted, tail_p, p[in_tail])  # not fitted: the empirical p-value
            p[in_tail] = p_tail
            # learned as the score with p-value `cap` (`TailCalibrator`), where fitted
            cap = self._winsor_p[cols[in_tail]]
            capped = fitted & (p_tail < cap)
            if capped.any():
                rows = in_tail[capped]
                u, excess, at = u[capped], excess[capped], at[capped]
                t, tot = t[capped], tot[capped]
                moved = u + excess * np.log(t / (tot * cap[capped]))
                at = np.where(moved < at, moved, at)
                b[rows] = np.where(at < _BINS, at, _BINS - 1).astype(np.intp)
                at_b[rows] = counts[rows, b[rows]]

        # learn: add the pair's weight to its bin, then grow the weight (rescale when huge)
        self._counts[index, b] = at_b + weight
        meta = np.stack((n + 1.0, weight / self._decay[cols], total + weight, top), axis=1)
        meta[:, _TOP] = np.where(b > top, b, top)
        self._meta[index] = meta
        huge = meta[:, _WEIGHT] > _RESCALE_AT
        if huge.any():
            for i in index[huge].tolist():
                self._rescale(i)
        return p, n >= self._min_count[cols]

    def _rescale(self, i: int) -> None:
        meta = self._meta[i]
        inv = 1.0 / float(meta[_WEIGHT])
        self._counts[i] = self._counts[i].astype(np.float64) * inv  # as array("f") does
        meta[_TOTAL] *= inv
        meta[_WEIGHT] = 1.0


def _listed(values: Sequence | np.ndarray) -> list:
    """The values as a list of Python numbers (what the scalar calibrators read fastest)."""
    return values.tolist() if isinstance(values, np.ndarray) else list(values)


def _masked(block: np.ndarray, keep: np.ndarray) -> np.ndarray:
    """`block` where `keep`, else 0, as a new C-contiguous array (whatever `block`'s layout):
    numpy reduces over the first axis of such an array row by row, in order."""
    out = np.zeros(block.shape)
    np.copyto(out, block, where=keep)
    return out


def _tail_fits(
    counts: np.ndarray, tail: np.ndarray, weight: np.ndarray, prior_excess: np.ndarray
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """`calibration._tail_fit` for many calibrators at once (rows of `counts`), to the same
    doubles: whether each has a fitted tail, its quantile u and its mean excess (u and excess
    mean nothing where not fitted).

    Sums run from the top bin down, as the calibrator's loop does (the bins above a
    calibrator's top are empty, and adding their zeros changes no sum)."""
    down = counts[:, ::-1].astype(np.float64)
    mass = np.cumsum(down, axis=1)  # the mass of the bins from the top down to each
    moment = np.cumsum(down * _CENTRES_DOWN, axis=1)
    reached = mass >= tail[:, None]
    fitted = reached.any(axis=1)
    j = reached.argmax(axis=1)  # the first bin from the top at which the tail is reached
    rows = np.arange(len(j))
    k = (_BINS - 1 - j).astype(np.float64)  # that bin
    c = down[rows, j]
    above = np.maximum(j - 1, 0)
    mass_above = np.where(j > 0, mass[rows, above], 0.0)
    moment_above = np.where(j > 0, moment[rows, above], 0.0)
    part = tail - mass_above  # the top `part` of bin k belongs to the tail
    with np.errstate(divide="ignore", invalid="ignore"):  # c is 0 only where not fitted
        u = k + 1.0 - part / c
        moment_tail = moment_above + part * (k + 1.0 - 0.5 * part / c)
    prior = _MIN_TAIL * weight
    excess = (moment_tail - tail * u + prior * prior_excess) / (tail + prior)
    return fitted, u, np.where(excess < 0.25, 0.25, excess)
