"""Split a score into per-feature points that add up to it exactly."""

from __future__ import annotations


def attribute(score: float, weights: dict[str, float]) -> dict[str, float]:
    """Distribute `score` over features proportionally to non-negative `weights`.

    The points sum to `score` (the largest share takes the floating-point remainder). With no
    positive weight the score is spread evenly.
    """
    if not weights:
        return {}
    names = list(weights)
    total = sum(max(0.0, w) for w in weights.values())
    if total <= 0.0:
        shares = [1.0 / len(names)] * len(names)
    else:
        shares = [max(0.0, weights[n]) / total for n in names]
    points = {n: score * s for n, s in zip(names, shares, strict=True)}
    last = max(names, key=points.__getitem__)
    points[last] = score - sum(v for n, v in points.items() if n != last)
    return points
