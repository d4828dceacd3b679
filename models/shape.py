"""How unlike anything in its recent past a metric's latest stretch of values is: the `shape`
channel.

Per VM and metric the bank keeps the last `history` values in a ring (float32). A sample's raw
score, per metric, is the distance from the latest `length` values (the sample and the ones
before it) to the nearest earlier stretch of the same length in the ring that does not overlap
them: the mean absolute difference, value by value, in units of the metric's range (the
`range` channel's envelope, given by the caller). The sample's score is the largest over its
metrics. In the time-series literature this nearest-neighbour distance is the discord score of
a matrix profile.

What it sees that the other channels do not: a change of pattern made of ordinary values. A
burst of spikes denser than any before, or a flat series that starts to oscillate, stays
inside the VM's range and within its usual z-scores, but no stretch of the last `history`
samples looks like it. A rhythm the VM has shown before, however spiky, finds its match.

Cost: `history` x metrics x 4 bytes per VM (12 KB for 512 values of six metrics) and
`history` x `length` operations per metric and sample, which is why the engine leaves the
channel off unless asked (`EngineConfig.shape_history`).
"""

from __future__ import annotations

import numpy as np

from models.metric_bank import batch_rounds

# (VM, metric) pairs computed together, so that their arrays stay in the CPU cache: 1.5-1.8x
# faster than all 1,200 pairs of a 200-sample batch at once, at 512 values
_BLOCK = 32


class ShapeBank:
    """Per-(VM slot, metric) ring of recent values; `observe` scores and learns a batch."""

    def __init__(
        self, n_metrics: int, history: int = 512, length: int = 8, capacity: int = 64
    ) -> None:
        if length < 2:
            raise ValueError("length must be at least 2")
        if history < 4 * length:
            raise ValueError("history must hold at least four stretches of `length` values")
        self.n_metrics = n_metrics
        self.history = history
        self.length = length
        # [slot, metric, position]: the ring of values (NaN: not written yet)
        self._ring = np.full((capacity, n_metrics, history), np.nan, dtype=np.float32)
        self._written = np.zeros((capacity, n_metrics), dtype=np.int64)  # values ever written

    def reset(self, slot: int) -> None:
        """Start `slot` afresh, as every slot must before use (growing the arrays if needed)."""
        capacity = self._ring.shape[0]
        if slot >= capacity:
            size = max(2 * capacity, slot + 1)
            ring = np.empty((size, self.n_metrics, self.history), np.float32)
            ring[:capacity] = self._ring
            written = np.zeros((size, self.n_metrics), np.int64)
            written[:capacity] = self._written
            self._ring, self._written = ring, written
        self._ring[slot] = np.nan
        self._written[slot] = 0

    def to_bytes(self, slot: int) -> bytes:
        """Per metric, how many values were written (int64), then each metric's last values
        in time order (float32, NaN-padded in front to `history`)."""
        written = self._written[slot]
        ordered = self._ring[slot][np.arange(self.n_metrics)[:, None], self._order(written)]
        return written.astype("<i8").tobytes() + ordered.astype("<f4", copy=False).tobytes()

    def load_bytes(self, slot: int, data: bytes) -> None:
        """Restore `to_bytes` output, from a bank of any history length (a setting changed
        between a worker and the next): the latest values that fit."""
        head = 8 * self.n_metrics
        stored, rest = divmod(len(data) - head, 4 * self.n_metrics)
        if rest or stored < 1:
            raise ValueError("not a shape history")
        self.reset(slot)
        written = np.frombuffer(data[:head], dtype="<i8")
        ordered = np.frombuffer(data[head:], dtype="<f4").reshape(self.n_metrics, stored)
        kept = min(stored, self.history)
        latest = np.full((self.n_metrics, self.history), np.nan, dtype=np.float32)
        latest[:, self.history - kept :] = ordered[:, stored - kept :]
        self._written[slot] = written
        self._ring[slot][np.arange(self.n_metrics)[:, None], self._order(written)] = latest

    def observe(self, slots: np.ndarray, X: np.ndarray, widths: np.ndarray) -> np.ndarray:
        """Each row's largest shape score over its metrics, then learn the row.

        `X` holds one row per sample (NaN: metric absent), `widths` each metric's range before
        the sample (NaN or 0: no range yet, not scored); a VM may repeat (rows in order). A
        metric is scored once its ring holds four stretches; NaN where no metric is."""
        out = np.full(len(slots), np.nan)
        for rows in batch_rounds(slots):
            out[rows] = self._observe_round(slots[rows], X[rows], widths[rows])
        return out

    def _order(self, written: np.ndarray) -> np.ndarray:
        """Ring positions of each metric's last `history` values, oldest first."""
        return (written[..., None] + np.arange(self.history)) % self.history

    def _observe_round(self, slots: np.ndarray, X: np.ndarray, widths: np.ndarray) -> np.ndarray:
        """Rows of distinct VMs at once."""
        rows, metrics = np.nonzero(~np.isnan(X))
        pair_slots = slots[rows]
        written = self._written[pair_slots, metrics]
        self._ring[pair_slots, metrics, written % self.history] = X[rows, metrics]
        written += 1
        self._written[pair_slots, metrics] = written
        width = widths[rows, metrics]
        m = self.length
        scored = (written >= 4 * m) & (width > 0.0)  # False for NaN widths too
        out = np.full(len(slots), np.nan)
        if not scored.any():
            return out
        rows, metrics, width = rows[scored], metrics[scored], width[scored]
        pair_slots, written = pair_slots[scored], written[scored]
        nearest = np.concatenate(
            [
                self._nearest(
                    pair_slots[i : i + _BLOCK], metrics[i : i + _BLOCK], written[i : i + _BLOCK]
                )
                for i in range(0, len(rows), _BLOCK)
            ]
        )
        np.fmax.at(out, rows, nearest / width)
        return out

    def _nearest(self, slots: np.ndarray, metrics: np.ndarray, written: np.ndarray) -> np.ndarray:
        """Per (slot, metric) pair, the mean distance from its latest stretch to the nearest
        earlier one (NaN: none written yet)."""
        h, m = self.history, self.length
        ring = self._ring[slots, metrics]  # (pairs, history), each row a copy
        newest = written % h  # one past the latest value: where the oldest one is
        latest = np.take_along_axis(ring, (newest[:, None] - m + np.arange(m)) % h, axis=1)
        # The stretch starting at ring position s, for every s (wrapping past the end), so
        # that no stretch needs reordering; its distance to the latest stretch is summed
        # value by value, m passes over contiguous rows.
        wrapped = np.concatenate((ring, ring[:, : m - 1]), axis=1)
        total = np.abs(wrapped[:, :h] - latest[:, :1])
        step = np.empty_like(total)
        for k in range(1, m):
            np.subtract(wrapped[:, k : k + h], latest[:, k : k + 1], out=step)
            np.abs(step, out=step)
            total += step
        # Left out: stretches that overlap the latest one (they start less than 2m - 1 before
        # the newest position); NaN: stretches holding values not written yet.
        overlaps = (np.arange(h) - newest[:, None]) % h >= h - 2 * m + 1
        total[overlaps] = np.nan
        return np.fmin.reduce(total, axis=1) / m
