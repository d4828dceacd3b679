"""Bounded recent history per VM (samples, scores, alerts, forecasts, actions) for web views."""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass, field

from models.engine import Assessment


@dataclass
class RecentHistory:
    """What this worker saw recently; every buffer is bounded."""

    samples_per_vm: int = 360
    max_vms: int = 100_000
    recent_alerts: int = 500
    points: dict[str, deque] = field(default_factory=dict)
    alerts: deque = field(default_factory=deque)
    last_forecast: dict[str, dict] = field(default_factory=dict)
    last_actions: dict[str, deque] = field(default_factory=dict)

    def observe(self, assessments: list[Assessment]) -> None:
        """Keep the latest samples and scores of each VM."""
        for a in assessments:
            buf = self.points.get(a.vm_id)
            if buf is None:
                if len(self.points) >= self.max_vms:
                    continue
                buf = self.points[a.vm_id] = deque(maxlen=self.samples_per_vm)
            buf.append({"ts": a.ts, "score": a.score, "threshold": a.threshold, **a.values})

    def published(self, topic_id: str, key: str | None, value: dict) -> None:
        """Remember an output message this worker published."""
        if topic_id == "anomalies":
            self.alerts.append(value)
            while len(self.alerts) > self.recent_alerts:
                self.alerts.popleft()
        elif topic_id == "forecasts" and key is not None:
            self.last_forecast.setdefault(key, {})[value.get("metric", "")] = value
        elif topic_id == "actions" and key is not None:
            self.last_actions.setdefault(key, deque(maxlen=10)).append(value)
