"""Incident lifecycle of one VM: one incident per anomaly instead of one alert per sample.

`step` turns the per-sample decision (anomalous or not, its severity and kind) into at most one
status change:

- `open` when an anomalous sample arrives and no incident is active;
- `update` when the active incident escalates to a higher severity (lower ones are not news),
  or when it re-opens within `holdoff` samples of its resolution as the same kind (flapping: the
  same incident continues, with the same id; `other` on either side counts as the same);
- `resolved` after `recovery` consecutive calm samples; an incident that a lasting shift named
  `level_shift` (`mark_shift`) is held open until `shift_hold` seconds after the shift: the
  level may still come back (then it was an excursion, and `shift_came_back` gives it its name
  from before the shift), and only a level that holds is a new normal.

The incident id is deterministic: `"{vm_id}:{opening ts in ms}"`.
"""

from __future__ import annotations

from models.classification import KINDS, SEVERITIES

_RECENT = 4
_LEVEL_SHIFT = KINDS.index("level_shift")
_OTHER = KINDS.index("other")
NO_SHIFT = -1  # `shift_metric`: no lasting shift in this incident
SHIFT_CAME_BACK = -2  # ...one came back: the incident was an excursion
_NEVER = 1e18


def incident_id(vm_id: str, opened_at: float) -> str:
    return f"{vm_id}:{int(round(opened_at * 1000.0))}"


def parse_incident_id(value: str) -> tuple[str, int] | None:
    vm_id, sep, ms = value.rpartition(":")
    if not sep or not ms.lstrip("-").isdigit():
        return None
    return vm_id, int(ms)


class IncidentTracker:
    """State machine of the current/last incident plus the kinds of the last few incidents."""

    __slots__ = (
        "active",
        "opened_at",
        "severity",
        "kind",
        "calm",
        "since_resolved",
        "peak",
        "opened",
        "samples",
        "recent",
        "shift_metric",
        "shift_from",
        "shift_at",
        "kind_before_shift",
    )

    def __init__(self) -> None:
        self.active = False
        self.opened_at = 0.0
        self.severity = 0
        self.kind = _OTHER
        self.calm = 0
        self.since_resolved = _NEVER
        self.peak = 0.0
        self.opened = 0
        self.samples = 0
        self.recent: list[tuple[int, int]] = []  # (opened_at ms, kind index), newest last
        # The lasting shift that named the incident `level_shift`: the metric (an index of the
        # engine's features, or NO_SHIFT / SHIFT_CAME_BACK), its level before the shift, when
        # it was confirmed and the incident's kind before it.
        self.shift_metric = NO_SHIFT
        self.shift_from = 0.0
        self.shift_at = 0.0
        self.kind_before_shift = self.kind

    @property
    def severity_name(self) -> str:
        return SEVERITIES[self.severity]

    @property
    def kind_name(self) -> str:
        return KINDS[self.kind]

    def step(
        self,
        ts: float,
        anomalous: bool,
        score: float,
        severity: int,
        kind: int,
        recovery: int,
        holdoff: int,
        shift_hold: float = 0.0,
    ) -> str | None:
        """Advance by one sample; return the status to publish, if any."""
        if self.active:
            if anomalous:
                self.calm = 0
                self.samples += 1
                if score > self.peak:
                    self.peak = score
                if severity > self.severity:
                    self.severity = severity
                    if kind != _OTHER and kind != self.kind:
                        self.kind = kind  # a worse anomaly of another kind names it now
                        if kind != _LEVEL_SHIFT:
                            self.shift_metric = NO_SHIFT
                    return "update"
                return None
            self.calm += 1
            if self.calm >= recovery and not (
                self.shift_pending and ts - self.shift_at < shift_hold
            ):
                self.active = False
                self.since_resolved = 0
                return "resolved"
            return None
        self.since_resolved += 1
        if not anomalous:
            return None
        self.active = True
        self.calm = 0
        self.samples += 1
        if (
            self.opened
            and self.since_resolved <= holdoff
            and (kind == self.kind or kind == _OTHER or self.kind == _OTHER)
        ):
            self.severity = max(self.severity, severity)
            self.peak = max(self.peak, score)
            return "update"
        self.opened_at = ts
        self.severity = severity
        self.kind = kind
        self.shift_metric = NO_SHIFT
        self.peak = score
        self.samples = 1
        self.opened += 1
        self.recent.append((int(round(ts * 1000.0)), kind))
        del self.recent[:-_RECENT]
        return "open"

    def set_kind(self, kind: int) -> None:
        """Refine the active incident's kind (e.g. a drift detector confirmed a level shift)."""
        self.kind = kind
        if self.recent:
            self.recent[-1] = (self.recent[-1][0], kind)

    @property
    def shift_pending(self) -> bool:
        """A lasting shift named the incident and its level has not come back (yet)."""
        return self.shift_metric >= 0

    def mark_shift(self, ts: float, metric: int, level_before: float, kind_before: int) -> None:
        """A drift detector confirmed at `ts` a lasting shift of `metric` from `level_before`:
        the incident, `kind_before` until now, is a level shift unless the level comes back."""
        self.shift_metric = metric
        self.shift_from = level_before
        self.shift_at = ts
        self.kind_before_shift = kind_before
        self.set_kind(_LEVEL_SHIFT)

    def shift_came_back(self) -> None:
        """The shifted level came back: the incident was an excursion, named as before it."""
        self.shift_metric = SHIFT_CAME_BACK
        self.set_kind(self.kind_before_shift)

    def shift_state(self) -> tuple[float, float, float, float]:
        return (
            float(self.shift_metric),
            self.shift_from,
            self.shift_at,
            float(self.kind_before_shift),
        )

    def load_shift_state(self, values: tuple[float, ...]) -> None:
        self.shift_metric = int(values[0])
        self.shift_from, self.shift_at = values[1], values[2]
        self.kind_before_shift = int(values[3])

    def kind_of(self, opened_ms: int) -> int | None:
        for ms, kind in self.recent:
            if ms == opened_ms:
                return kind
        return None

    def state(self) -> tuple[float, ...]:
        flat: list[float] = []
        for ms, kind in self.recent:
            flat += [float(ms), float(kind)]
        flat += [-1.0, -1.0] * (_RECENT - len(self.recent))
        return (
            float(self.active),
            self.opened_at,
            float(self.severity),
            float(self.kind),
            float(self.calm),
            float(self.since_resolved),
            self.peak,
            float(self.opened),
            float(self.samples),
            *flat,
        )

    def load_state(self, values: tuple[float, ...]) -> None:
        self.active = bool(values[0])
        self.opened_at = values[1]
        self.severity = int(values[2])
        self.kind = int(values[3])
        self.calm = int(values[4])
        self.since_resolved = values[5]
        self.peak = values[6]
        self.opened = int(values[7])
        self.samples = int(values[8])
        rest = values[9:]
        self.recent = [
            (int(rest[i]), int(rest[i + 1])) for i in range(0, len(rest), 2) if rest[i + 1] >= 0
        ]

    N_STATE = 9 + 2 * _RECENT
