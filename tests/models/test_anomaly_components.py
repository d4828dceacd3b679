"""Unit tests of the anomaly engine's building blocks (no engine, no broker)."""

from __future__ import annotations

import functools
import math
import random

import numpy as np
import pytest
from river.checks import yield_checks

from models.attribution import attribute
from models.calibration import TailCalibrator
from models.classification import KINDS, GrowthTracker, classify, climb, severity
from models.drift import CompactPageHinkley
from models.incidents import IncidentTracker, incident_id, parse_incident_id
from models.normalizer import EWStandardizer
from models.peaks import RecentPeaks
from models.recurrence import DailyRecurrenceBank
from models.residual import DampedTrendForecaster, ForecastResidualDetector
from models.threshold import (
    AdaptiveThreshold,
    cadence_boost,
    next_interval,
    score_to_surprise,
    surprise_to_score,
)


def test_calibrator_p_values_of_a_stationary_stream_are_roughly_uniform():
    rng = random.Random(3)
    cal = TailCalibrator(half_life=2000)
    ps = []
    for i in range(6000):
        raw = abs(rng.gauss(0, 1))
        if i >= 1000:
            ps.append(cal.p_value(raw))
        cal.learn_one(raw)
    for q in (0.1, 0.25, 0.5, 0.75, 0.9):
        share = sum(p <= q for p in ps) / len(ps)
        assert abs(share - q) < 0.04, (q, share)


def test_calibrator_extrapolates_far_beyond_the_largest_score_seen():
    rng = random.Random(4)
    cal = TailCalibrator()
    for _ in range(3000):
        cal.learn_one(abs(rng.gauss(0, 1)))
    assert cal.p_value(4.0) < 1e-3
    assert cal.p_value(20.0) < 1e-8
    assert cal.p_value(20.0) < cal.p_value(6.0) < cal.p_value(3.0) < cal.p_value(1.0)


def test_a_winsorised_calibrator_learns_an_extreme_score_as_one_of_its_bound():
    """One extreme anomaly must not make the next one look ordinary: a score rarer than
    `winsor_p` is learned as the score whose p-value is exactly `winsor_p`."""
    rng = random.Random(5)
    plain = TailCalibrator(0.25, log_axis=False, prior_excess=2.0)
    robust = TailCalibrator(0.25, log_axis=False, prior_excess=2.0, winsor_p=1e-5)
    for _ in range(3000):
        raw = rng.expovariate(1.0)
        assert plain.observe(raw) == robust.observe(raw)  # ordinary scores: no difference
    assert robust.counts == plain.counts
    ordinary = plain.p_value(5.0)
    assert plain.observe(60.0) == robust.observe(60.0) < 1e-20  # the same answer ...
    assert robust.top < plain.top  # ... but learned lower: where p is 1e-5
    # so the next, smaller anomaly still stands out: 20 times rarer than after learning 60
    assert robust.p_value(16.0) < plain.p_value(16.0) / 20
    # and the fitted tail of ordinary scores moves a third as much (+18 % against +56 %)
    moved = robust.p_value(5.0) - ordinary
    assert 0.0 <= moved < (plain.p_value(5.0) - ordinary) / 2.5


def test_calibrator_is_silent_until_it_has_seen_enough_and_round_trips():
    cal = TailCalibrator(min_count=50)
    for i in range(49):
        cal.learn_one(float(i % 7))
    assert cal.p_value(1e6) == 1.0
    for i in range(500):
        cal.learn_one(float(i % 7))
    clone = TailCalibrator(min_count=50)
    clone.load_bytes(cal.to_bytes())
    for raw in (0.0, 3.0, 6.5, 40.0):
        assert clone.p_value(raw) == cal.p_value(raw)


def test_a_calibrator_written_with_float64_bins_loads_with_the_same_p_values():
    """States written before the bins were float32 held float64 bins, with weights allowed up
    to 1e150: they load rescaled into float32 and answer as before, to float32's precision."""
    from array import array

    rng = random.Random(11)
    cal = TailCalibrator(half_life=300.0)
    for _ in range(3000):
        cal.learn_one(abs(rng.gauss(0, 1)) * (1 + 5 * (rng.random() < 0.02)))
    big = 1e80  # a weight the old format allowed and float32 bins cannot hold
    head = array("d", (float(cal.n), cal.weight * big, cal.total * big))
    wide = array("d", (c * big for c in cal.counts))
    old = TailCalibrator(half_life=300.0)
    old.load_bytes(head.tobytes() + wide.tobytes())
    assert old.counts.typecode == "f" and old.weight == pytest.approx(1.0)
    for raw in (0.0, 0.5, 2.0, 4.0, 9.0, 40.0):
        assert old.p_value(raw) == pytest.approx(cal.p_value(raw), rel=1e-5)
    assert len(old.to_bytes()) == len(cal.to_bytes())


def test_standardizer_follows_mean_and_spread_and_resists_a_spike():
    rng = random.Random(5)
    s = EWStandardizer(alpha=0.01)
    for _ in range(2000):
        s.learn_one(50.0 + 2.0 * rng.gauss(0, 1))
    assert abs(s.mean - 50.0) < 0.5 and abs(s.std - 2.0) < 0.4
    before = s.mean
    assert s.observe(500.0) > 100
    assert abs(s.mean - before) < 0.2


def test_forecaster_interval_covers_most_of_a_trending_series():
    rng = random.Random(6)
    fc = DampedTrendForecaster()
    inside = 0
    for t in range(3000):
        y = 0.01 * t + rng.gauss(0, 1)
        lo, hi = fc.interval(3.0)
        inside += t > 100 and lo <= y <= hi
        fc.learn_one(y)
    assert inside / 2900 > 0.97


def _stream_with_spikes(n: int, seed: int = 0) -> list[tuple[dict, bool]]:
    rng = random.Random(seed)
    rows = []
    for _ in range(n):
        anomalous = rng.random() < 0.02
        x = {f"f{j}": rng.gauss(0, 1) + (8.0 if anomalous else 0.0) for j in range(4)}
        rows.append((x, anomalous))
    return rows


def test_forecast_residual_detector_follows_river_conventions():
    """River's check_estimator, with a generated stream in place of the CreditCard download."""
    model = ForecastResidualDetector()
    ran = []
    for check in yield_checks(model):
        if isinstance(check, functools.partial) and "dataset" in check.keywords:
            scale = 10 if check.__name__ == "check_bounded_memory_growth" else 1
            check.func(model.clone(), dataset=_stream_with_spikes(1000 * scale))
        else:
            check(model.clone())
        ran.append(check.__name__)
    assert {"check_roc_auc", "check_bounded_memory_growth", "check_pickling"} <= set(ran)


def test_forecast_residual_detector_ranks_a_spike_first():
    det = ForecastResidualDetector()
    rng = random.Random(7)
    for _ in range(300):
        det.learn_one({"cpu": 40 + rng.gauss(0, 1), "mem": 60 + rng.gauss(0, 1)})
    assert det.score_one({"cpu": 40.0, "mem": 75.0}) > 5 * det.score_one({"cpu": 41.0, "mem": 60.5})
    assert set(det.forecast_one()) == {"cpu", "mem"}


def test_page_hinkley_ignores_a_spike_and_catches_a_shift():
    ph = CompactPageHinkley(delta=0.5, threshold=20.0, clip=4.0)
    rng = random.Random(8)
    fired = [ph.update(rng.gauss(0, 1)) for _ in range(5000)]
    assert not any(fired)
    assert not ph.update(1000.0)
    hits = [ph.update(5.0) for _ in range(10)]
    assert any(hits) and ph.direction == 1


def test_attribution_sums_exactly_to_the_score():
    rng = random.Random(9)
    for _ in range(200):
        weights = {f"f{i}": rng.random() * 10 ** rng.uniform(-5, 3) for i in range(6)}
        score = rng.uniform(0, 100)
        points = attribute(score, weights)
        assert set(points) == set(weights)
        assert math.isclose(sum(points.values()), score, rel_tol=0, abs_tol=1e-9)
        assert all(v >= -1e-9 for v in points.values())
    assert attribute(50.0, {"a": 0.0, "b": 0.0}) == {"a": 25.0, "b": 25.0}


def test_classify_maps_drivers_to_kinds():
    up = {"cpu_pct": 1.0, "mem_pct": 1.0, "net_in_bps": 1.0, "disk_write_bps": 1.0}
    flat = dict.fromkeys(up, 0.0)
    assert classify({"cpu_pct": 90, "mem_pct": 5}, up, flat, False) == "cpu_spike"
    assert classify({"net_in_bps": 90, "cpu_pct": 5}, up, flat, False) == "network_saturation"
    assert classify({"disk_write_bps": 90}, up, flat, False) == "io_bottleneck"
    assert classify({"mem_pct": 90}, up, {"mem_pct": 0.9}, False) == "memory_leak"
    assert classify({"mem_pct": 90}, up, {"mem_pct": 0.9}, True) == "memory_leak"
    assert classify({"cpu_pct": 90}, up, flat, True) == "level_shift"
    assert classify({"cpu_pct": 90}, {"cpu_pct": -1.0}, flat, False) == "other"


def test_climb_is_the_smaller_of_the_last_two_steps_in_standard_deviations():
    # 8 above typical, a standard deviation of 2 (z = 4): 4 of it came with the latest sample
    assert climb(8.0, 4.0, 4.0) == pytest.approx(2.0)
    assert climb(8.0, 6.0, 4.0) == pytest.approx(1.0)  # the sample before stood only 2 above
    assert climb(8.0, 8.0, 4.0) == 0.0  # a jump: the sample before was typical
    assert climb(8.0, -1.0, 4.0) == 0.0  # falling back
    assert climb(-8.0, 4.0, -4.0) == 0.0  # below typical
    up = {"mem_pct": 8.0}
    flat = {"mem_pct": 0.0}
    assert classify({"mem_pct": 90}, up, flat, False, 0.4, {"mem_pct": 2.5}) == "memory_leak"
    assert classify({"mem_pct": 90}, up, flat, False, 0.4, {"mem_pct": 1.5}) == "other"


def test_growth_index_separates_a_climb_from_noise():
    rng = random.Random(10)
    noise, climb = GrowthTracker(), GrowthTracker()
    for t in range(500):
        noise.learn_one(rng.gauss(0, 1))
        climb.learn_one(0.1 * t + rng.gauss(0, 0.01))
    assert abs(noise.index) < 0.3 and climb.index > 0.9


def test_severity_bands():
    cut = (99.9, 99.99, 99.999, 99.9999)
    assert severity(99.95, *cut) == "low"
    assert severity(99.995, *cut) == "medium"
    assert severity(99.9995, *cut) == "high"
    assert severity(99.99999, *cut) == "critical"


def test_threshold_feedback_moves_only_the_verdicts_kind():
    th = AdaptiveThreshold()
    base = score_to_surprise(99.9)
    assert math.isclose(surprise_to_score(base), 99.9)
    th.feedback("cpu_spike", "false_positive", 1.0)
    assert th.surprise_threshold(base, "cpu_spike", 0.01, 1.0) == pytest.approx(base + 1.0)
    assert th.surprise_threshold(base, "memory_leak", 0.01, 1.0) == pytest.approx(base)
    # VMs without feedback share their zero penalties: one VM's verdict stays its own
    assert list(AdaptiveThreshold().penalty) == [0.0] * len(KINDS)
    restored = AdaptiveThreshold()
    restored.load_state(th.state())
    assert restored.state() == th.state()
    th.feedback("cpu_spike", "confirmed", 1.0)
    assert th.surprise_threshold(base, "cpu_spike", 0.01, 1.0) == pytest.approx(base)
    th.feedback("cpu_spike", "confirmed", 1.0)
    assert list(th.penalty) == [0.0] * len(KINDS)
    with pytest.raises(ValueError):
        th.feedback("cpu_spike", "maybe", 1.0)


def test_the_sampling_interval_is_learned_and_an_outage_barely_moves_it():
    interval = 0.0
    assert cadence_boost(interval, 300.0) == 0.0  # not known yet
    for _ in range(50):
        interval = next_interval(interval, 60.0)
    assert interval == 60.0
    assert cadence_boost(interval, 300.0) == pytest.approx(math.log10(5.0))
    assert cadence_boost(interval, 0.0) == 0.0  # the cadence term off
    interval = next_interval(interval, 3600.0)  # an hour without samples
    assert 60.0 < interval < 64.0
    interval = next_interval(interval, 1.0)  # a burst
    assert 58.0 < interval < 62.0
    for _ in range(200):  # the VM now reports every five minutes
        interval = next_interval(interval, 300.0)
    assert interval == pytest.approx(300.0, rel=1e-3)
    for _ in range(200):  # and then every hour: the bar is never lowered below the base
        interval = next_interval(interval, 3600.0)
    assert cadence_boost(interval, 300.0) == 0.0


def _run_tracker(flags, severities, recovery=3, holdoff=5):
    tr = IncidentTracker()
    out = []
    for t, (flag, sev) in enumerate(zip(flags, severities, strict=True)):
        status = tr.step(float(t), flag, 99.99 if flag else 10.0, sev, 0, recovery, holdoff)
        out.append((t, status, tr.severity, incident_id("vm", tr.opened_at)))
    return out


def test_incident_lifecycle_open_escalate_resolve():
    flags = [False] * 3 + [True] * 6 + [False] * 5
    sevs = [0, 0, 0, 0, 1, 0, 1, 3, 2, 0, 0, 0, 0, 0]
    events = [(t, s, sev) for t, s, sev, _ in _run_tracker(flags, sevs) if s]
    assert events == [(3, "open", 0), (4, "update", 1), (7, "update", 3), (11, "resolved", 3)]


def test_incident_reopen_within_holdoff_continues_the_same_incident():
    flags = [True] + [False] * 3 + [True] + [False] * 3 + [False] * 10 + [True]
    out = _run_tracker(flags, [0] * len(flags))
    statuses = [(t, s) for t, s, _, _ in out if s]
    assert statuses == [(0, "open"), (3, "resolved"), (4, "update"), (7, "resolved"), (18, "open")]
    ids = {out[t][3] for t in (0, 3, 4, 7)}
    assert len(ids) == 1 and out[18][3] != out[0][3]


def test_a_level_shift_is_held_open_until_it_comes_back_or_lasts():
    cpu = KINDS.index("cpu_spike")

    def calm_until_resolved(tr: IncidentTracker, t: int) -> int:
        while tr.step(float(t), False, 10.0, 0, 0, 3, 5) != "resolved":
            t += 1
        return t

    held = IncidentTracker()
    held.step(0.0, True, 99.99, 0, cpu, 3, 5)
    held.mark_shift(2.0, 0, 20.0, cpu)
    assert held.kind_name == "level_shift" and held.shift_pending
    # calm for 3 samples resolves an incident, but not a level shift younger than the hold
    assert all(held.step(float(t), False, 10.0, 0, 0, 3, 5, 30.0) is None for t in range(3, 32))
    assert held.step(32.0, False, 10.0, 0, 0, 3, 5, 30.0) == "resolved"
    assert held.kind_name == "level_shift"

    back = IncidentTracker()
    back.step(0.0, True, 99.99, 0, cpu, 3, 5)
    back.mark_shift(2.0, 0, 20.0, cpu)
    back.shift_came_back()
    assert back.kind_name == "cpu_spike" and not back.shift_pending
    assert back.recent[-1][1] == cpu  # what operator feedback on it will refer to
    assert calm_until_resolved(back, 3) == 5

    worse = IncidentTracker()  # a worse anomaly of another kind names the incident now
    worse.step(0.0, True, 99.99, 0, cpu, 3, 5)
    worse.mark_shift(2.0, 0, 20.0, cpu)
    assert worse.step(3.0, True, 99.999, 2, KINDS.index("io_bottleneck"), 3, 5) == "update"
    assert worse.kind_name == "io_bottleneck" and not worse.shift_pending


def test_a_re_trigger_of_another_kind_within_the_holdoff_is_a_new_incident():
    cpu, io, other = (KINDS.index(k) for k in ("cpu_spike", "io_bottleneck", "other"))
    for kind, expected in ((cpu, "update"), (other, "update"), (io, "open")):
        tr = IncidentTracker()
        tr.step(0.0, True, 99.99, 0, cpu, 3, 5)
        statuses = [tr.step(float(t), False, 10.0, 0, other, 3, 5) for t in (1, 2, 3)]
        assert statuses[-1] == "resolved"
        assert tr.step(4.0, True, 99.99, 1, kind, 3, 5) == expected


def test_incident_id_round_trip():
    assert parse_incident_id(incident_id("vm:a:1", 1700000000.25)) == ("vm:a:1", 1700000000250)
    assert parse_incident_id("nonsense") is None


def test_tracker_state_round_trip():
    tr = IncidentTracker()
    for t, flag in enumerate([True, True, False, True]):
        tr.step(float(t), flag, 99.99, 1, 2, 5, 5)
    clone = IncidentTracker()
    clone.load_state(tr.state())
    assert clone.state() == tr.state() and clone.recent == tr.recent


def test_calibrator_memory_is_constant():
    cal = TailCalibrator()
    before = len(cal.to_bytes())
    for i in range(10_000):
        cal.learn_one(float(i % 100))
    assert len(cal.to_bytes()) == before


class _OneVM:
    """One slot of a `DailyRecurrenceBank`, sample by sample."""

    def __init__(self, bank: DailyRecurrenceBank | None = None, slot: int = 0) -> None:
        self.bank = bank or DailyRecurrenceBank(capacity=1)
        self.slot = slot
        self.bank.reset(slot)

    def expected(self, ts: float) -> float:
        return float(self.bank.expected(np.array([self.slot]), np.array([ts]))[0])

    def learn_one(self, ts: float, surprise: float) -> None:
        self.bank.learn(np.array([self.slot]), np.array([ts]), np.array([surprise]))

    def state(self) -> list[float]:
        return self.bank.state(self.slot)

    def restored(self) -> _OneVM:
        other = _OneVM()
        other.bank.load_state(0, tuple(self.state()))
        return other


def test_daily_recurrence_needs_the_same_hour_on_both_previous_days():
    day = 86_400.0
    rec = _OneVM()
    t0 = 20 * day  # midnight UTC
    rec.learn_one(t0 + 3 * 3600 + 600, 6.0)  # day 0, 03:10
    assert rec.expected(t0 + day + 3 * 3600) == 0.0  # seen once: not a pattern yet
    rec.learn_one(t0 + day + 3 * 3600 + 4000, 5.0)  # day 1, 04:06 (timing jitters)
    assert rec.expected(t0 + 2 * day + 3 * 3600 + 1800) == 5.0  # both days, within the hour
    assert rec.expected(t0 + 2 * day + 9 * 3600) == 0.0  # another time of day
    rec.learn_one(t0 + 2 * day + 3 * 3600, 7.0)
    restored = rec.restored()
    assert restored.state() == rec.state()
    assert len(rec.state()) == DailyRecurrenceBank.N_STATE
    assert restored.expected(t0 + 3 * day + 3 * 3600) == rec.expected(t0 + 3 * day + 3 * 3600)
    assert rec.expected(t0 + 5 * day + 3 * 3600) == 0.0  # a gap of days forgets the pattern


def test_daily_recurrence_matches_a_plain_record_of_every_day():
    """Random samples over two weeks with gaps of hours and days, against a dict of all days."""
    rng = np.random.default_rng(5)
    day = 86_400.0
    rec, days = _OneVM(), {}

    def plain_expected(ts: float) -> float:
        d, h = int(ts // day), int(ts % day // 3600)
        near = [(h - 1) % 24, h, (h + 1) % 24]
        last = max(days.get(d - 1, [0.0] * 24)[i] for i in near)
        first = max(days.get(d - 2, [0.0] * 24)[i] for i in near)
        return 0.0 if last <= 0.0 else min(last, first)

    ts = 30 * day
    for _ in range(3000):
        ts += float(
            rng.choice(
                [300.0, 3600.0, 7 * 3600.0, day + 600.0, 2 * day, 4 * day],
                p=[0.8, 0.1, 0.05, 0.02, 0.02, 0.01],
            )
        )
        assert rec.expected(ts) == plain_expected(ts)
        surprise = float(rng.exponential(2.0)) if rng.random() < 0.99 else 40.0
        rec.learn_one(ts, surprise)
        hours = days.setdefault(int(ts // day), [0.0] * 24)
        h = int(ts % day // 3600)
        # kept in sixteenths of a unit, rounded down, at most 255 sixteenths
        hours[h] = max(hours[h], min(math.floor(surprise * 16.0), 255) / 16.0)
        if rng.random() < 0.01:  # a checkpoint round trip on the way
            restored = rec.restored()
            assert restored.state() == rec.state()
            rec = restored


def test_daily_recurrence_bank_keeps_vms_apart():
    """VMs updated together, each on its own clock, read as each alone would."""
    rng = np.random.default_rng(8)
    day = 86_400.0
    n = 40
    bank = DailyRecurrenceBank(capacity=4)  # grows as slots are reset
    together = [_OneVM(bank, slot) for slot in range(n)]
    alone = [_OneVM() for _ in range(n)]
    ts = 50 * day + rng.uniform(0.0, 3 * day, n)
    for _ in range(400):
        ts = ts + rng.choice([900.0, 3600.0, day, 2.5 * day], size=n, p=[0.7, 0.2, 0.07, 0.03])
        surprises = rng.exponential(3.0, n)
        slots = np.flatnonzero(rng.random(n) < 0.7)  # some VMs skip a round
        expected = bank.expected(slots, ts[slots])
        bank.learn(slots, ts[slots], surprises[slots])
        for k, slot in enumerate(slots.tolist()):
            assert expected[k] == alone[slot].expected(ts[slot])
            alone[slot].learn_one(ts[slot], surprises[slot])
    assert [vm.state() for vm in together] == [vm.state() for vm in alone]


def _episode(peaks: RecentPeaks, start: float, surprises: list[float], gap: int = 3) -> float:
    """Feed one episode (one sample a minute) plus `gap` calm samples; return the end time."""
    ts = start
    for s in [*surprises, *([0.5] * gap)]:
        peaks.learn_one(ts, s, floor=2.0, gap=gap)
        ts += 60.0
    return ts


def test_recent_peaks_need_two_finished_episodes_within_the_horizon():
    peaks = RecentPeaks()
    assert peaks.expected(0.0, 3600.0) == 0.0
    t = _episode(peaks, 0.0, [2.5, 4.0, 3.0])
    assert peaks.expected(t, 3600.0) == 0.0  # one episode is not a recurrence
    peaks.learn_one(t, 6.0, floor=2.0, gap=3)  # an episode in progress does not count yet
    assert peaks.expected(t, 3600.0) == 0.0
    t = _episode(peaks, t + 60.0, [1.0, 5.0])
    assert peaks.expected(t, 3600.0) == 4.0  # the smaller of the two peaks (4.0, 6.0)
    assert peaks.expected(t + 3600.0, 3600.0) == 0.0  # the older one left the horizon


def test_recent_peaks_calm_samples_below_the_gap_do_not_end_an_episode():
    peaks = RecentPeaks()
    t = _episode(peaks, 0.0, [3.0, 1.0, 1.0, 3.5], gap=3)  # two calm samples inside
    t = _episode(peaks, t, [2.2], gap=3)
    assert peaks.expected(t, 1e9) == 2.2  # episodes: {3.0 .. 3.5} and {2.2}
    restored = RecentPeaks()
    restored.load_state(peaks.state())
    assert restored.state() == peaks.state() and len(peaks.state()) == RecentPeaks.N_STATE
