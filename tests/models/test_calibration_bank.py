"""The calibration bank answers exactly as one `TailCalibrator` per (VM, channel) would."""

from __future__ import annotations

import math
import random

import pytest

from models.calibration import TailCalibrator
from models.calibration_bank import _MIN_PAIRS, CalibrationBank

SETTINGS = (
    {"scale": 1.0},  # log axis, the channels' default
    {"scale": 4.0, "half_life": 300.0},
    # the combined calibrator's kind: linear axis, winsorised learning
    {"scale": 0.25, "log_axis": False, "prior_excess": 2.0, "min_count": 20, "winsor_p": 1e-3},
    # the weight grows 1.7-fold per sample (not a power of two): rescales within the test
    {"half_life": 1.3, "min_count": 5},
)


def _raw(rng: random.Random) -> float:
    draw = rng.random()
    if draw < 0.05:
        return 0.0
    if draw < 0.08:
        return rng.uniform(50.0, 5000.0)  # far beyond anything seen, and beyond the bins
    return abs(rng.gauss(0.0, 1.5)) * (1 + 3 * (draw > 0.97))


@pytest.mark.parametrize("vms", [1, 3, 6, 40])  # 6: calls either side of _MIN_PAIRS
def test_the_bank_matches_one_calibrator_per_vm_and_column_bit_for_bit(vms):
    """Few pairs per call run the scalar path, many the vectorised one (and a mix of the two
    hands calibrators between them): both must agree exactly with independent calibrators,
    young and old, in and beyond the tail."""
    rng = random.Random(vms)
    bank = CalibrationBank([TailCalibrator(**s) for s in SETTINGS], capacity=2, keep_out=20)
    reference = {(v, c): TailCalibrator(**SETTINGS[c]) for v in range(vms) for c in range(4)}
    for v in range(vms):
        bank.reset(v)  # grows the bank past its initial capacity
    for _ in range(1500):
        some = range(vms) if rng.random() < 0.5 else [rng.randrange(vms)]
        pairs = [(v, c) for v in some for c in range(4) if rng.random() < 0.9]
        raws = [_raw(rng) for _ in pairs]
        slots, columns = zip(*pairs, strict=True) if pairs else ((), ())
        ps, counted = bank.observe(list(slots), list(columns), raws)
        for (v, c), raw, p, ok in zip(pairs, raws, ps, counted, strict=True):
            cal = reference[v, c]
            assert ok == (cal.n >= cal.min_count)
            assert p == cal.observe(raw)
    for (v, c), cal in reference.items():
        assert bank.to_bytes(v, c) == cal.to_bytes()
        assert bank.count(v, c) == cal.n
    fast = [cal for (v, c), cal in reference.items() if c == 3]
    assert all(cal.n > 500 and math.log2(cal.weight) < cal.n - 1 for cal in fast)  # rescaled


def test_both_paths_are_exercised():
    assert 4 * 3 < 4 * 6 * 0.9 < _MIN_PAIRS <= 4 * 6 < 4 * 40 * 0.8


def test_a_calibrator_round_trips_through_bytes():
    rng = random.Random(7)
    bank = CalibrationBank([TailCalibrator(**s) for s in SETTINGS])
    for _ in range(400):
        bank.observe([0, 0, 0, 0], [0, 1, 2, 3], [_raw(rng) for _ in range(4)])
    other = CalibrationBank([TailCalibrator(**s) for s in SETTINGS])
    for column in range(4):
        other.load_bytes(5, column, bank.to_bytes(0, column))
    raws = [0.0, 2.5, 9.0, 400.0]
    assert other.observe([5] * 4, [0, 1, 2, 3], raws) == bank.observe([0] * 4, [0, 1, 2, 3], raws)
    bank.reset(0)
    assert bank.count(0, 2) == 0 and bank.observe([0], [2], [3.0]) == ([1.0], [False])
