"""Level-shift detection on a standardised stream: a compact two-sided Page-Hinkley test.

River's `drift.PageHinkley` keeps ~880 B of heap per instance (and ADWIN grows with its
window); six per VM would be a third of the per-VM budget. This equivalent keeps two
cumulative sums. Its input is the metric's z-score, clipped to ±`clip`, so one spike can never
look like a shift: at least `threshold / (clip - delta)` consecutive large deviations in the same
direction are needed.
"""

from __future__ import annotations


class CompactPageHinkley:
    """Two-sided Page-Hinkley (CUSUM form) on a zero-mean, unit-scale input.

    `update(z)` returns True (and sets `drift_detected` and `direction`) when the upward or
    downward cumulative sum of `z - delta` exceeds `threshold`; the sums then restart.
    """

    __slots__ = ("delta", "threshold", "clip", "up", "down", "drift_detected", "direction")

    def __init__(self, delta: float = 0.5, threshold: float = 20.0, clip: float = 4.0) -> None:
        self.delta = delta
        self.threshold = threshold
        self.clip = clip
        self.up = 0.0
        self.down = 0.0
        self.drift_detected = False
        self.direction = 0

    def update(self, z: float) -> bool:
        clip = self.clip
        if z > clip:
            z = clip
        elif z < -clip:
            z = -clip
        up = self.up + z - self.delta
        down = self.down - z - self.delta
        self.up = up = up if up > 0.0 else 0.0
        self.down = down = down if down > 0.0 else 0.0
        if up > self.threshold or down > self.threshold:
            self.direction = 1 if self.up > self.down else -1
            self.drift_detected = True
            self.up = self.down = 0.0
        else:
            self.drift_detected = False
        return self.drift_detected

    def state(self) -> tuple[float, ...]:
        return (self.up, self.down)

    def load_state(self, values: tuple[float, ...]) -> None:
        self.up, self.down = values
        self.drift_detected = False

    N_STATE = 2
