"""Recent recurrence: the peaks of the last two surprising episodes, whatever their period.

`recurrence.DailyRecurrenceBank` forgives what recurs at the same time of day. Many VMs also
repeat a surprise on another rhythm (a job every few hours, a load balancer that sheds a node
now and then): the first occurrences are news, the third one within a day is not. `RecentPeaks`
remembers the peak surprise of each of the last two *episodes* (a run of samples at or above
`floor`, ended by `gap` calm samples) and when they ended. `expected(ts)` is the smaller of the
two peaks while both are younger than `horizon` seconds (a pattern must have recurred twice to
count), else 0. The engine discounts a sample's surprise by the part of it above `floor`, as
for the daily one, but only when the sample is no more surprising than that: a bigger surprise
is still news. Surprises are learned undiscounted, so a recurring pattern stays recognised.

State: 6 floats.
"""

from __future__ import annotations


class RecentPeaks:
    """Peak surprise and end time of the last two surprising episodes (one per VM)."""

    __slots__ = ("current", "calm", "last", "last_ts", "before", "before_ts")

    def __init__(self) -> None:
        self.current = 0.0  # peak of the episode in progress (0: none)
        self.calm = 0.0  # calm samples since the episode's last surprising one
        self.last = 0.0
        self.last_ts = 0.0
        self.before = 0.0
        self.before_ts = 0.0

    def expected(self, ts: float, horizon: float) -> float:
        """Surprise that recurred in the last two episodes within `horizon` seconds (0 if not)."""
        if self.before <= 0.0 or ts - self.before_ts > horizon:
            return 0.0
        return self.last if self.last < self.before else self.before

    def learn_one(self, ts: float, surprise: float, floor: float, gap: int) -> None:
        """Record one sample's (undiscounted) surprise."""
        if surprise >= floor:
            if surprise > self.current:
                self.current = surprise
            self.calm = 0.0
            return
        if self.current <= 0.0:
            return
        self.calm += 1.0
        if self.calm >= gap:
            self.before, self.before_ts = self.last, self.last_ts
            self.last, self.last_ts = self.current, ts
            self.current = 0.0
            self.calm = 0.0

    def state(self) -> tuple[float, ...]:
        return (self.current, self.calm, self.last, self.last_ts, self.before, self.before_ts)

    def load_state(self, values: tuple[float, ...]) -> None:
        (self.current, self.calm, self.last, self.last_ts, self.before, self.before_ts) = values

    N_STATE = 6
