"""SeasonalCurve: a period's seasonal values through a few knots."""

from __future__ import annotations

import numpy as np
import pytest

from models.seasonal_curve import SeasonalCurve


def test_a_short_period_has_one_knot_per_phase_and_learns_like_per_phase_values():
    curve = SeasonalCurve(24, knots=48)
    assert curve.values.size == 24
    per_phase = np.zeros(24, dtype=np.float32)  # values stored as float32, summed in float64
    rng = np.random.default_rng(0)
    for i in range(500):
        correction = float(rng.normal())
        curve.learn(i % 24, correction)
        per_phase[i % 24] = float(per_phase[i % 24]) + correction
    assert curve.values.tolist() == per_phase.tolist()
    assert [curve.value(p) for p in range(24)] == per_phase.tolist()
    assert curve.path(np.arange(24)).tolist() == per_phase.tolist()


def test_fit_follows_a_smooth_daily_shape_at_minute_resolution():
    phases = np.arange(1440)
    profile = 10 * np.sin(2 * np.pi * phases / 1440) + 3 * np.cos(4 * np.pi * phases / 1440)
    curve = SeasonalCurve.fit(profile)
    assert curve.values.size == 48
    assert np.max(np.abs(curve.path(phases) - profile)) < 0.05  # of a 26-wide swing
    assert curve.value(700) == pytest.approx(curve.path(np.array([700]))[0], abs=1e-12)


def test_learning_moves_the_two_knots_around_a_phase_by_their_weights():
    curve = SeasonalCurve(1440, knots=48)  # a knot every 30 phases
    curve.learn(45, 3.0)  # half-way between knots 1 and 2
    gain = 48 / 1440
    assert curve.values[1] == pytest.approx(1.5 * gain)
    assert curve.values[2] == pytest.approx(1.5 * gain)
    assert np.count_nonzero(curve.values) == 2
    curve.learn(1439, 1.0)  # between the last knot and the first, cyclically
    assert curve.values[47] > 0 and curve.values[0] > 0


def test_per_period_learning_matches_per_phase_values_on_a_repeated_error():
    """A constant error at every phase for one period moves each knot as far as one value per
    phase would move (gamma per period), so the curve adapts at the same pace."""
    curve = SeasonalCurve(1440, knots=48)
    for phase in range(1440):
        curve.learn(phase, 0.05)
    assert curve.values == pytest.approx(np.full(48, 0.05))


def test_values_must_fit_the_shape():
    SeasonalCurve(1440, 48, np.zeros(48))
    with pytest.raises(ValueError):
        SeasonalCurve(1440, 48, np.zeros(1440))
    with pytest.raises(ValueError):
        SeasonalCurve(0)
    curve = SeasonalCurve(10, 4, np.arange(4.0))
    assert curve.values.tolist() == [0.0, 1.0, 2.0, 3.0]
