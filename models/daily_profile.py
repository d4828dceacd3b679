"""What each metric usually reads at this time of day, and how far a sample is from it.

Many VM metrics follow the day: business-hours load, nightly batches, backups. A value that is
ordinary for the day as a whole can be wrong for the hour (the nightly batch did not run, the
daytime plateau came in at half height), which neither the distance from the typical level nor
the forecast residual sees. For every VM slot and metric, `DailyProfiles` keeps per
time-of-day bin (UTC) an exponentially weighted mean of the metric and of its absolute
deviation from that mean. A bin forgets at `day_alpha` per day whatever the sampling interval
(each sample counts for its share of the bin's span), and a sample moves its bin by at most
`clip` deviations, so one odd day barely shifts the profile while a new rhythm is learned
within days. Means are stored with their weight (bias correction), so a young bin is not
pulled toward zero.

The profile score of a sample is its distance from a bin's mean in units of that bin's
deviation, floored at `floor` times the metric's overall mean deviation (a noiseless rhythm
does not turn a tiny wiggle into a huge score), once its own bin holds about `min_days` days.
It is taken against the best-matching of its own bin and the two neighbouring ones: a job that
starts a little late, a change that falls inside a bin or a daylight-saving shift is not an
anomaly. Learning goes to the sample's own bin only.

Only metrics with a daily rhythm get a score. For each metric the bank compares, over the
last few hundred samples, the mean deviation from the profile with the mean deviation from a
slow winsorised level; the profile counts while that ratio is below `gate`. On a metric without
a rhythm the ratio stays near 1 and the profile would only add noise to the other channels.

State per (slot, metric): 5 floats (samples seen, level, deviation from the level, deviation
from the profile, weight of the comparison) and 3 per bin (weighted mean, weighted deviation,
weight), the bins stored as float32.
"""

from __future__ import annotations

import math

import numpy as np

from models.metric_bank import batch_rounds

DAY = 86_400.0
SCALARS = ("seen", "level", "overall", "seasonal", "compared")
_RATE = 0.002  # per sample: the level and the profile-vs-level comparison span ~500 samples
_MIN_COMPARED = 0.75  # comparison weight (~700 samples) before a profile may count
_TINY = 1e-9
_MIN_ROUND = 8  # rounds of fewer rows run in plain Python (numpy's per-call cost)


class DailyProfiles:
    """Time-of-day profiles of every metric of every VM slot (arrays with one row per slot)."""

    def __init__(
        self,
        n_metrics: int,
        bins: int = 24,
        day_alpha: float = 0.3,
        min_days: float = 2.0,
        clip: float = 3.0,
        floor: float = 0.1,
        gate: float = 0.4,
        capacity: int = 64,
    ) -> None:
        self.n_metrics = n_metrics
        self.bins = bins
        self.day_alpha = day_alpha
        self.min_weight = 1.0 - (1.0 - day_alpha) ** min_days
        self.clip = clip
        self.floor = floor
        self.gate = gate
        self._scalars = np.zeros((capacity, n_metrics, len(SCALARS)))
        # weighted mean, weighted deviation, weight; float32 (computed in float64, rounded on
        # store) halves the largest part of the VM's state, and checkpoints hold it exactly
        self._bins = np.zeros((capacity, n_metrics, bins, 3), dtype=np.float32)

    # ------------------------------------------------------------------ slots

    def reset(self, slot: int) -> None:
        """Start `slot` afresh (growing the arrays when the slot is beyond them)."""
        capacity = self._scalars.shape[0]
        if slot >= capacity:
            size = max(2 * capacity, slot + 1)
            scalars = np.zeros((size, *self._scalars.shape[1:]))
            scalars[:capacity] = self._scalars
            bins = np.zeros((size, *self._bins.shape[1:]), dtype=np.float32)
            bins[:capacity] = self._bins
            self._scalars, self._bins = scalars, bins
        self._scalars[slot] = 0.0
        self._bins[slot] = 0.0

    def state(self, slot: int) -> tuple[list[float], bytes]:
        """The slot's scalars (metric-major) and its bins as float32 bytes."""
        return (
            self._scalars[slot].ravel().tolist(),
            self._bins[slot].astype("<f4", copy=False).tobytes(),
        )

    def load_state(self, slot: int, scalars: list[float] | tuple[float, ...], bins: bytes) -> None:
        self.reset(slot)
        self._scalars[slot] = np.asarray(scalars, dtype=float).reshape(self.n_metrics, -1)
        self._bins[slot] = np.frombuffer(bins, dtype="<f4").reshape(self._bins.shape[1:])

    N_SCALARS_PER_METRIC = len(SCALARS)

    def explained(self, slot: int, metric: int) -> float:
        """Mean deviation from the profile over mean deviation from the level (1: no rhythm)."""
        _, _, overall, seasonal, compared = self._scalars[slot, metric].tolist()
        return _explained(overall, seasonal, compared)

    def usual(self, slot: int, metric: int, ts: float) -> float | None:
        """What the metric usually reads at `ts`'s hour; None while its bin is too young or
        the metric has no daily rhythm."""
        if self.explained(slot, metric) >= self.gate:
            return None
        mean, _, weight = self._bins[slot, metric, self._bin(ts)].tolist()
        return mean / weight if weight >= self.min_weight else None

    def _bin(self, ts: float) -> int:
        return int((ts % DAY) / DAY * self.bins) % self.bins

    # ------------------------------------------------------------------ batch update

    def observe(
        self, slots: np.ndarray, ts: np.ndarray, dt: np.ndarray, X: np.ndarray
    ) -> tuple[np.ndarray, np.ndarray]:
        """Profile score of each sample against its VM's profiles before it, then learn it.

        `X` holds one row per sample (NaN: metric absent), `dt` the time since the VM's
        previous sample (0: unknown). Returns the scores, -1 where the metric is absent, its
        bin is too young or it has no daily rhythm, and what each scored metric usually read
        at the sample's hour before it (its bin's mean; NaN where not scored).
        """
        out = np.full(X.shape, -1.0)
        usual = np.full(X.shape, np.nan)
        rounds = batch_rounds(slots)
        if len(slots) < _MIN_ROUND * len(rounds):
            for r, (slot, t, gap, x_row) in enumerate(
                zip(slots.tolist(), ts.tolist(), dt.tolist(), X.tolist(), strict=True)
            ):
                out[r], usual[r] = self._observe_one(slot, t, gap, x_row)
            return out, usual
        for rows in rounds:
            out[rows], usual[rows] = self._observe_round(slots[rows], ts[rows], dt[rows], X[rows])
        return out, usual

    def _observe_one(
        self, slot: int, ts: float, dt: float, x_row: list[float]
    ) -> tuple[list[float], list[float]]:
        bins = self.bins
        b = self._bin(ts)
        near = [(b - 1) % bins, b, (b + 1) % bins]
        span = DAY / bins
        share = dt / span if 0.0 < dt < span else 1.0
        a = 1.0 - (1.0 - self.day_alpha) ** share
        clip, floor, min_weight = self.clip, self.floor, self.min_weight
        scalars = self._scalars[slot].tolist()
        if 0 < b < bins - 1:
            cells = self._bins[slot, :, b - 1 : b + 2].tolist()  # metric, near bin, field
        else:
            cells = self._bins[slot][:, near].tolist()
        own = [near_cells[1] for near_cells in cells]
        out = [-1.0] * len(x_row)
        usual = [math.nan] * len(x_row)
        for i, x in enumerate(x_row):
            if x != x:  # NaN: absent
                continue
            seen, level, overall, seasonal, compared = scalars[i]
            means, devs, weights = zip(*cells[i], strict=True)
            # the level: a winsorised EW mean (1/n weights at first)
            seen += 1.0
            if seen == 1.0:
                level = x
            step = x - level
            limit = clip * overall
            if compared > 0.0 and abs(step) > limit:
                step = limit if step > 0.0 else -limit
            rate = 1.0 / seen if seen * _RATE < 1.0 else _RATE
            new_level = level + rate * step
            least = floor * overall
            if least < _TINY:
                least = _TINY
            # score: against the best-matching ready bin of this hour and its neighbours
            score = -1.0
            if weights[1] >= min_weight:
                best = math.inf
                for k in range(3):
                    w = weights[k]
                    if w < min_weight:
                        continue
                    scale = devs[k] / w
                    if scale < least:
                        scale = least
                    ad = abs(x - means[k] / w)
                    if ad / scale < best:
                        best = ad / scale
                score = best
                seasonal += _RATE * (abs(x - means[1] / weights[1]) - seasonal)
                overall += _RATE * (abs(x - level) - overall)
                compared += _RATE * (1.0 - compared)
            # learn: this hour's bin only, winsorised
            mean, dev, weight = means[1], devs[1], weights[1]
            if weight <= 0.0:
                mean = a * x
            else:
                m = mean / weight
                scale = dev / weight
                if scale < least:
                    scale = least
                d = x - m
                ad = abs(d)
                limit = clip * scale
                if ad > limit:
                    d = limit if d > 0.0 else -limit
                    ad = limit
                dev = (1.0 - a) * dev + a * ad
                mean = (1.0 - a) * mean + a * (m + d)
            weight = (1.0 - a) * weight + a
            scalars[i] = [seen, new_level, overall, seasonal, compared]
            own[i] = [mean, dev, weight]
            if score >= 0.0 and _explained(overall, seasonal, compared) < self.gate:
                out[i] = score
                usual[i] = means[1] / weights[1]
        self._scalars[slot] = scalars
        self._bins[slot, :, b] = own
        return out, usual

    def _observe_round(
        self, slots: np.ndarray, ts: np.ndarray, dt: np.ndarray, X: np.ndarray
    ) -> tuple[np.ndarray, np.ndarray]:
        """`_observe_one` for rows of distinct slots at once (same arithmetic, in numpy)."""
        bins = self.bins
        b = ((ts % DAY) / DAY * bins).astype(np.intp) % bins
        span = DAY / bins
        share = np.where((dt > 0.0) & (dt < span), dt / span, 1.0)[:, None]
        a = 1.0 - (1.0 - self.day_alpha) ** share
        present = ~np.isnan(X)
        x = np.where(present, X, 0.0)
        S = self._scalars[slots]  # (rows, metrics, 5), a copy written back at the end
        metric = np.arange(self.n_metrics)[None, :, None]
        near = np.stack([(b - 1) % bins, b, (b + 1) % bins], axis=1)[:, None, :]
        # (rows, metrics, near bins, fields), computed in float64
        N = self._bins[slots[:, None, None], metric, near].astype(np.float64)
        seen, level, overall, seasonal, compared = np.moveaxis(S, -1, 0)
        means, devs, weights = np.moveaxis(N, -1, 0)  # each (rows, metrics, near)

        seen = seen + 1.0
        level = np.where(seen == 1.0, x, level)
        step = x - level
        limit = self.clip * overall
        step = np.where((compared > 0.0) & (np.abs(step) > limit), np.copysign(limit, step), step)
        rate = np.where(seen * _RATE < 1.0, 1.0 / seen, _RATE)
        new_level = level + rate * step
        least = np.maximum(self.floor * overall, _TINY)

        usable = weights >= self.min_weight
        with np.errstate(divide="ignore", invalid="ignore"):
            scale = np.maximum(np.where(usable, devs / weights, 0.0), least[..., None])
            ad = np.where(usable, np.abs(x[..., None] - means / weights), np.inf)
        ready = present & usable[..., 1]
        score = np.where(ready, np.min(ad / scale, axis=-1), -1.0)
        seasonal = np.where(ready, seasonal + _RATE * (ad[..., 1] - seasonal), seasonal)
        overall = np.where(ready, overall + _RATE * (np.abs(x - level) - overall), overall)
        compared = np.where(ready, compared + _RATE * (1.0 - compared), compared)

        mean, dev, weight = means[..., 1], devs[..., 1], weights[..., 1]
        young = weight <= 0.0
        with np.errstate(divide="ignore", invalid="ignore"):
            m = np.where(young, 0.0, mean / weight)
            own = np.maximum(np.where(young, 0.0, dev / weight), least)
        d = x - m
        ad = np.abs(d)
        limit = self.clip * own
        over = ad > limit
        d = np.where(over, np.copysign(limit, d), d)
        ad = np.where(over, limit, ad)
        new_dev = np.where(young, dev, (1.0 - a) * dev + a * ad)
        new_mean = np.where(young, a * x, (1.0 - a) * mean + a * (m + d))
        new_weight = (1.0 - a) * weight + a

        S_new = np.stack([seen, new_level, overall, seasonal, compared], axis=-1)
        C_new = np.stack([new_mean, new_dev, new_weight], axis=-1)
        C_old = np.stack([mean, dev, weight], axis=-1)
        self._scalars[slots] = np.where(present[..., None], S_new, S)
        own_index = (slots[:, None], metric[..., 0], b[:, None])
        self._bins[own_index] = np.where(present[..., None], C_new, C_old)
        with np.errstate(divide="ignore", invalid="ignore"):
            ratio = np.where((compared >= _MIN_COMPARED) & (overall > 0.0), seasonal / overall, 1.0)
        counts = ready & (ratio < self.gate)
        with np.errstate(divide="ignore", invalid="ignore"):
            usual = np.where(counts, mean / weight, np.nan)
        return np.where(counts, score, -1.0), usual


def _explained(overall: float, seasonal: float, compared: float) -> float:
    if compared < _MIN_COMPARED or overall <= 0.0:
        return 1.0
    return seasonal / overall
