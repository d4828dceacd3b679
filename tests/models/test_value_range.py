"""The range channel's envelope: excess over the widest range seen, slow relaxation, a first
day that is not scored, and the batched path equal to the sample-by-sample one bit for bit."""

from __future__ import annotations

import math
import random

import numpy as np
import pytest

from models.value_range import RangeBank


def _one(bank: RangeBank, slot: int, *values: float, ts: float = 0.0) -> float:
    scores, _ = bank.observe(np.array([slot]), np.array([ts]), np.array([values], dtype=float))
    return float(scores[0])


def test_excess_is_measured_in_units_of_the_range_seen_before():
    bank = RangeBank(1, decay=0.0, settle=0.0)
    bank.reset(0)
    assert _one(bank, 0, 0.0) == 0.0  # first value: no range yet
    assert _one(bank, 0, 10.0) == 0.0  # no width before it either
    scores, before = bank.observe(np.array([0]), np.array([0.0]), np.array([[15.0]]))
    assert scores[0] == pytest.approx(0.5)  # 5 above a range of 10 ...
    assert before[0].tolist() == [[10.0], [0.0]]  # ... which it reports: highest, lowest
    assert _one(bank, 0, 5.0) == 0.0  # inside
    assert _one(bank, 0, -10.0) == pytest.approx(10.0 / 15.0)  # 10 below a range of 15
    assert _one(bank, 0, math.nan) == 0.0  # absent: nothing scored, nothing learned
    assert _one(bank, 0, 15.0) == 0.0


def test_the_envelope_relaxes_toward_later_values_at_the_decay_rate():
    bank = RangeBank(2, decay=0.01, settle=0.0)
    bank.reset(3)  # grows the bank
    _one(bank, 3, 100.0, -5.0)
    _one(bank, 3, 0.0, 5.0)
    for _ in range(69):  # 0.99 ** 69 ~ 0.5
        _one(bank, 3, 0.0, 0.0)
    highs_lows = np.frombuffer(bank.to_bytes(3)[8:], dtype="<f4").reshape(2, 2)
    assert highs_lows[0, 0] == pytest.approx(100.0 * 0.99**70, rel=1e-5)
    assert highs_lows[1, 0] == 0.0  # the lowest value was the latest
    assert highs_lows[0, 1] == pytest.approx(5.0 * 0.99**69, rel=1e-5)
    assert highs_lows[1, 1] == pytest.approx((-5.0 + 10.0 * 0.01) * 0.99**69, rel=1e-5)
    # a value within the first range but above the relaxed one is an excess over the new range
    high = 100.0 * 0.99**70
    assert _one(bank, 3, 75.0, 0.0) == pytest.approx((75.0 - high) / high, rel=1e-5)


def test_a_vm_is_scored_once_a_day_has_passed_since_its_first_sample():
    bank = RangeBank(1, decay=0.0)  # settle: one day
    bank.reset(0)
    t0 = 1_700_000_000.0
    assert math.isnan(_one(bank, 0, 0.0, ts=t0))
    assert math.isnan(_one(bank, 0, 10.0, ts=t0 + 3600.0))
    assert math.isnan(_one(bank, 0, 20.0, ts=t0 + 86_399.0))  # learned, not scored
    assert _one(bank, 0, 30.0, ts=t0 + 86_400.0) == pytest.approx(0.5)  # 10 above 0..20
    restored = RangeBank(1, decay=0.0)
    restored.load_bytes(0, bank.to_bytes(0))  # the first sample's time travels with it
    assert _one(restored, 0, 15.0, ts=t0 + 86_401.0) == 0.0
    bank.reset(0)  # a new VM in the slot starts its day afresh
    assert math.isnan(_one(bank, 0, 15.0, ts=t0 + 90_000.0))


def _stream(n: int, n_vms: int, n_metrics: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Slots with repeats, values on different scales, absent metrics and occasional spikes."""
    rng = random.Random(seed)
    slots = np.array([rng.randrange(n_vms) for _ in range(n)])
    X = np.empty((n, n_metrics))
    for i in range(n):
        for j in range(n_metrics):
            if rng.random() < 0.15:
                X[i, j] = math.nan
            else:
                spike = rng.choice([1.0] * 30 + [3.0, 8.0, -4.0])
                X[i, j] = 10.0**j * (5.0 + spike * rng.gauss(0.0, 1.0))
    return slots, X


def test_batches_equal_sample_by_sample_and_survive_a_checkpoint_bit_for_bit():
    slots, X = _stream(6000, 40, 4, seed=7)
    ts = 1_700_000_000.0 + 60.0 * np.arange(len(slots))  # a VM is scored from its 1,440th minute
    single = RangeBank(4, decay=0.003)
    batched = RangeBank(4, decay=0.003)
    for bank in (single, batched):
        for slot in range(40):
            bank.reset(slot)
    one_by_one, ranges_one = [], []
    for s, t, row in zip(slots, ts, X, strict=True):
        score, before = single.observe(np.array([s]), np.array([t]), row[None, :])
        one_by_one.append(float(score[0]))
        ranges_one.append(before[0])
    in_batches, ranges_batched = [], []
    for start in range(0, len(slots), 500):
        if start == 3000:  # restore every VM into a fresh bank half-way
            restored = RangeBank(4, decay=0.003)
            for slot in range(40):
                restored.load_bytes(slot, batched.to_bytes(slot))
            batched = restored
        part = slice(start, start + 500)
        scores, before = batched.observe(slots[part], ts[part], X[part])
        in_batches.extend(scores)
        ranges_batched.extend(before)
    assert np.array_equal(np.array(one_by_one), np.array(in_batches), equal_nan=True)
    # the ranges each sample was scored against, as reported
    assert np.array_equal(np.array(ranges_one), np.array(ranges_batched), equal_nan=True)
    assert sum(s > 0.0 for s in one_by_one) > 50  # the spikes did go beyond the ranges
    assert 1000 < sum(math.isnan(s) for s in one_by_one) < 1500  # the first day's samples
    assert all(single.to_bytes(s) == batched.to_bytes(s) for s in range(40))


def test_decay_outside_zero_to_one_is_refused():
    with pytest.raises(ValueError):
        RangeBank(1, decay=1.0)
    with pytest.raises(ValueError):
        RangeBank(1, decay=-0.1)
