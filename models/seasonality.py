"""Online seasonal-period detection by autocorrelation over a bounded, block-averaged buffer.

The detector keeps block means (a block is a few consecutive samples) for the last few periods
of the longest candidate lag, and checks the autocorrelation of the linearly detrended buffer at
each candidate lag now and then. A lag counts as seasonal when its autocorrelation reaches a
threshold; the strongest such lag wins, otherwise the series is treated as non-seasonal.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from models import half_history

DAY_SECONDS = 86_400.0


def autocorrelation(values: Sequence[float] | np.ndarray, lag: int, detrend: bool = True) -> float:
    """Sample autocorrelation of `values` at `lag` (after removing a linear trend if asked)."""
    x = np.asarray(values, dtype=np.float64)
    n = x.size
    if lag <= 0 or n <= lag + 2:
        return 0.0
    if detrend:
        t = np.arange(n, dtype=np.float64)
        slope, intercept = np.polyfit(t, x, 1)
        x = x - (slope * t + intercept)
    x = x - x.mean()
    denom = float(np.dot(x, x))
    if denom <= 1e-12 * max(1.0, float(np.max(np.abs(x))) ** 2 * n):
        return 0.0
    return float(np.dot(x[:-lag], x[lag:]) / denom)


def detect_period(
    values: Sequence[float] | np.ndarray,
    candidate_lags: Sequence[int],
    threshold: float = 0.3,
    min_periods: float = 2.0,
) -> int | None:
    """Best candidate lag whose autocorrelation reaches `threshold`, or None.

    A lag is only considered when the buffer spans at least `min_periods` of it.
    """
    x = np.asarray(values, dtype=np.float64)
    best_lag, best_acf = None, threshold
    for lag in candidate_lags:
        if lag < 2 or x.size < min_periods * lag:
            continue
        acf = autocorrelation(x, lag)
        if acf >= best_acf:
            best_lag, best_acf = lag, acf
    return best_lag


def _block_size(lag: int, blocks_per_period: int) -> int:
    """Largest divisor of `lag` that still leaves at least `blocks_per_period` blocks per period."""
    for size in range(max(1, lag // blocks_per_period), 0, -1):
        if lag % size == 0:
            return size
    return 1


class SeasonalityDetector:
    """Detect which of `candidate_lags` (in samples) is the seasonal period, if any.

    Memory is bounded: `periods_kept` periods of the longest lag, at `blocks_per_period` block
    means per period, kept as float16 codes (`models.half_history`: two bytes a block, within
    0.05 % of its mean, far below what an autocorrelation of 0.3 is told from).
    `learn_one` returns True when the detected period changed.
    """

    __slots__ = (
        "candidate_lags", "threshold", "block", "capacity", "recheck_every_blocks", "period",
        "_buffer", "_exp", "_blocks", "_acc", "_acc_n",
    )  # fmt: skip

    def __init__(
        self,
        candidate_lags: Sequence[int],
        threshold: float = 0.3,
        blocks_per_period: int = 48,
        periods_kept: int = 3,
        recheck_every_blocks: int | None = None,
    ) -> None:
        lags = sorted({int(lag) for lag in candidate_lags if int(lag) >= 2})
        if not lags:
            raise ValueError("need at least one candidate lag >= 2")
        self.candidate_lags = tuple(lags)
        self.threshold = threshold
        self.block = _block_size(lags[0], blocks_per_period)
        self.capacity = int(np.ceil(periods_kept * lags[-1] / self.block))
        self.recheck_every_blocks = recheck_every_blocks or max(1, lags[0] // self.block // 2)
        self.period: int | None = None
        self._buffer = np.zeros(self.capacity, dtype=np.float16)  # codes under 2**_exp
        self._exp = 0
        self._blocks = 0  # blocks completed since start
        self._acc = 0.0
        self._acc_n = 0

    def learn_one(self, y: float) -> bool:
        self._acc += y
        self._acc_n += 1
        if self._acc_n < self.block:
            return False
        code, self._exp = half_history.code_for(self._buffer, self._exp, self._acc / self._acc_n)
        self._buffer[self._blocks % self.capacity] = code
        self._blocks += 1
        self._acc, self._acc_n = 0.0, 0
        if self._blocks % self.recheck_every_blocks:
            return False
        previous = self.period
        self.period = self._check()
        return self.period != previous

    def _ordered(self) -> np.ndarray:
        """Buffered block means, oldest first."""
        n = min(self._blocks, self.capacity)
        if self._blocks <= self.capacity:
            return half_history.decode(self._buffer[:n], self._exp)
        start = self._blocks % self.capacity
        ordered = np.concatenate((self._buffer[start:], self._buffer[:start]))
        return half_history.decode(ordered, self._exp)

    def _check(self) -> int | None:
        block_lags = [lag // self.block for lag in self.candidate_lags]
        found = detect_period(self._ordered(), block_lags, self.threshold)
        return None if found is None else found * self.block

    def profile(self, lag: int) -> np.ndarray:
        """Mean seasonal profile (zero mean, `lag` values) from the buffer, indexed by sample phase.

        Phase 0 is the first sample ever learnt, so the profile aligns with a sample counter.
        """
        x = self._ordered()
        n_blocks = lag // self.block
        if x.size < n_blocks or n_blocks < 1:
            return np.zeros(lag)
        periods = x.size // n_blocks
        x = x[x.size - periods * n_blocks :]  # whole periods only, so phases weigh equally
        first_block = self._blocks - x.size
        phases = (np.arange(first_block, self._blocks) % n_blocks).astype(np.int64)
        # Trend from the means of whole periods (unbiased by the seasonal shape).
        means = x.reshape(periods, n_blocks).mean(axis=1)
        slope = (means[-1] - means[0]) / (n_blocks * (periods - 1)) if periods > 1 else 0.0
        t = np.arange(x.size, dtype=np.float64)
        resid = x - slope * t
        sums = np.bincount(phases, weights=resid, minlength=n_blocks)
        counts = np.bincount(phases, minlength=n_blocks)
        block_profile = sums / np.maximum(counts, 1)
        block_profile -= block_profile.mean()
        # Upsample block means to samples, cyclically, placing each block mean at its centre.
        centres = np.arange(n_blocks) * self.block + (self.block - 1) / 2.0
        sample_phase = np.arange(lag, dtype=np.float64)
        return np.interp(sample_phase, centres, block_profile, period=lag)

    @property
    def nbytes(self) -> int:
        return int(self._buffer.nbytes)
