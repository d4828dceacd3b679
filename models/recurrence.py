"""Daily recurrence: how surprising this time of day has been on each of the last two days.

Many VMs have daily jobs (backups, cron batches, log rotation) that produce the same spike at
about the same time every day. Each such spike is rare within the day, so the other detectors
call it an anomaly every day. `DailyRecurrence` keeps, per hour of the day (UTC), the largest
surprise seen in that hour yesterday and the day before. `expected(ts)` is the smaller of the
two days' largest surprise within ±1 hour of `ts` (timing jitters): a pattern counts as
recurring only when it showed up on *both* previous days, so a single past incident does not
mask anything. The engine discounts a sample's surprise by it.

State: 3 x 24 floats (yesterday, the day before, today) and the day number of `today`.
"""

from __future__ import annotations

from array import array

DAY = 86_400.0
HOURS = 24


class DailyRecurrence:
    """Per-hour-of-day peak surprises of the last two days (one instance per VM)."""

    __slots__ = ("day", "today", "yesterday", "before")

    def __init__(self) -> None:
        self.day = -1.0  # day number (ts // DAY) that `today` belongs to
        self.today = array("d", bytes(8 * HOURS))
        self.yesterday = array("d", bytes(8 * HOURS))
        self.before = array("d", bytes(8 * HOURS))

    def _roll(self, day: float) -> None:
        gap = day - self.day
        if gap <= 0:
            return
        if gap == 1:
            self.before, self.yesterday = self.yesterday, self.today
        elif gap == 2:
            self.before = self.today
            self.yesterday = array("d", bytes(8 * HOURS))
        else:
            self.before = array("d", bytes(8 * HOURS))
            self.yesterday = array("d", bytes(8 * HOURS))
        self.today = array("d", bytes(8 * HOURS))
        self.day = day

    def expected(self, ts: float) -> float:
        """Surprise that recurred around this time of day on both previous days (0 if none)."""
        day, hour = divmod(ts, DAY)
        self._roll(day)
        h = int(hour // 3600.0)
        lo, hi = h - 1, h + 1
        y, b = self.yesterday, self.before
        last = max(y[lo % HOURS], y[h], y[hi % HOURS])
        if last <= 0.0:
            return 0.0
        first = max(b[lo % HOURS], b[h], b[hi % HOURS])
        return last if last < first else first

    def learn_one(self, ts: float, surprise: float) -> None:
        """Record a sample's surprise at its hour of today."""
        day, hour = divmod(ts, DAY)
        self._roll(day)
        h = int(hour // 3600.0)
        if surprise > self.today[h]:
            self.today[h] = surprise

    def state(self) -> tuple[float, ...]:
        return (self.day, *self.today, *self.yesterday, *self.before)

    def load_state(self, values: tuple[float, ...]) -> None:
        self.day = values[0]
        self.today = array("d", values[1 : 1 + HOURS])
        self.yesterday = array("d", values[1 + HOURS : 1 + 2 * HOURS])
        self.before = array("d", values[1 + 2 * HOURS : 1 + 3 * HOURS])

    N_STATE = 1 + 3 * HOURS
