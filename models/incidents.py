"""Incident lifecycle of one VM: one incident per anomaly instead of one alert per sample.

`step` turns the per-sample decision (anomalous or not, its severity and kind) into at most one
status change:

- `open` when an anomalous sample arrives and no incident is active;
- `update` when the active incident escalates to a higher severity (lower ones are not news),
  or when it re-opens within `holdoff` samples of its resolution (flapping: the same incident
  continues, with the same id);
- `resolved` after `recovery` consecutive calm samples.

The incident id is deterministic: `"{vm_id}:{opening ts in ms}"`.
"""

from __future__ import annotations

from models.classification import KINDS, SEVERITIES

_RECENT = 4
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
    )

    def __init__(self) -> None:
        self.active = False
        self.opened_at = 0.0
        self.severity = 0
        self.kind = KINDS.index("other")
        self.calm = 0
        self.since_resolved = _NEVER
        self.peak = 0.0
        self.opened = 0
        self.samples = 0
        self.recent: list[tuple[int, int]] = []  # (opened_at ms, kind index), newest last

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
                    self.kind = kind if kind != KINDS.index("other") else self.kind
                    return "update"
                return None
            self.calm += 1
            if self.calm >= recovery:
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
        if self.opened and self.since_resolved <= holdoff:
            self.severity = max(self.severity, severity)
            self.peak = max(self.peak, score)
            return "update"
        self.opened_at = ts
        self.severity = severity
        self.kind = kind
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
