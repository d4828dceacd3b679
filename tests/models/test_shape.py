"""The shape channel's bank: the distance to the nearest earlier stretch (to the 1-byte codes'
resolution), frames drawn again as the range grows or shrinks, a rhythm seen before matching, a
new pattern scoring high, batches equal to one sample at a time, state that restores exactly,
and the engine wiring (off by default, scored once calibrated, restored)."""

from __future__ import annotations

import math
import random

import numpy as np
import pytest

from models.engine import AnomalyEngine, EngineConfig, Sample
from models.shape import ShapeBank


def _ranges(low: float, high: float, rows: int = 1, metrics: int = 1) -> np.ndarray:
    """The range bank's report: (rows, 2, metrics), highest then lowest values."""
    out = np.empty((rows, 2, metrics))
    out[:, 0], out[:, 1] = high, low
    return out


def _feed(bank: ShapeBank, slot: int, values, width: float = 10.0, low: float = 0.0) -> list[float]:
    """One value of metric 0 per call, against the range low..low + width; the scores."""
    ranges = _ranges(low, low + width)
    return [float(bank.observe(np.array([slot]), np.array([[x]]), ranges)[0]) for x in values]


def test_the_score_is_the_mean_distance_to_the_nearest_earlier_stretch_in_units_of_the_range():
    bank = ShapeBank(1, history=32, length=2)
    bank.reset(0)
    scores = _feed(bank, 0, [0.0, 1.0] * 4 + [0.0, 3.0])
    assert all(math.isnan(s) for s in scores[:7])  # fewer than four stretches of two
    assert scores[7] == 0.0  # (0, 1) was seen before
    assert scores[8] == 0.0  # (1, 0) too
    # (0, 3): the nearest earlier stretch is (0, 1): |0 - 0| and |3 - 1| average 1, range 10
    # (to the codes' resolution: the frame spans twice the range in 255 steps)
    resolution = 2 * 10.0 / 255 / 10.0
    assert scores[9] == pytest.approx(0.1, abs=resolution)
    # (3, 1): (0, 1) and (1, 0) are both 3 away in all, 1.5 on average; range 5
    assert _feed(bank, 0, [1.0], width=5.0)[0] == pytest.approx(0.3, abs=2 * resolution)


def test_the_ring_scores_as_a_plain_list_of_the_last_values_would():
    rng = np.random.default_rng(8)
    history, length = 40, 5
    bank = ShapeBank(1, history, length)
    bank.reset(0)
    values = np.clip(rng.normal(size=150), -4.0, 4.0)  # past three turns of the ring
    scores = _feed(bank, 0, values, width=8.0, low=-4.0)  # one frame throughout
    for t in range(4 * length - 1, len(values)):
        kept = values[max(0, t + 1 - history) : t + 1]  # the ring's values
        latest = kept[-length:]
        earlier = [kept[s : s + length] for s in range(len(kept) - 2 * length + 1)]
        want = min(np.abs(e - latest).mean() for e in earlier) / 8.0
        # each value is coded to within half a step (16 / 255) of itself
        assert scores[t] == pytest.approx(want, abs=16.0 / 255 / 8.0), t


def test_the_frame_is_drawn_again_as_the_range_grows_and_shrinks():
    bank = ShapeBank(1, history=64, length=4)
    bank.reset(0)
    wave = [0.0, 1.0, 2.0, 1.0] * 12
    assert max(_feed(bank, 0, wave, width=2.0)[20:]) == 0.0
    lowest, step = bank._frame[0, 0]
    assert (lowest, step) == (-1.0, 4.0 / 255)
    # a record 100 times the range: a new frame, and the wave (re-coded) still matches itself
    _feed(bank, 0, [200.0], width=2.0)
    assert bank._frame[0, 0, 1] == pytest.approx(2 * 200.0 / 255)
    # a coarse frame codes the wave's values to within half a step; as the range relaxes
    # back (the spike forgotten), a frame drawn for it sees the wave as finely as before
    coarse = _feed(bank, 0, wave[:12], width=200.0)
    assert max(coarse[-4:]) < 0.01
    fine = _feed(bank, 0, wave * 3, width=2.0)
    assert bank._frame[0, 0, 1] == pytest.approx(4.0 / 255)
    assert max(fine[-8:]) == 0.0


def test_a_rhythm_seen_before_matches_and_a_new_pattern_does_not():
    rng = random.Random(3)
    bank = ShapeBank(1, history=256, length=8)
    bank.reset(0)
    spiky = [(90.0 if t % 24 == 0 else 10.0) + rng.gauss(0, 0.5) for t in range(400)]
    scores = _feed(bank, 0, spiky, width=100.0)
    assert max(scores[100:]) < 0.02  # each spike looks like the last ones
    # spikes six times as dense: no stretch of the last 256 values holds two 4 apart; the
    # nearest holds one of the two, so 80 of 8 values apart: 10 on average, 0.1 of the range
    dense = [(90.0 if t % 4 == 0 else 10.0) + rng.gauss(0, 0.5) for t in range(16)]
    assert max(_feed(bank, 0, dense, width=100.0)) > 0.08


def test_no_range_or_an_absent_metric_is_not_scored():
    bank = ShapeBank(2, history=32, length=2)
    bank.reset(0)
    for _ in range(10):
        bank.observe(np.array([0]), np.array([[1.0, math.nan]]), _ranges(0.0, 1.0, metrics=2))
    flat = _ranges(1.0, 1.0, metrics=2)  # a range without a width
    assert math.isnan(bank.observe(np.array([0]), np.array([[5.0, math.nan]]), flat)[0])
    unseen = _ranges(math.nan, math.nan, metrics=2)
    assert math.isnan(bank.observe(np.array([0]), np.array([[5.0, 2.0]]), unseen)[0])
    assert bank._written[0].tolist() == [12, 1]  # absent values are not written


def test_a_batch_scores_as_one_sample_at_a_time():
    rng = np.random.default_rng(5)
    rows, metrics = 600, 3
    slots = rng.integers(0, 7, size=rows)
    X = rng.normal(size=(rows, metrics)).round(1)
    X[rng.random((rows, metrics)) < 0.1] = np.nan
    widths = rng.uniform(1.0, 4.0, size=(rows, metrics))
    ranges = np.empty((rows, 2, metrics))
    ranges[:, 1] = rng.uniform(-3.0, 0.0, size=(rows, metrics))
    ranges[:, 0] = ranges[:, 1] + widths
    batched, single = ShapeBank(metrics, 40, 4), ShapeBank(metrics, 40, 4)
    for slot in range(7):
        batched.reset(slot)
        single.reset(slot)
    got = np.concatenate(
        [
            batched.observe(slots[i : i + 97], X[i : i + 97], ranges[i : i + 97])
            for i in range(0, rows, 97)
        ]
    )
    want = np.array(
        [single.observe(slots[i : i + 1], X[i : i + 1], ranges[i : i + 1])[0] for i in range(rows)]
    )
    assert np.isfinite(want).sum() > 400
    np.testing.assert_array_equal(got, want)


def test_state_restores_exactly():
    rng = np.random.default_rng(2)
    bank = ShapeBank(2, history=48, length=4)
    bank.reset(0)
    for x in rng.normal(size=(70, 2)):  # past one turn of the ring
        bank.observe(np.array([0]), x[None], _ranges(-3.0, 3.0, metrics=2))
    restored = ShapeBank(2, history=48, length=4)
    restored.load_bytes(5, bank.to_bytes(0))  # another slot, the arrays grow
    assert len(bank.to_bytes(0)) == 2 * (4 * 8 + 48)  # counts and frame, then 1-byte codes
    for x in rng.normal(size=(20, 2)):
        a = bank.observe(np.array([0]), x[None], _ranges(-3.0, 3.0, metrics=2))
        b = restored.observe(np.array([5]), x[None], _ranges(-3.0, 3.0, metrics=2))
        assert a[0] == b[0]


def test_a_state_of_another_history_length_restores_the_latest_values_that_fit():
    rng = np.random.default_rng(4)
    values = rng.normal(size=(130, 1))
    old = ShapeBank(1, history=48, length=4)
    shorter, longer = ShapeBank(1, history=32, length=4), ShapeBank(1, history=64, length=4)
    for bank in (old, shorter, longer):
        bank.reset(0)

    def feed(bank: ShapeBank, rows: np.ndarray) -> list[float]:
        return [float(bank.observe(np.array([0]), x[None], _ranges(-3.0, 3.0))[0]) for x in rows]

    feed(old, values[:60])
    feed(shorter, values[:60])
    feed(longer, values[:60])
    for bank, size in ((shorter, 32), (longer, 64)):
        restored = ShapeBank(1, history=size, length=4)
        restored.load_bytes(0, old.to_bytes(0))
        after = feed(restored, values[60:])
        want = feed(bank, values[60:])
        # a shorter ring holds the same values at once; a longer one once it has turned
        same_from = 0 if size < 48 else size - 48
        assert after[same_from:] == want[same_from:]
        assert all(math.isfinite(s) for s in after)
    with pytest.raises(ValueError, match="not a shape history"):
        old.load_bytes(0, old.to_bytes(0)[:20])  # shorter than its counts and frame


def _engine_samples(n: int, seed: int = 1) -> list[Sample]:
    rng = random.Random(seed)
    t0 = 1_700_000_000.0
    return [
        Sample("vm-1", t0 + 300.0 * t, {"cpu_pct": (80.0 if t % 12 == 0 else 20.0) + rng.random()})
        for t in range(n)
    ]


def test_the_engine_leaves_the_channel_off_unless_asked_and_it_needs_the_range():
    assert "shape" not in AnomalyEngine().channels
    assert "shape" in AnomalyEngine(EngineConfig(shape_history=64)).channels
    with pytest.raises(ValueError, match="value_range"):
        AnomalyEngine(EngineConfig(shape_history=64, value_range=False))


def test_the_engine_scores_the_channel_after_a_day_and_restores_it():
    config = EngineConfig(shape_history=64, shape_length=4)
    engine = AnomalyEngine(config)
    samples = _engine_samples(700)  # 288 samples a day at 5 minutes
    seen = [engine.process(samples[i : i + 50]) for i in range(0, 600, 50)]
    channels = [set(a.surprises) for batch in seen for a in batch if a.evidence_parts]
    assert any("shape" in c for c in channels[-100:])
    assert not any("shape" in c for c in channels[:50])  # its calibrator's first 50 scores
    restored = AnomalyEngine(config)
    restored.load_vm("vm-1", engine.dump_vm("vm-1"))
    dump = engine.dump_vm("vm-1")
    assert b"shape_history" in dump and len(dump) > 6 * 64  # six metrics' rings
    a = [x.score for x in engine.process(samples[600:])]
    b = [x.score for x in restored.process(samples[600:])]
    assert a == b
