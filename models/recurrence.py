"""Daily recurrence: how surprising this time of day has been on each of the last two days.

Many VMs have daily jobs (backups, cron batches, log rotation) that produce the same spike at
about the same time every day. Each such spike is rare within the day, so the other detectors
call it an anomaly every day. `DailyRecurrenceBank` keeps, per VM and hour of the day (UTC),
the largest surprise seen in that hour yesterday and the day before. `expected` is the smaller
of the two days' largest surprise within ±1 hour of the sample (timing jitters): a pattern
counts as recurring only when it showed up on *both* previous days, so a single past incident
does not mask anything. The engine discounts a sample's largest channel surprise by it before
the combined calibration, so the job's spikes neither alert nor teach the VM's calibrator that
big surprises are common.

State per VM: 3 x 24 one-byte surprises (today, yesterday, the day before) in blocks that
rotate as days pass, the day number of `today` and which block is today's: 81 bytes in the
bank's arrays, which update a batch of VMs with numpy operations. Surprises are -log10
p-values from 0 to 15, kept in sixteenths (rounded down, up to 255 / 16): a peak is at most
0.0625 below what was seen, so a recurring pattern is discounted by a hair less.
"""

from __future__ import annotations

import numpy as np

from models.metric_bank import grown_rows

DAY = 86_400.0
HOURS = 24
_DAYS = 3  # today, yesterday, the day before
_STEPS = 16.0  # codes per unit of surprise
_TOP = 255  # the largest code (a surprise of 15.94)


def _codes(surprises: np.ndarray) -> np.ndarray:
    """Surprises in sixteenths, rounded down (0 for anything below 1/16 and for NaN)."""
    scaled = np.where(surprises > 0.0, surprises * _STEPS, 0.0)
    return np.minimum(np.floor(scaled), _TOP).astype(np.uint8)


class DailyRecurrenceBank:
    """Per-(VM slot, hour of day) peak surprises of the last two days.

    Every call takes distinct slots (the engine calls it once per round of a batch)."""

    N_STATE = 1 + _DAYS * HOURS  # per slot in `state`: the day number and 72 peaks

    def __init__(self, capacity: int = 64) -> None:
        self._peaks = np.zeros((capacity, _DAYS, HOURS), dtype=np.uint8)  # codes, see `_codes`
        self._day = np.full(capacity, -1.0)  # day number (ts // DAY) of today's block
        self._start = np.zeros(capacity, dtype=np.int8)  # the block of age 0 (today)

    def reset(self, slot: int) -> None:
        """Start `slot` afresh, as every slot must before use (growing the arrays if needed)."""
        capacity = len(self._day)
        if slot >= capacity:
            size = max(2 * capacity, slot + 1)
            self._peaks = grown_rows(self._peaks, size)
            self._day = grown_rows(self._day, size)
            self._start = grown_rows(self._start, size)
        self._peaks[slot] = 0
        self._day[slot] = -1.0
        self._start[slot] = 0

    def expected(self, slots: np.ndarray, ts: np.ndarray) -> np.ndarray:
        """Per sample, the surprise that recurred around its time of day on both previous days
        of its VM (0 if none)."""
        hours = self._roll(slots, ts)
        near = np.stack(((hours - 1) % HOURS, hours, (hours + 1) % HOURS), axis=1)
        start = self._start[slots].astype(np.intp)
        rows = slots[:, None]
        last = self._peaks[rows, ((start + 1) % _DAYS)[:, None], near].max(axis=1)
        first = self._peaks[rows, ((start + 2) % _DAYS)[:, None], near].max(axis=1)
        return np.minimum(last, first) / _STEPS

    def learn(self, slots: np.ndarray, ts: np.ndarray, surprises: np.ndarray) -> None:
        """Record each sample's surprise at its hour of its VM's today."""
        hours = self._roll(slots, ts)
        at = (slots, self._start[slots].astype(np.intp), hours)
        self._peaks[at] = np.maximum(self._peaks[at], _codes(surprises))

    def _roll(self, slots: np.ndarray, ts: np.ndarray) -> np.ndarray:
        """Move each slot's today to its sample's day (emptying the blocks of the new days);
        returns the samples' hours of the day."""
        day, since_midnight = np.divmod(ts, DAY)
        gap = day - self._day[slots]
        moved = gap > 0.0
        if moved.any():
            s, gap = slots[moved], gap[moved]
            self._peaks[s[gap >= _DAYS]] = 0
            near = gap < _DAYS
            s, gap = s[near], gap[near].astype(np.intp)
            # yesterday's block is the old today's; the blocks of the new days start empty
            start = (self._start[s] - gap) % _DAYS
            self._start[s] = start
            self._peaks[s, start] = 0
            two = gap == 2
            self._peaks[s[two], (start[two] + 1) % _DAYS] = 0
            self._day[slots[moved]] = day[moved]
        return (since_midnight // 3600.0).astype(np.intp)

    def state(self, slot: int) -> list[float]:
        """The day number, then today's, yesterday's and the day before's 24 hourly peaks."""
        order = (int(self._start[slot]) + np.arange(_DAYS)) % _DAYS
        return [float(self._day[slot]), *(self._peaks[slot, order].ravel() / _STEPS).tolist()]

    def load_state(self, slot: int, values: tuple[float, ...]) -> None:
        """Restore `state` output."""
        self.reset(slot)
        self._day[slot] = values[0]
        peaks = np.array(values[1 : self.N_STATE], dtype=np.float64)
        self._peaks[slot] = _codes(peaks).reshape(_DAYS, HOURS)
