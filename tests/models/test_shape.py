"""The shape channel's bank: the distance to the nearest earlier stretch (exact for values on
the 4-bit codes' grid), frames drawn again as the range grows or shrinks, a rhythm seen before
matching, a new pattern scoring high, scoring every n-th stretch, batches equal to one sample
at a time, state that restores exactly, and the engine wiring (on by default, scored once
calibrated, restored)."""

from __future__ import annotations

import math
import random

import numpy as np
import pytest

from models.engine import FEATURES, AnomalyEngine, EngineConfig, Sample, channel_evidence
from models.shape import ShapeBank


def _ranges(low: float, high: float, rows: int = 1, metrics: int = 1) -> np.ndarray:
    """The range bank's report: (rows, 2, metrics), highest then lowest values."""
    out = np.empty((rows, 2, metrics))
    out[:, 0], out[:, 1] = high, low
    return out


def _feed(bank: ShapeBank, slot: int, values, width: float = 10.0, low: float = 0.0) -> list[float]:
    """One value of metric 0 per call, against the range low..low + width; the scores."""
    ranges = _ranges(low, low + width)
    return [float(bank.observe(np.array([slot]), np.array([[x]]), ranges)[0, 0]) for x in values]


def test_the_score_is_the_mean_distance_to_the_nearest_earlier_stretch_in_units_of_the_range():
    bank = ShapeBank(1, history=32, length=2, every=1)
    bank.reset(0)
    # range 0..15: the frame spans -7.5..22.5 in 15 steps of 2, so these values code exactly
    scores = _feed(bank, 0, [0.5, 2.5] * 4 + [0.5, 6.5], width=15.0)
    assert all(math.isnan(s) for s in scores[:7])  # fewer than four stretches of two
    assert scores[7] == 0.0  # (0.5, 2.5) was seen before
    assert scores[8] == 0.0  # (2.5, 0.5) too
    # (0.5, 6.5): the nearest earlier stretch is (0.5, 2.5): 0 and 4 apart, 2 on average
    assert scores[9] == pytest.approx(2.0 / 15.0, rel=1e-12)
    # (6.5, 2.5): (0.5, 2.5) and (2.5, 0.5) are both 6 away in all, 3 on average; range 5
    assert _feed(bank, 0, [2.5], width=5.0)[0] == pytest.approx(3.0 / 5.0, rel=1e-12)


def test_the_ring_scores_as_a_plain_list_of_the_last_values_would():
    rng = np.random.default_rng(8)
    history, length = 40, 5
    bank = ShapeBank(1, history, length, every=1)
    bank.reset(0)
    # the range -4..4 gives the frame -8..8 in steps of 16 / 15: values on that grid code
    # exactly; 150 values turn the ring more than three times
    values = -8.0 + 16.0 / 15.0 * rng.integers(4, 12, size=150)
    scores = _feed(bank, 0, values, width=8.0, low=-4.0)  # one frame throughout
    for t in range(4 * length - 1, len(values)):
        kept = values[max(0, t + 1 - history) : t + 1]  # the ring's values
        latest = kept[-length:]
        earlier = [kept[s : s + length] for s in range(len(kept) - 2 * length + 1)]
        want = min(np.abs(e - latest).mean() for e in earlier) / 8.0
        assert scores[t] == pytest.approx(want, rel=1e-9, abs=1e-12), t


@pytest.mark.parametrize("length", [8, 9])
def test_the_largest_distances_count_in_full(length):
    """Stretches of the lowest and the highest code lie 15 x `length` codes apart: more than
    a byte holds from 9 values on. A sum that wrapped around would read as a near match."""
    history = 12 * length
    bank = ShapeBank(1, history, length, every=1)
    bank.reset(0)
    rng = np.random.default_rng(3)
    # a first value inside the range draws the frame -8..8, as above; then blocks of the
    # frame's lowest and highest codes, then any codes
    blocks = [np.full(length, 15 * (k % 2)) for k in range(10)]
    codes = np.concatenate([[8], *blocks, rng.integers(0, 16, size=60)])
    values = -8.0 + 16.0 / 15.0 * codes
    scores = _feed(bank, 0, values, width=8.0, low=-4.0)
    for t in range(4 * length - 1, len(values)):
        kept = values[max(0, t + 1 - history) : t + 1]
        latest = kept[-length:]
        earlier = [kept[s : s + length] for s in range(len(kept) - 2 * length + 1)]
        want = min(np.abs(e - latest).mean() for e in earlier) / 8.0
        assert scores[t] == pytest.approx(want, rel=1e-9, abs=1e-12), t


def test_the_frame_is_drawn_again_as_the_range_grows_and_shrinks():
    bank = ShapeBank(1, history=64, length=4, every=1)
    bank.reset(0)
    wave = [0.0, 1.0, 2.0, 1.0] * 12
    assert max(_feed(bank, 0, wave, width=2.0)[20:]) == 0.0
    lowest, step = bank._frame[0, 0]
    assert (lowest, step) == (-1.0, 4.0 / 15)
    # a record 100 times the range: a new frame, and the wave (re-coded) still matches itself
    _feed(bank, 0, [200.0], width=2.0)
    assert bank._frame[0, 0, 1] == pytest.approx(2 * 200.0 / 15)
    # a coarse frame codes the wave's values to within half a step; as the range relaxes
    # back (the spike forgotten), a frame drawn for it sees the wave as finely as before
    coarse = _feed(bank, 0, wave[:12], width=200.0)
    assert max(coarse[-4:]) < 0.01
    fine = _feed(bank, 0, wave * 3, width=2.0)
    assert bank._frame[0, 0, 1] == pytest.approx(4.0 / 15)
    assert max(fine[-8:]) == 0.0


def test_a_rhythm_seen_before_matches_and_a_new_pattern_does_not():
    rng = random.Random(3)
    bank = ShapeBank(1, history=256, length=8, every=1)
    bank.reset(0)
    # range 0..100: codes in steps of 13.3 from -50, so 15 and 85 sit well inside codes 5
    # and 10 whatever the noise
    spiky = [(85.0 if t % 24 == 0 else 15.0) + rng.gauss(0, 0.5) for t in range(400)]
    scores = _feed(bank, 0, spiky, width=100.0)
    assert max(scores[100:]) == 0.0  # each spike looks like the last ones
    # spikes six times as dense: no stretch of the last 256 values holds two 4 apart; the
    # nearest holds one of the two, so the other is 5 codes (66.7) of 8 values apart: 0.083
    # of the range
    dense = [(85.0 if t % 4 == 0 else 15.0) + rng.gauss(0, 0.5) for t in range(16)]
    assert max(_feed(bank, 0, dense, width=100.0)) == pytest.approx(5 * 200.0 / 15 / 8 / 100)


def test_each_metric_is_scored_on_its_own_and_the_explanation_names_the_one_that_changed():
    rng = random.Random(4)
    bank = ShapeBank(2, history=128, length=8, every=1)
    bank.reset(0)
    ranges = _ranges(0.0, 100.0, metrics=2)

    def step(cpu: float, mem: float) -> np.ndarray:
        return bank.observe(np.array([0]), np.array([[cpu, mem]]), ranges)[0]

    for t in range(200):  # cpu spikes every 24 samples, memory wanders at mid-range
        step((85.0 if t % 24 == 0 else 15.0) + rng.gauss(0, 0.5), 45.0 + rng.gauss(0, 1.0))
    dense = [step((85.0 if t % 4 == 0 else 15.0), 45.0) for t in range(8)]
    assert max(row[0] for row in dense) > 0.05  # cpu's new rhythm
    assert max(row[1] for row in dense) == 0.0  # memory as ever
    # The engine spreads the shape channel's surprise over the metrics by their shape scores,
    # the others' by their z-scores: memory's larger z does not take the credit.
    cpu, mem = FEATURES.index("cpu_pct"), FEATURES.index("mem_pct")
    evidence = channel_evidence(
        [cpu, mem],
        {"level": 1.0, "shape": 9.0},
        residual=[0.0, 0.0],
        z=[1.0, 2.0],
        daily=[-1.0, -1.0],
        shape=[0.3, 0.0],
    )
    assert evidence == pytest.approx({"cpu_pct": 9.0 + 0.2, "mem_pct": 0.8})
    # without shape scores (the channel off, or no metric scored) z-scores weigh it all
    no_shape = channel_evidence(
        [cpu, mem], {"level": 1.0, "shape": 9.0}, [0.0, 0.0], [1.0, 2.0], [-1.0, -1.0], []
    )
    assert no_shape == pytest.approx({"cpu_pct": 2.0, "mem_pct": 8.0})


def test_every_nth_stretch_is_scored_as_it_would_be_on_its_own():
    rng = np.random.default_rng(6)
    values = rng.normal(size=120)
    each, fourth = ShapeBank(1, 40, 4, every=1), ShapeBank(1, 40, 4, every=4)
    each.reset(0)
    fourth.reset(0)
    want = _feed(each, 0, values, width=6.0, low=-3.0)
    got = _feed(fourth, 0, values, width=6.0, low=-3.0)
    for t in range(len(values)):  # the t-th value is the (t + 1)-th written
        if (t + 1) % 4 == 0 and t >= 15:
            assert got[t] == want[t]
        else:
            assert math.isnan(got[t])
    with pytest.raises(ValueError, match="every"):
        ShapeBank(1, 40, 4, every=0)


def test_no_range_or_an_absent_metric_is_not_scored():
    bank = ShapeBank(2, history=32, length=2)
    bank.reset(0)
    for _ in range(10):
        bank.observe(np.array([0]), np.array([[1.0, math.nan]]), _ranges(0.0, 1.0, metrics=2))
    flat = _ranges(1.0, 1.0, metrics=2)  # a range without a width
    assert np.isnan(bank.observe(np.array([0]), np.array([[5.0, math.nan]]), flat)).all()
    unseen = _ranges(math.nan, math.nan, metrics=2)
    assert np.isnan(bank.observe(np.array([0]), np.array([[5.0, 2.0]]), unseen)).all()
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
    batched, single = ShapeBank(metrics, 40, 4, every=3), ShapeBank(metrics, 40, 4, every=3)
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
    # about a third of each metric's stretches past its first ones
    assert np.isfinite(want).sum() > 300
    np.testing.assert_array_equal(got, want)


def test_state_restores_exactly():
    rng = np.random.default_rng(2)
    bank = ShapeBank(2, history=48, length=4, every=1)
    bank.reset(0)
    for x in rng.normal(size=(70, 2)):  # past one turn of the ring
        bank.observe(np.array([0]), x[None], _ranges(-3.0, 3.0, metrics=2))
    restored = ShapeBank(2, history=48, length=4, every=1)
    restored.load_bytes(5, bank.to_bytes(0))  # another slot, the arrays grow
    assert len(bank.to_bytes(0)) == 2 * (4 * 8 + 48 // 2)  # counts and frame, 4-bit codes
    for x in rng.normal(size=(20, 2)):
        a = bank.observe(np.array([0]), x[None], _ranges(-3.0, 3.0, metrics=2))
        b = restored.observe(np.array([5]), x[None], _ranges(-3.0, 3.0, metrics=2))
        np.testing.assert_array_equal(a, b)


def test_a_state_of_another_history_length_restores_the_latest_values_that_fit():
    rng = np.random.default_rng(4)
    values = rng.normal(size=(130, 1))
    old = ShapeBank(1, history=48, length=4, every=1)
    shorter = ShapeBank(1, history=32, length=4, every=1)
    longer = ShapeBank(1, history=64, length=4, every=1)
    for bank in (old, shorter, longer):
        bank.reset(0)

    def feed(bank: ShapeBank, rows: np.ndarray) -> list[float]:
        return [float(bank.observe(np.array([0]), x[None], _ranges(-3.0, 3.0))[0, 0]) for x in rows]

    feed(old, values[:60])
    feed(shorter, values[:60])
    feed(longer, values[:60])
    for bank, size in ((shorter, 32), (longer, 64)):
        restored = ShapeBank(1, history=size, length=4, every=1)
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


def test_the_engine_has_the_channel_unless_turned_off_and_it_needs_the_range():
    assert "shape" in AnomalyEngine().channels
    assert "shape" not in AnomalyEngine(EngineConfig(shape_history=0)).channels
    with pytest.raises(ValueError, match="value_range"):
        AnomalyEngine(EngineConfig(value_range=False))


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
    assert b"shape_codes" in dump and len(dump) > 6 * (32 + 64 // 2)  # six metrics' rings
    a = [x.score for x in engine.process(samples[600:])]
    b = [x.score for x in restored.process(samples[600:])]
    assert a == b
