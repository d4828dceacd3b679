"""How far a sample goes beyond the widest range its VM has shown: the engine's `range` channel.

Per VM and metric the bank keeps two float32s: the highest and the lowest value seen. Each
relaxes toward the values that follow it by `decay` of the gap per sample (a half-life of
ln 2 / decay samples: about 16 days of 1-minute data at the default, 80 of 5-minute data), so
a one-off extreme fades instead of silencing the channel for good. A sample's raw score is its
largest excess over that envelope, in units of the envelope's width (0 inside it, 0.5 for a
value half the range above the highest one so far), scored against the envelope before the
sample.

A VM's first day sets records all the time (its range is not known until it has been
through its daily cycle), so the bank scores a VM only once `settle` seconds of event time
have passed since its first sample (NaN before: the channel does not count); the envelope
learns from the start.

Why a channel of its own: the standardiser and the calibrators forget in a few hundred to a
few thousand samples, so on a VM whose spikes are routine the biggest spike of its life reads
like the others. The envelope remembers for weeks in 8 bytes per metric; the engine's
calibrator for the channel turns its excesses into p-values like any other channel's.
"""

from __future__ import annotations

import math

import numpy as np

from models.metric_bank import batch_rounds, grown_rows

_MIN_ROUND = 8  # rows per round below which the scalar loop is cheaper than numpy


class RangeBank:
    """Per-(VM slot, metric) highest and lowest values; `observe` scores and learns a batch."""

    def __init__(
        self, n_metrics: int, decay: float = 3e-5, settle: float = 86_400.0, capacity: int = 64
    ) -> None:
        if not 0.0 <= decay < 1.0:
            raise ValueError("decay must be in [0, 1)")
        self.n_metrics = n_metrics
        self.decay = decay
        self.settle = settle
        # [slot, 0, metric]: highest, [slot, 1, metric]: lowest; NaN until the metric is seen
        self._bounds = np.full((capacity, 2, n_metrics), np.nan, dtype=np.float32)
        self._since = np.full(capacity, np.nan)  # event time of the slot's first sample

    def reset(self, slot: int) -> None:
        """Start `slot` afresh, as every slot must before use. Growing doubles the arrays and
        leaves the new rows untouched (so not resident) until they are reset."""
        capacity = self._bounds.shape[0]
        if slot >= capacity:
            size = max(2 * capacity, slot + 1)
            self._bounds = grown_rows(self._bounds, size)
            self._since = grown_rows(self._since, size)
        self._bounds[slot] = np.nan
        self._since[slot] = np.nan

    def to_bytes(self, slot: int) -> bytes:
        """The time of the slot's first sample (float64), then its highest and its lowest
        values (float32); NaN: not seen yet."""
        since = np.array([self._since[slot]], dtype="<f8").tobytes()
        return since + self._bounds[slot].astype("<f4", copy=False).tobytes()

    def load_bytes(self, slot: int, data: bytes) -> None:
        """Restore `to_bytes` output (growing the arrays when the slot is beyond them)."""
        self.reset(slot)
        self._since[slot] = np.frombuffer(data[:8], dtype="<f8")[0]
        self._bounds[slot] = np.frombuffer(data[8:], dtype="<f4").reshape(2, self.n_metrics)

    def observe(
        self, slots: np.ndarray, ts: np.ndarray, X: np.ndarray
    ) -> tuple[np.ndarray, np.ndarray]:
        """Each row's largest excess over its VM's range before it (0 inside; NaN while the VM
        is younger than `settle`), then learn it.

        `X` holds one row per sample (NaN: metric absent), `ts` the rows' event times; a VM
        may repeat (rows in order). Also returns the range each row was scored against:
        (rows, 2, metrics), highest then lowest values (NaN: not seen yet)."""
        rounds = batch_rounds(slots)
        before = np.empty((len(slots), 2, self.n_metrics))
        if len(slots) < _MIN_ROUND * len(rounds):
            rows = zip(slots.tolist(), ts.tolist(), X.tolist(), strict=True)
            scores = [
                self._observe_one(slot, t, row, before[r]) for r, (slot, t, row) in enumerate(rows)
            ]
            return np.array(scores), before
        out = np.zeros(len(slots))
        for rows in rounds:
            out[rows] = self._observe_round(slots[rows], ts[rows], X[rows], before, rows)
        return out, before

    def _observe_one(self, slot: int, ts: float, row: list[float], before: np.ndarray) -> float:
        """One sample in plain Python: the same arithmetic as `_observe_round`."""
        since = float(self._since[slot])
        if since != since:
            since = self._since[slot] = ts
        block = self._bounds[slot]
        before[:] = block
        highs, lows = block.tolist()
        d = self.decay
        best = 0.0
        for i, x in enumerate(row):
            if x != x:
                continue
            hi, lo = highs[i], lows[i]
            if hi != hi:  # first value of the metric
                highs[i] = lows[i] = x
                continue
            width = hi - lo
            if width > 0.0:
                excess = (x - hi if x - hi > lo - x else lo - x) / width
                if excess > best:
                    best = excess
            highs[i] = x if x > hi else hi - (hi - x) * d
            lows[i] = x if x < lo else lo + (x - lo) * d
        block[0] = highs
        block[1] = lows
        return best if ts - since >= self.settle else math.nan

    def _observe_round(
        self, slots: np.ndarray, ts: np.ndarray, X: np.ndarray, before: np.ndarray, rows: np.ndarray
    ) -> np.ndarray:
        """Rows of distinct VMs at once (their ranges before them go to `before[rows]`)."""
        since = self._since[slots]
        since = np.where(np.isnan(since), ts, since)
        self._since[slots] = since
        block = self._bounds[slots].astype(np.float64)  # (rows, 2, metrics)
        before[rows] = block
        hi, lo = block[:, 0], block[:, 1]
        present = ~np.isnan(X)
        known = present & ~np.isnan(hi)
        width = hi - lo
        with np.errstate(invalid="ignore", divide="ignore"):
            excess = np.maximum(X - hi, lo - X) / width
        scores = np.where(known & (width > 0.0), excess, 0.0).max(axis=1, initial=0.0)
        d = self.decay
        new_hi = np.where(hi < X, X, hi - (hi - X) * d)
        new_lo = np.where(lo > X, X, lo + (X - lo) * d)
        first = present & ~known
        block[:, 0] = np.where(known, new_hi, np.where(first, X, hi))
        block[:, 1] = np.where(known, new_lo, np.where(first, X, lo))
        self._bounds[slots] = block
        return np.where(ts - since >= self.settle, scores, np.nan)
