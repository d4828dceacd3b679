"""Turn raw detector scores into tail probabilities that mean the same for every VM and detector.

A `TailCalibrator` answers "how often was a score at least this large, lately?" — an online
p-value — from an exponentially decayed histogram of past raw scores: 64 bins on a log axis
`log1p(raw * scale)` (0.125 per bin: raw scores from 0 to ~3000 / scale) for scores with heavy
tails, or on a linear axis `raw * scale` for scores whose tail is exponential already
(surprises, -ln p). The decay (`half_life` samples) forgets old behaviour slowly, so the memory
spans days of 5-minute data in ~280 bytes (the bins as float32, summed in float64), where a
reservoir of the same size would remember a few hours.

Inside the histogram the mass above a score is interpolated linearly within its bin. In the
upper tail (the top `tail_mass` of the mass, and at least ~10 samples' worth) the count is
replaced by an exponential tail fitted to the excesses over that quantile (peaks over
threshold; the mean excess is shrunk toward a typical value while the tail is thin), so scores
far above anything seen get p-values far below `1 / n` instead of saturating. Scores of a
stationary stream give roughly uniform p-values.

With `winsor_p` > 0 a score whose p-value is below it is learned as the score that would
have had exactly that p-value (winsorised): one extreme anomaly widens the tail only as far
as an event of p-value `winsor_p` would, so the next anomaly is not made to look ordinary.

Logarithms and exponentials go through numpy's ufuncs even for one score. On some CPUs (those
with AVX-512) numpy's vectorised `log1p`, `log` and `exp` differ from `math`'s in the last bit
for a few per cent of inputs, while a ufunc gives a scalar the same double as an array element:
so `calibration_bank`, which runs them over arrays, stays equal to this class bit for bit.
"""

from __future__ import annotations

from array import array
from collections.abc import Sequence

import numpy as np

_BINS = 64
_WIDTH = 0.125
_RESCALE_AT = 1e30  # the bins are float32 (up to 3.4e38): a bin sums a few thousand weights
_MIN_TAIL = 10.0


class TailCalibrator:
    """Decayed-histogram p-value of a raw (non-negative) score, with a peaks-over-threshold tail."""

    __slots__ = (
        "scale",
        "log_axis",
        "prior_excess",
        "decay",
        "tail_mass",
        "min_count",
        "n",
        "weight",
        "total",
        "counts",
        "top",
        "winsor_p",
    )

    def __init__(
        self,
        scale: float = 1.0,
        half_life: float = 2000.0,
        tail_mass: float = 0.02,
        min_count: int = 50,
        log_axis: bool = True,
        prior_excess: float = 1.5,
        winsor_p: float = 0.0,
    ) -> None:
        self.scale = scale
        self.winsor_p = winsor_p
        self.log_axis = log_axis
        self.prior_excess = prior_excess
        self.decay = 0.5 ** (1.0 / half_life) if half_life > 0 else 1.0
        self.tail_mass = tail_mass
        self.min_count = min_count
        self.n = 0
        self.weight = 1.0  # weight of the next sample; older samples keep theirs (= decay)
        self.total = 0.0
        self.counts = array("f", bytes(4 * _BINS))  # each sum rounded on store
        self.top = 0  # the highest bin holding mass: the tail search starts there

    def __len__(self) -> int:
        return self.n

    def _position(self, raw: float) -> float:
        """Bin coordinate of a raw score (bins are 1 wide in this coordinate)."""
        if raw <= 0.0:
            return 0.0
        if self.log_axis:
            return float(np.log1p(raw * self.scale)) / _WIDTH
        return raw * self.scale / _WIDTH

    def observe(self, raw: float) -> float:
        """`p_value(raw)`, then learn `raw` (one call on the hot path)."""
        pos = self._position(raw)
        p = self._p_at(pos)
        if p < self.winsor_p:
            pos = self._winsorised(pos)
        self._learn_at(pos)
        return p

    def _winsorised(self, pos: float) -> float:
        """The bin coordinate whose p-value is `winsor_p` (at most `pos`): called only for a
        `pos` whose p-value is below it, which lies in the fitted tail."""
        tail = max(self.tail_mass * self.total, min(_MIN_TAIL * self.weight, 0.5 * self.total))
        return winsorised_position(
            self.counts,
            self.top,
            pos,
            tail,
            self.total,
            self.weight,
            self.prior_excess,
            self.winsor_p,
        )

    def p_value(self, raw: float) -> float:
        """P(score >= raw) under the recent scores; 1.0 until `min_count` scores were seen."""
        return self._p_at(self._position(raw))

    def learn_one(self, raw: float) -> None:
        self._learn_at(self._position(raw))

    def _p_at(self, pos: float) -> float:
        if self.n < self.min_count or self.total <= 0.0:
            return 1.0
        counts = self.counts
        total = self.total
        b = int(pos)
        if b >= _BINS:
            b = _BINS - 1
            frac = 1.0
        else:
            frac = pos - b
        # Sum the shorter side: the lower bins upwards, the upper bins downwards from the top
        # (the orders `calibration_bank` sums them in, vectorised).
        if b < _BINS // 2:
            above = total - sum(counts[:b]) - counts[b] * frac
            if above < 0.0:
                above = 0.0
        else:
            above = sum(counts[:b:-1]) + counts[b] * (1.0 - frac)
        # The tail holds `tail_mass` of the mass, and at least ~10 recent samples' worth, so a
        # young calibrator extrapolates from a wider, better estimated tail.
        tail = max(self.tail_mass * total, min(_MIN_TAIL * self.weight, 0.5 * total))
        if above >= tail:
            return (above + self.weight) / (total + self.weight)
        weight = self.weight
        return tail_p_value(counts, self.top, pos, above, tail, total, weight, self.prior_excess)

    def _learn_at(self, pos: float) -> None:
        b = int(pos)
        if b >= _BINS:
            b = _BINS - 1
        w = self.weight
        self.counts[b] += w
        if b > self.top:
            self.top = b
        self.total += w
        self.n += 1
        w /= self.decay
        if w > _RESCALE_AT:
            inv = 1.0 / w
            counts = self.counts
            for i in range(_BINS):
                counts[i] *= inv
            self.total *= inv
            w = 1.0
        self.weight = w

    def to_bytes(self) -> bytes:
        return (
            array("d", (float(self.n), self.weight, self.total)).tobytes() + self.counts.tobytes()
        )

    def load_bytes(self, data: bytes) -> None:
        """Restore `to_bytes` output; also of the format whose bins were float64."""
        head = array("d")
        head.frombytes(data[:24])
        self.n = int(head[0])
        self.weight = head[1]
        self.total = head[2]
        wide = len(data) - 24 == 8 * _BINS  # float64 bins, weights up to 1e150
        counts = array("d" if wide else "f")
        counts.frombytes(data[24:])
        if wide:
            inv = 1.0 / self.weight if self.weight > _RESCALE_AT else 1.0
            counts = array("f", [c * inv for c in counts])
            self.total *= inv
            self.weight *= inv
        self.counts = counts
        self.top = max((i for i, c in enumerate(counts) if c > 0.0), default=0)


def tail_p_value(
    counts: Sequence[float],
    top: int,
    pos: float,
    above: float,
    tail: float,
    total: float,
    weight: float,
    prior_excess: float,
) -> float:
    """P-value at bin coordinate `pos`, which has `above` < `tail` of the `total` mass above
    it: peaks over threshold.

    Finds the quantile u with `tail` mass above it and the mean excess over u, both in bin
    coordinates (bins above `top` are empty), then extrapolates exponentially."""
    fit = _tail_fit(counts, top, tail, weight, prior_excess)
    if fit is None:  # less than `tail` in all bins: the empirical p-value
        return (above + weight) / (total + weight)
    u, excess = fit
    return tail / total * float(np.exp(-max(0.0, pos - u) / excess))


def winsorised_position(
    counts: Sequence[float],
    top: int,
    pos: float,
    tail: float,
    total: float,
    weight: float,
    prior_excess: float,
    p: float,
) -> float:
    """The bin coordinate at which the fitted tail's p-value is `p` (< tail / total), or
    `pos` if that is lower or there is no fitted tail."""
    fit = _tail_fit(counts, top, tail, weight, prior_excess)
    if fit is None:
        return pos
    u, excess = fit
    at = u + excess * float(np.log(tail / (total * p)))
    return at if at < pos else pos


def _tail_fit(
    counts: Sequence[float], top: int, tail: float, weight: float, prior_excess: float
) -> tuple[float, float] | None:
    """The quantile u with `tail` mass above it and the (shrunk) mean excess over u, in bin
    coordinates; None when all bins together hold less than `tail`."""
    mass = 0.0
    moment = 0.0
    k = top
    while k >= 0:
        c = counts[k]
        if mass + c >= tail:
            part = tail - mass  # the top `part` of bin k belongs to the tail
            u = k + 1.0 - part / c
            moment += part * (k + 1.0 - 0.5 * part / c)
            mass = tail
            break
        mass += c
        moment += c * (k + 0.5)
        k -= 1
    else:
        return None
    # Mean excess, shrunk toward a typical tail (`prior_excess` bins, `_MIN_TAIL` samples'
    # worth) so a young calibrator does not extrapolate from a handful of points.
    prior = _MIN_TAIL * weight
    excess = (moment - mass * u + prior * prior_excess) / (mass + prior)
    if excess < 0.25:
        excess = 0.25  # a quarter bin: never extrapolate more steeply
    return u, excess
