"""Daily recurrence: how surprising this time of day has been on each of the last two days.

Many VMs have daily jobs (backups, cron batches, log rotation) that produce the same spike at
about the same time every day. Each such spike is rare within the day, so the other detectors
call it an anomaly every day. `DailyRecurrence` keeps, per hour of the day (UTC), the largest
surprise seen in that hour yesterday and the day before. `expected(ts)` is the smaller of the
two days' largest surprise within ±1 hour of `ts` (timing jitters): a pattern counts as
recurring only when it showed up on *both* previous days, so a single past incident does not
mask anything. The engine discounts a sample's largest channel surprise by it before the
combined calibration, so the job's spikes neither alert nor teach the VM's calibrator that
big surprises are common.

State: 3 x 24 surprises (today, yesterday, the day before) in one byte array whose blocks
rotate as days pass, the day number of `today` and which block is today's: one object of
~140 bytes per VM (a float32 array was ~350, three float64 arrays ~880). Surprises are
-log10 p-values from 0 to 15, kept in sixteenths (rounded down, up to 255 / 16): a peak is
at most 0.0625 below what was seen, so a recurring pattern is discounted by a hair less.
"""

from __future__ import annotations

from array import array

DAY = 86_400.0
HOURS = 24
_DAYS = 3  # today, yesterday, the day before
_STEPS = 16.0  # codes per unit of surprise
_TOP = 255  # the largest code (a surprise of 15.94)


def _code(surprise: float) -> int:
    """A surprise in sixteenths, rounded down (0 for anything below 1/16)."""
    if surprise >= _TOP / _STEPS:
        return _TOP
    return int(surprise * _STEPS) if surprise > 0.0 else 0


class DailyRecurrence:
    """Per-hour-of-day peak surprises of the last two days (one instance per VM)."""

    __slots__ = ("day", "start", "peaks")

    def __init__(self) -> None:
        self.day = -1.0  # day number (ts // DAY) that today's block belongs to
        self.start = 0  # the block of age 0 (today); age k is block (start + k) % 3
        self.peaks = array("B", bytes(_DAYS * HOURS))  # codes, see `_code`

    def _offset(self, age: int) -> int:
        return (self.start + age) % _DAYS * HOURS

    def _roll(self, day: float) -> None:
        gap = day - self.day
        if gap <= 0:
            return
        peaks = self.peaks
        if gap >= _DAYS:
            peaks[:] = array("B", bytes(_DAYS * HOURS))
        else:
            # yesterday's block is the old today's; the blocks of the new days start empty
            self.start = (self.start - int(gap)) % _DAYS
            for age in range(int(gap)):
                at = self._offset(age)
                peaks[at : at + HOURS] = array("B", bytes(HOURS))
        self.day = day

    def expected(self, ts: float) -> float:
        """Surprise that recurred around this time of day on both previous days (0 if none)."""
        day, hour = divmod(ts, DAY)
        self._roll(day)
        h = int(hour // 3600.0)
        lo, hi = (h - 1) % HOURS, (h + 1) % HOURS
        p = self.peaks
        y = self._offset(1)
        last = max(p[y + lo], p[y + h], p[y + hi])
        if not last:
            return 0.0
        b = self._offset(2)
        first = max(p[b + lo], p[b + h], p[b + hi])
        return (last if last < first else first) / _STEPS

    def learn_one(self, ts: float, surprise: float) -> None:
        """Record a sample's surprise at its hour of today."""
        day, hour = divmod(ts, DAY)
        self._roll(day)
        at = self._offset(0) + int(hour // 3600.0)
        code = _code(surprise)
        if code > self.peaks[at]:
            self.peaks[at] = code

    def _block(self, age: int) -> list[float]:
        at = self._offset(age)
        return [code / _STEPS for code in self.peaks[at : at + HOURS]]

    def state(self) -> tuple[float, ...]:
        """The day number, then today's, yesterday's and the day before's 24 hourly peaks."""
        return (self.day, *self._block(0), *self._block(1), *self._block(2))

    def load_state(self, values: tuple[float, ...]) -> None:
        self.day = values[0]
        self.start = 0
        self.peaks = array("B", map(_code, values[1 : 1 + _DAYS * HOURS]))

    N_STATE = 1 + _DAYS * HOURS
