"""Time-of-day profiles: learn a daily rhythm, score departures from it, stay out of the way
of metrics without one, and give the same numbers on the scalar and the vectorised path."""

from __future__ import annotations

import numpy as np
import pytest

from models.daily_profile import DailyProfiles
from models.engine import AnomalyEngine, EngineConfig, Sample

STEP = 300.0  # 5-minute samples
DAY = 86_400.0
MIDNIGHT = 18_518 * DAY  # a UTC midnight in 2020: the engine's VMs live in real time


def office_hours(t: float, rng: np.random.Generator, plateau: float = 80.0) -> float:
    """20 at night, `plateau` from 09:00 to 17:00 UTC, plus noise."""
    hour = (t % DAY) / 3600.0
    return (plateau if 9.0 <= hour < 17.0 else 20.0) + rng.normal(0.0, 2.0)


def feed(profiles: DailyProfiles, times, values, slot: int = 0) -> np.ndarray:
    """One sample at a time; returns the scores of metric 0."""
    scores = []
    last = 0.0
    for t, x in zip(times, values, strict=True):
        out, _ = profiles.observe(
            np.array([slot]), np.array([t]), np.array([t - last if last else 0.0]), np.array([[x]])
        )
        scores.append(out[0, 0])
        last = t
    return np.array(scores)


def test_a_day_whose_plateau_comes_in_at_half_height_scores_high():
    rng = np.random.default_rng(0)
    times = np.arange(0.0, 8 * DAY, STEP)
    values = [office_hours(t, rng, 50.0 if 6 * DAY <= t < 7 * DAY else 80.0) for t in times]
    scores = feed(DailyProfiles(1), times, values)
    day = (times // DAY).astype(int)
    hour = (times % DAY) / 3600.0
    plateau = (hour >= 10.0) & (hour < 16.0)
    assert (scores[day < 2] == -1.0).all()  # bins are too young for two days
    normal = scores[(day == 5)]
    assert (normal >= 0.0).mean() > 0.9  # the rhythm is recognised
    assert np.percentile(normal, 99) < 6.0
    odd = scores[(day == 6) & plateau]
    assert np.median(odd) > 8.0
    # one odd day barely moves the profile (winsorised updates): the next day is normal again
    assert np.percentile(scores[(day == 7) & plateau], 90) < 6.0


def test_a_metric_without_a_daily_rhythm_gets_no_profile_score():
    rng = np.random.default_rng(1)
    times = np.arange(0.0, 6 * DAY, STEP)
    values = 50.0 + rng.normal(0.0, 5.0, times.size)
    profiles = DailyProfiles(1)
    scores = feed(profiles, times, values)
    assert (scores == -1.0).all()
    assert profiles.explained(0, 0) > 0.8


def test_sparse_spikes_do_not_look_like_a_rhythm():
    rng = np.random.default_rng(2)
    times = np.arange(0.0, 6 * DAY, STEP)
    values = np.where(rng.random(times.size) < 0.02, 20.0, 0.0)
    profiles = DailyProfiles(1)
    assert (feed(profiles, times, values) == -1.0).all()


def test_a_bin_forgets_per_day_whatever_the_sampling_interval():
    weights = []
    for step in (60.0, 300.0, 900.0):
        profiles = DailyProfiles(1, bins=24, day_alpha=0.3)
        times = np.arange(0.0, 3 * DAY, step)
        feed(profiles, times, np.full(times.size, 5.0))
        weights.append(profiles._bins[0, 0, 5, 2])  # not bin 0: the very first sample has no gap
    assert weights == pytest.approx([1.0 - 0.7**3] * 3, rel=1e-6)


def _batch_inputs(seed: int, n_vms: int, rows: int, metrics: int):
    rng = np.random.default_rng(seed)
    slots = rng.integers(0, n_vms, rows)
    ts = np.empty(rows)
    clock = np.zeros(n_vms)
    dt = np.empty(rows)
    for r, slot in enumerate(slots):
        step = rng.choice([60.0, 300.0, 3600.0])
        dt[r] = step if clock[slot] else 0.0
        clock[slot] += step
        ts[r] = clock[slot]
    hours = (ts % DAY) / 3600.0
    X = 20.0 + 50.0 * ((hours >= 9) & (hours < 17))[:, None] + rng.normal(0, 2, (rows, metrics))
    X[rng.random((rows, metrics)) < 0.2] = np.nan
    X[rng.random(rows) < 0.01] *= 3.0
    return slots, ts, dt, X


@pytest.mark.parametrize("batch", [200, 2000])
def test_vectorised_and_scalar_paths_agree(batch, monkeypatch):
    """The same stream through batches (vectorised rounds) and one sample at a time."""
    rounds = []
    original = DailyProfiles._observe_round

    def counted(self, *args):
        rounds.append(len(args[0]))
        return original(self, *args)

    monkeypatch.setattr(DailyProfiles, "_observe_round", counted)
    slots, ts, dt, X = _batch_inputs(3, n_vms=12, rows=24_000, metrics=3)
    one, many = DailyProfiles(3, capacity=4), DailyProfiles(3, capacity=4)
    for p in (one, many):
        for slot in range(12):
            p.reset(slot)

    def run(profiles: DailyProfiles, size: int) -> tuple[np.ndarray, np.ndarray]:
        parts = [profiles.observe(slots[p], ts[p], dt[p], X[p]) for p in _slices(size)]
        return np.vstack([s for s, _ in parts]), np.vstack([u for _, u in parts])

    def _slices(size: int) -> list[slice]:
        return [slice(i, i + size) for i in range(0, len(slots), size)]

    singles, singles_usual = run(one, 1)
    assert not rounds  # one sample at a time: the scalar path
    batched, batched_usual = run(many, batch)
    assert sum(rounds) > len(slots) // 2  # most rows went through the vectorised rounds
    assert (singles >= 0.0).sum() > 1000  # the profiles did score
    np.testing.assert_allclose(batched, singles, rtol=1e-9, atol=1e-12)
    # what a metric usually reads is given exactly where it is scored
    np.testing.assert_array_equal(np.isnan(singles_usual), singles < 0.0)
    np.testing.assert_allclose(batched_usual, singles_usual, rtol=1e-6, equal_nan=True)
    np.testing.assert_allclose(many._bins, one._bins, rtol=1e-9, atol=1e-12)
    np.testing.assert_allclose(many._scalars, one._scalars, rtol=1e-9, atol=1e-12)


def test_state_round_trip_continues_the_same_scores():
    rng = np.random.default_rng(4)
    times = np.arange(0.0, 6 * DAY, STEP)
    values = [office_hours(t, rng) for t in times]
    half = times.size // 2
    original = DailyProfiles(1)
    feed(original, times[:half], values[:half])
    scalars, bins = original.state(0)
    restored = DailyProfiles(1)
    restored.load_state(5, scalars, bins)  # any slot
    a = feed(original, times[half:], values[half:])
    b = feed(restored, times[half:], values[half:], slot=5)
    assert (a >= 0.0).sum() > 300
    np.testing.assert_array_equal(b, a)  # the bins are float32 in memory and in the state


def _office_vm(days: int, odd_day: int | None, seed: int = 0) -> list[Sample]:
    rng = np.random.default_rng(seed)
    samples = []
    for t in np.arange(0.0, days * DAY, STEP):
        plateau = 50.0 if odd_day is not None and odd_day * DAY <= t < (odd_day + 1) * DAY else 80.0
        samples.append(Sample("vm-1", MIDNIGHT + t, {"cpu_pct": office_hours(t, rng, plateau)}))
    return samples


def _opened(config: EngineConfig, samples: list[Sample]) -> list[float]:
    engine = AnomalyEngine(config)
    out = []
    for i in range(0, len(samples), 100):
        out.extend(engine.process(samples[i : i + 100]))
    return [a.ts for a in out if a.event and a.event["status"] == "open"]


def test_the_engine_alerts_on_a_missing_plateau_only_with_the_daily_channel():
    samples = _office_vm(8, odd_day=6)
    start = MIDNIGHT + 6 * DAY + 9 * 3600.0
    engine = AnomalyEngine()
    events = []
    for i in range(0, len(samples), 100):
        events.extend(a.event for a in engine.process(samples[i : i + 100]) if a.event)
    opened = [e for e in events if e["status"] == "open" and start <= e["ts"] < start + 8 * 3600]
    assert opened, "the half-height plateau opened no incident"
    # the alert says what the VM usually reads at this hour (the plateau, slightly pulled down
    # by the odd samples already learned)
    assert opened[0]["actual"]["cpu_pct"] == pytest.approx(50.0, abs=8.0)
    assert 70.0 < opened[0]["usual_at_this_hour"]["cpu_pct"] < 81.0
    # as it stood before the sample, not as the rest of its batch left it
    one_by_one = AnomalyEngine()
    alone = [a.event for s in samples for a in one_by_one.process([s]) if a.event]
    assert [e for e in alone if e["ts"] == opened[0]["ts"]] == [opened[0]]
    # and so does the VM's snapshot (the web view), for the hour of its last sample
    assert engine.vm_snapshot("vm-1")["usual_at_this_hour"]["cpu_pct"] == pytest.approx(
        20.0, abs=3.0
    )  # the last sample is at 23:55
    on_the_odd_day = [e["ts"] for e in opened]
    assert on_the_odd_day == [t for t in _opened(EngineConfig(), samples) if start <= t]
    without = _opened(EngineConfig(daily_profile=False), samples)
    assert not [t for t in without if start <= t < start + 8 * 3600]
    # on a normal week the daily channel adds no incident after its warm-up
    calm = _opened(EngineConfig(), _office_vm(8, odd_day=None))
    assert [t for t in calm if t >= MIDNIGHT + 5 * DAY] == []


def test_a_weekday_only_rhythm_does_not_alert_every_weekend():
    """Office hours Monday to Friday, flat weekends: the weekend values widen the hourly bins
    (the profile scores them as ordinary spread) instead of opening an incident each weekend."""
    rng = np.random.default_rng(0)
    samples = []
    for t in np.arange(0.0, 28 * DAY, STEP):
        weekday = (int((MIDNIGHT + t) // DAY) + 3) % 7  # 0 = Monday (1970-01-01 was a Thursday)
        x = office_hours(t, rng) if weekday < 5 else 20.0 + rng.normal(0.0, 2.0)
        samples.append(Sample("vm-1", MIDNIGHT + t, {"cpu_pct": x}))
    opened = _opened(EngineConfig(), samples)
    on_weekends = [t for t in opened if (int(t // DAY) + 3) % 7 >= 5 and t >= MIDNIGHT + 7 * DAY]
    assert on_weekends == []
