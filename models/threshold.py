"""Per-VM adaptive alert threshold, moved by the VM's own alert rate and by operator feedback.

Thresholds live on the "surprise" scale `-log10(p)` of the combined tail probability, where
steps are meaningful (one unit = ten times rarer), and are reported on the 0–100 score scale
`100 * (1 - p)`. The effective threshold for a sample of kind `k` is

    base + cadence_boost + penalty[k] + rate_boost

- `penalty[k]` grows by `fp_step` on each "false_positive" verdict for an incident of kind `k`
  (the same pattern must be rarer to alert again) and shrinks by `fp_step` on "confirmed", never
  below zero; it decays slowly back to zero (half-life `penalty_half_life` samples).
- `cadence_boost` = log10(reference / interval) for a VM sampled every `interval` seconds,
  faster than the `reference` cadence the base is set for (0 otherwise): a bar set per sample
  would let a VM sampled five times as often raise five times as many chance alerts per hour.
- `rate_boost` rises when the VM's recent alerting rate (incidents opened per sample, EW)
  exceeds `target_rate`.
"""

from __future__ import annotations

import math
from array import array

from models.classification import KINDS


def score_to_surprise(score: float) -> float:
    """0–100 score to -log10(p)."""
    p = max(1e-300, 1.0 - score / 100.0)
    return -math.log10(p)


def surprise_to_score(surprise: float) -> float:
    return 100.0 * (1.0 - 10.0 ** (-surprise))


# Weight of each new gap in the EW estimate of a VM's sampling interval; each gap is first
# clipped to half and twice the estimate, so an outage or a burst barely moves it.
_INTERVAL_RATE = 0.05
_INTERVAL_CLIP = 2.0

# The penalties of a VM without feedback (nearly all of them): one shared, immutable tuple.
_NO_PENALTY = (0.0,) * len(KINDS)


def next_interval(interval: float, gap: float) -> float:
    """A VM's sampling-interval estimate (seconds; 0: none yet) after learning `gap` (> 0),
    the time since its previous sample."""
    if interval <= 0.0:
        return gap
    if gap > _INTERVAL_CLIP * interval:
        gap = _INTERVAL_CLIP * interval
    elif gap * _INTERVAL_CLIP < interval:
        gap = interval / _INTERVAL_CLIP
    return interval + _INTERVAL_RATE * (gap - interval)


def cadence_boost(interval: float, reference: float) -> float:
    """-log10 p to add to a base threshold set for one sample every `reference` seconds, for
    a VM sampled every `interval` seconds, so that its chance alerts per hour stay the
    reference's; 0 for a VM sampled no faster than that, or while its interval is unknown."""
    return math.log10(reference / interval) if 0.0 < interval < reference else 0.0


class AdaptiveThreshold:
    """Threshold state of one VM: six kind penalties and an EW alert rate."""

    __slots__ = ("penalty", "rate")

    def __init__(self) -> None:
        # The shared zeros until the first verdict; then a float64 array of its own (one object
        # instead of a list and a float per kind).
        self.penalty: array | tuple[float, ...] = _NO_PENALTY
        self.rate = 0.0

    @property
    def same_for_every_kind(self) -> bool:
        """True until the first verdict: every kind has the same threshold."""
        return self.penalty is _NO_PENALTY

    def surprise_threshold(
        self, base: float, kind: str | None, target_rate: float, rate_gain: float
    ) -> float:
        """Threshold for a sample of `kind`; with `kind=None`, the lowest over all kinds."""
        boost = 0.0
        if self.rate > target_rate > 0:
            boost = rate_gain * math.log10(self.rate / target_rate)
        if self.penalty is _NO_PENALTY:  # most VMs: no verdict yet
            return base + boost
        if kind is None:
            return base + min(self.penalty) + boost
        return base + self.penalty[KINDS.index(kind)] + boost

    def observe(self, alerted: bool, rate_alpha: float, penalty_decay: float) -> None:
        """Update the alert rate with whether this sample raised an alert (opened an incident)."""
        self.rate += rate_alpha * ((1.0 if alerted else 0.0) - self.rate)
        if penalty_decay < 1.0 and self.penalty is not _NO_PENALTY and any(self.penalty):
            pen = self.penalty
            for i, v in enumerate(pen):
                if v:
                    pen[i] = v * penalty_decay if v > 1e-3 else 0.0

    def feedback(self, kind: str, verdict: str, fp_step: float) -> None:
        i = KINDS.index(kind)
        if verdict not in ("false_positive", "confirmed"):
            raise ValueError(f"unknown verdict {verdict!r}")
        if self.penalty is _NO_PENALTY:
            self.penalty = array("d", _NO_PENALTY)
        if verdict == "false_positive":
            self.penalty[i] += fp_step
        else:
            self.penalty[i] = max(0.0, self.penalty[i] - fp_step)

    def state(self) -> tuple[float, ...]:
        return (*self.penalty, self.rate)

    def load_state(self, values: tuple[float, ...]) -> None:
        *pen, self.rate = values
        self.penalty = array("d", pen) if any(pen) else _NO_PENALTY

    N_STATE = len(KINDS) + 1
