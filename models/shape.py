"""How unlike anything in its recent past a metric's latest stretch of values is: the `shape`
channel.

Per VM and metric the bank keeps the last `history` values in a ring. A sample's raw
score, per metric, is the distance from the latest `length` values (the sample and the ones
before it) to the nearest earlier stretch of the same length in the ring that does not overlap
them: the mean absolute difference, value by value, in units of the metric's range (the
`range` channel's envelope, given by the caller). The engine scores the sample by the largest
over its metrics, and an alert's explanation credits each metric with its own. In the
time-series literature this nearest-neighbour distance is the discord score of a matrix
profile.

What it sees that the other channels do not: a change of pattern made of ordinary values. A
burst of spikes denser than any before, or a flat series that starts to oscillate, stays
inside the VM's range and within its usual z-scores, but no stretch of the last `history`
samples looks like it. A rhythm the VM has shown before, however spiky, finds its match.

The ring holds 4-bit codes, two to a byte: a metric's frame spans its range and half the
range's width on either side in 15 steps (13 % of the range each). A stretch is eight values,
so its mean distance still resolves a few % of the range, and the distances that matter are
10-40 % of it: on NAB's development subset 4-bit codes score as 8-bit codes and float32
values did (docs/benchmarks.md). The frame is drawn again, re-coding the ring, when a value
falls outside it or the range shrinks to a quarter of what the frame was drawn for.

A metric's stretch is scored once every `every` values (every value is learned). A new
pattern stays unlike the ring's past for as long as it lasts, so scoring every eighth
stretch finds it a few samples later at most, for an eighth of the comparisons: on NAB every
2nd to 16th stretch scored alike, and better than every one (fewer false positives).

Cost: `history / 2` bytes per metric and VM (768 B for 256 values of six metrics) and
`history` x `length` / `every` operations per metric and sample.
"""

from __future__ import annotations

import numpy as np

from models.metric_bank import batch_rounds, grown_rows

# (VM, metric) pairs compared together: big enough to spread numpy's per-call cost, small
# enough for their arrays to stay in the CPU cache (52-55 µs per six-metric sample against 73
# with 32 pairs, 2026-12-05)
_BLOCK = 128
_TOP = 15  # codes 0..15 (4 bits) span a metric's frame
_MARGIN = 0.5  # a frame spans the metric's range and half its width on either side
# A frame is drawn again when a value falls outside it, or when the range has shrunk to less
# than a quarter of what the frame was drawn for (the envelope relaxes after a one-off spike).
_SHRINK = 4.0


class ShapeBank:
    """Per-(VM slot, metric) ring of recent values as 4-bit codes; `observe` scores and learns
    a batch."""

    def __init__(
        self,
        n_metrics: int,
        history: int = 256,
        length: int = 8,
        every: int = 8,
        capacity: int = 64,
    ) -> None:
        if length < 2:
            raise ValueError("length must be at least 2")
        if history < 4 * length or history % 2:
            raise ValueError(
                "history must be even and hold at least four stretches of `length` values"
            )
        if every < 1:
            raise ValueError("every must be at least 1")
        self.n_metrics = n_metrics
        self.history = history
        self.length = length
        self.every = every
        # Distances are sums of `length` code differences of at most _TOP each: one byte
        # holds them for stretches of up to 8 values (half the memory traffic of two bytes),
        # with the type's largest value left for a stretch that does not count.
        self._distance = np.int8 if _TOP * length < np.iinfo(np.int8).max else np.int16
        self._none = np.iinfo(self._distance).max
        # [slot, metric, byte]: the ring of codes, position p in byte p // 2 (even positions
        # in the low nibble); [slot, metric]: the frame's lowest value and step (value =
        # lowest + code * step; NaN: no frame yet), values ever written, and how many of the
        # latest ones the ring holds
        self._codes = np.zeros((capacity, n_metrics, history // 2), dtype=np.uint8)
        self._frame = np.full((capacity, n_metrics, 2), np.nan)
        self._written = np.zeros((capacity, n_metrics), dtype=np.int64)
        self._held = np.zeros((capacity, n_metrics), dtype=np.int64)

    def reset(self, slot: int) -> None:
        """Start `slot` afresh, as every slot must before use (growing the arrays if needed)."""
        capacity = self._codes.shape[0]
        if slot >= capacity:
            size = max(2 * capacity, slot + 1)
            self._codes = grown_rows(self._codes, size)
            self._frame = grown_rows(self._frame, size)
            self._written = grown_rows(self._written, size)
            self._held = grown_rows(self._held, size)
        self._codes[slot] = 0
        self._frame[slot] = np.nan
        self._written[slot] = 0
        self._held[slot] = 0

    def to_bytes(self, slot: int) -> bytes:
        """Per metric: values written and values held (int64), the frame's lowest value and
        step (float64), then the codes in time order, oldest first (`history` 4-bit codes
        each, two to a byte as in the ring)."""
        written = self._written[slot]
        rows = np.arange(self.n_metrics)[:, None]
        ordered = _unpacked(self._codes[slot])[rows, self._order(written)]
        counts = np.stack((written, self._held[slot]), axis=1).astype("<i8")
        head = counts.tobytes() + self._frame[slot].astype("<f8").tobytes()
        return head + _packed(ordered).tobytes()

    def load_bytes(self, slot: int, data: bytes) -> None:
        """Restore `to_bytes` output, from a bank of any history length (a setting changed
        between a worker and the next): the latest values that fit."""
        n = self.n_metrics
        head = 32 * n
        stored_bytes, rest = divmod(len(data) - head, n)
        if rest or stored_bytes < 1:
            raise ValueError("not a shape history")
        self.reset(slot)
        counts = np.frombuffer(data[: 16 * n], dtype="<i8").reshape(n, 2)
        frame = np.frombuffer(data[16 * n : head], dtype="<f8").reshape(n, 2)
        packed = np.frombuffer(data[head:], dtype=np.uint8).reshape(n, stored_bytes)
        ordered = _unpacked(packed)
        stored = ordered.shape[1]
        kept = min(stored, self.history)
        latest = np.zeros((n, self.history), dtype=np.uint8)
        latest[:, self.history - kept :] = ordered[:, stored - kept :]
        written = counts[:, 0]
        self._written[slot] = written
        self._held[slot] = np.minimum(counts[:, 1], kept)
        self._frame[slot] = frame
        ring = np.empty((n, self.history), dtype=np.uint8)
        ring[np.arange(n)[:, None], self._order(written)] = latest
        self._codes[slot] = _packed(ring)

    def observe(self, slots: np.ndarray, X: np.ndarray, ranges: np.ndarray) -> np.ndarray:
        """Each row's shape score per metric (rows, metrics), then learn the row.

        `X` holds one row per sample (NaN: metric absent), `ranges` each metric's highest and
        lowest values before the sample (rows, 2, metrics; NaN: none yet), as the range bank
        reports them; a VM may repeat (rows in order). A metric is scored once its ring holds
        four stretches and its range has a width, on every `every`-th value it learns; NaN
        where it is not scored."""
        out = np.full(X.shape, np.nan)
        for rows in batch_rounds(slots):
            out[rows] = self._observe_round(slots[rows], X[rows], ranges[rows])
        return out

    def _order(self, written: np.ndarray) -> np.ndarray:
        """Ring positions of each metric's last `history` values, oldest first."""
        return (written[..., None] + np.arange(self.history)) % self.history

    def _observe_round(self, slots: np.ndarray, X: np.ndarray, ranges: np.ndarray) -> np.ndarray:
        """Rows of distinct VMs at once."""
        rows, metrics = np.nonzero(~np.isnan(X))
        pairs = slots[rows]
        x = X[rows, metrics]
        high, low = ranges[rows, 0, metrics], ranges[rows, 1, metrics]
        width = high - low  # the range the sample is scored against
        frame = self._frame[pairs, metrics]
        self._reframe(pairs, metrics, frame, x, np.fmin(low, x), np.fmax(high, x))
        written = self._written[pairs, metrics]
        position = written % self.history
        byte = self._codes[pairs, metrics, position // 2]
        odd = (position % 2).astype(bool)
        code = _encode(x, frame)
        self._codes[pairs, metrics, position // 2] = np.where(
            odd, (byte & 0x0F) | (code << 4), (byte & 0xF0) | code
        )
        written += 1
        self._written[pairs, metrics] = written
        held = np.minimum(self._held[pairs, metrics] + 1, self.history)
        self._held[pairs, metrics] = held
        m = self.length
        # False for NaN widths too
        scored = (held >= 4 * m) & (width > 0.0) & (written % self.every == 0)
        out = np.full(X.shape, np.nan)
        if not scored.any():
            return out
        rows, metrics, pairs = rows[scored], metrics[scored], pairs[scored]
        written, held, step = written[scored], held[scored], frame[scored, 1]
        nearest = np.concatenate(
            [
                self._nearest(
                    pairs[b : b + _BLOCK],
                    metrics[b : b + _BLOCK],
                    written[b : b + _BLOCK],
                    held[b : b + _BLOCK],
                )
                for b in range(0, len(rows), _BLOCK)
            ]
        )
        out[rows, metrics] = nearest * step / width[scored]
        return out

    def _reframe(
        self,
        pairs: np.ndarray,
        metrics: np.ndarray,
        frame: np.ndarray,
        x: np.ndarray,
        low: np.ndarray,
        high: np.ndarray,
    ) -> None:
        """Draw the frame again where `x` falls outside it or the range (`low`..`high`, with
        `x`) has shrunk well inside it, re-coding the ring's values; `frame` is updated too."""
        span = _TOP * frame[:, 1]
        width = high - low
        outside = ~((x >= frame[:, 0]) & (x <= frame[:, 0] + span))  # True without a frame
        shrunk = span > _SHRINK * (1.0 + 2.0 * _MARGIN) * width
        redraw = np.flatnonzero(outside | (shrunk & (width > 0.0)))
        if not len(redraw):
            return
        width, low, x = width[redraw], low[redraw], x[redraw]
        step = (1.0 + 2.0 * _MARGIN) * width / _TOP
        lowest = low - _MARGIN * width
        # no width yet (one value, or a constant): a narrow frame centred on the value
        flat = ~(width > 0.0)
        flat_step = np.maximum(np.abs(x), 1.0) * 1e-3
        step = np.where(flat, flat_step, step)
        lowest = np.where(flat, x - (_TOP + 1) // 2 * flat_step, lowest)
        new = np.stack((lowest, step), axis=1)
        p, mm = pairs[redraw], metrics[redraw]
        old = frame[redraw]
        values = old[:, :1] + _unpacked(self._codes[p, mm]) * old[:, 1:]
        self._codes[p, mm] = _packed(_encode(values, new))
        frame[redraw] = new
        self._frame[p, mm] = new

    def _nearest(
        self, slots: np.ndarray, metrics: np.ndarray, written: np.ndarray, held: np.ndarray
    ) -> np.ndarray:
        """Per (slot, metric) pair, the mean distance in codes from its latest stretch to the
        nearest earlier one held (NaN: none)."""
        h, m = self.history, self.length
        ring = _unpacked(self._codes[slots, metrics])  # (pairs, history): codes 0..15
        ring = ring.view(np.int8) if self._distance is np.int8 else ring.astype(np.int16)
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
        # A stretch counts when it starts among the values held and ends before the latest
        # stretch starts (position 0 of `age`: the oldest place in the ring).
        age = (np.arange(h) - newest[:, None]) % h
        counts = (age >= h - held[:, None]) & (age <= h - 2 * m)
        total[~counts] = self._none
        best = total.min(axis=1)
        return np.where(best < self._none, best / m, np.nan)


def _packed(codes: np.ndarray) -> np.ndarray:
    """4-bit codes along the last axis (an even number) two to a byte, the first of each
    pair in the low nibble."""
    return codes[..., 0::2] | (codes[..., 1::2] << 4)


def _unpacked(packed: np.ndarray) -> np.ndarray:
    """The codes `_packed` holds, one to a byte."""
    codes = np.empty((*packed.shape[:-1], 2 * packed.shape[-1]), dtype=np.uint8)
    codes[..., 0::2] = packed & 0x0F
    codes[..., 1::2] = packed >> 4
    return codes


def _encode(values: np.ndarray, frame: np.ndarray) -> np.ndarray:
    """Values as codes of their frames (lowest value, step) along the last axis of `frame`."""
    lowest, step = frame[..., 0], frame[..., 1]
    if values.ndim > lowest.ndim:
        lowest, step = lowest[..., None], step[..., None]
    codes = np.rint((values - lowest) / step)
    return np.clip(np.nan_to_num(codes), 0, _TOP).astype(np.uint8)
