"""IntervalForecaster, seasonality detection and conformal bands, on generated data."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest

from models.conformal import ConformalBands
from models.forecaster_bank import ForecasterBank
from models.forecasting import IntervalForecaster, forecast_message, level_key
from models.seasonality import SeasonalityDetector, autocorrelation, detect_period

DAY = 288  # samples per day at 5 minutes
T0 = 1_700_000_000.0


def daily(i: int | np.ndarray, amp: float = 10.0, base: float = 50.0):
    return base + amp * np.sin(2 * np.pi * np.asarray(i) / DAY)


def test_learns_clean_daily_sine_to_near_zero_error_with_auto_detection():
    f = IntervalForecaster(horizon=12, switch_ratio=0.0)  # the smoothing model alone
    n = 7 * DAY
    for i in range(n):
        f.learn_one(float(daily(i)), ts=T0 + 300 * i)
    assert f.period == DAY
    points = f.forecast()
    assert [p.step for p in points] == list(range(1, 13))
    truth = daily(np.arange(n, n + 12))
    errors = np.abs(np.array([p.yhat for p in points]) - truth)
    assert errors.max() < 0.01 * 10.0  # under 1 % of the amplitude
    assert f.accuracy()["mae"] < 0.05


def test_learns_clean_sine_with_given_season_length():
    f = IntervalForecaster(horizon=6, season_length=24, switch_ratio=0.0)
    values = 5 + np.sin(2 * np.pi * np.arange(24 * 20) / 24)
    for v in values:
        f.learn_one(float(v))
    truth = 5 + np.sin(2 * np.pi * np.arange(values.size, values.size + 6) / 24)
    assert np.abs(np.array([p.yhat for p in f.forecast()]) - truth).max() < 1e-3
    assert f.model_name == "ets-damped-seasonal[24]+conformal"


def test_switches_to_seasonal_naive_where_it_forecasts_better():
    rng = np.random.default_rng(11)
    profile = np.repeat(rng.uniform(0, 100, 24), DAY // 24)  # sharp hourly steps, every day
    f = IntervalForecaster()
    n = 6 * DAY
    for i in range(n):
        f.learn_one(float(profile[i % DAY]), ts=T0 + 300 * i)
    assert f.period == DAY
    assert "+snaive" in f.model_name
    yhat = np.array([p.yhat for p in f.forecast()])
    # yesterday's values, as kept in the float16 history (at most 2**-11 of the value off)
    np.testing.assert_allclose(yhat, profile[np.arange(n, n + 12) % DAY], rtol=2**-11, atol=0)


def test_the_seasonal_naive_reference_keeps_values_of_any_size():
    """Hourly steps from 1 to 1e9 (a network rate bursting from idle): the float16 history
    widens its scale as larger values come, and still gives yesterday's values back to within
    2**-11 of each."""
    rng = np.random.default_rng(5)
    profile = np.repeat(10.0 ** rng.uniform(0, 9, 24), DAY // 24)
    f = IntervalForecaster()
    n = 6 * DAY
    for i in range(n):
        f.learn_one(float(profile[i % DAY]), ts=T0 + 300 * i)
    assert "+snaive" in f.model_name
    yhat = np.array([p.yhat for p in f.forecast()])
    np.testing.assert_allclose(yhat, profile[np.arange(n, n + 12) % DAY], rtol=2**-11, atol=0)


def test_at_one_sample_a_minute_the_reference_is_yesterdays_five_minute_means():
    """A daily season at 60 s keeps 290 reference values, not 1,441: each the mean of 5
    minutes of yesterday. Where that reference beats the model (here a profile that jumps
    every 5 minutes), it is what is forecast; a state written when the history kept every
    sample of the day loads with the same means."""
    day = 1440
    rng = np.random.default_rng(3)
    profile = np.repeat(10.0 ** rng.uniform(0, 3, day // 5), 5)
    n = 3 * day
    values = profile[np.arange(n) % day] * (1 + 0.01 * rng.standard_normal(n))
    f = IntervalForecaster(accuracy_window=60)
    for i in range(n):
        f.learn_one(float(values[i]), ts=T0 + 60 * i)
    assert f.period == day and f._history_block == 5
    assert f._history.size == 13 + 290
    assert "+snaive" in f.model_name
    yesterday = values[n - day : n].reshape(-1, 5).mean(axis=1)
    yhat = np.array([p.yhat for p in f.forecast()])
    np.testing.assert_allclose(yhat, yesterday[np.arange(12) // 5], rtol=2**-10, atol=0)
    np.testing.assert_allclose(f._seasonal_past(np.arange(n - day, n, 5)), yesterday, rtol=2**-11)
    old = IntervalForecaster.load(_one_ring_state(f, values, np.float16), accuracy_window=60)
    assert old._history.size == f._history.size and old._history_block == 5
    np.testing.assert_allclose(old._seasonal_past(np.arange(n - day, n, 5)), yesterday, rtol=2**-10)


def _one_ring_state(f: IntervalForecaster, values: np.ndarray, dtype: type) -> bytes:
    """`f`'s state as written before the history had blocks: one ring of the last
    max(lag, horizon) + 1 samples, sample i at i % size (float16 codes with an exponent, or
    float32 values before that)."""
    from models import array_state, half_history

    scalars, arrays = array_state.unpack(f.dump())
    size = max(f.period or 0, f.horizon) + 1
    ring = np.zeros(size)
    for i in range(f.n - size, f.n):
        ring[i % size] = values[i]
    for key in ("history_block", "history_sum"):
        del scalars[key]
    scalars["history_size"] = size
    if dtype is np.float16:
        arrays["history"] = half_history.encode(ring, f._history_exp)
    else:
        del scalars["history_exp"]
        arrays["history"] = ring.astype(np.float32)
    return array_state.pack(scalars, arrays)


@pytest.mark.parametrize("dtype", [np.float16, np.float32])
def test_a_state_with_a_one_ring_history_loads_and_forecasts_on_the_same(dtype):
    """Checkpoints written when the history was one ring of every sample of the period
    (float16, and float32 before that) keep their naive and seasonal-naive values: at
    5-minute samples the reference has one value per sample, so the loaded forecaster goes on
    as the original does."""
    rng = np.random.default_rng(8)
    values = daily(np.arange(3 * DAY)) * 1e5 + rng.normal(0, 10, 3 * DAY)
    f = IntervalForecaster(accuracy_window=60)
    for i in range(2 * DAY + 5):
        f.learn_one(float(values[i]), ts=T0 + 300 * i)
    assert f.period == DAY and f._history_block == 1
    old = IntervalForecaster.load(_one_ring_state(f, values, dtype), accuracy_window=60)
    assert old._history.dtype == np.float16
    np.testing.assert_allclose(
        old._seasonal_past(np.arange(f.n - DAY, f.n)), values[f.n - DAY : f.n], rtol=2**-11
    )
    np.testing.assert_allclose(
        old._recent_past(np.arange(f.n - 13, f.n)), values[f.n - 13 : f.n], rtol=2**-11
    )
    for i in range(2 * DAY + 5, 2 * DAY + 40):
        f.learn_one(float(values[i]), ts=T0 + 300 * i)
        old.learn_one(float(values[i]), ts=T0 + 300 * i)
    got, want = old.forecast(), f.forecast()
    if dtype is np.float16:
        assert json.dumps(forecast_message("a", "m", old)) == json.dumps(
            forecast_message("a", "m", f)
        )
    for a, b in zip(got, want, strict=True):
        assert a.yhat == pytest.approx(b.yhat, rel=1e-3)


def test_follows_a_linear_trend():
    f = IntervalForecaster(horizon=4, season_length=0, alpha=0.5, beta=0.1, phi=1.0)
    for i in range(400):
        f.learn_one(10.0 + 0.5 * i)
    yhat = [p.yhat for p in f.forecast()]
    assert yhat == pytest.approx([10.0 + 0.5 * (399 + h) for h in range(1, 5)], rel=1e-3)


@pytest.mark.parametrize("seed", [0, 1])
def test_intervals_reach_nominal_coverage_on_stationary_noise(seed):
    rng = np.random.default_rng(seed)
    y = 20.0 + rng.normal(0.0, 3.0, 3000)
    f = IntervalForecaster(horizon=6, levels=(0.8, 0.95), season_length=0)
    hits = {0.8: 0, 0.95: 0}
    total = 0
    for i, v in enumerate(y):
        f.learn_one(float(v))
        if i < 200 or i + 6 >= y.size:
            continue
        for p in f.forecast():
            truth = y[i + p.step]
            total += 1
            for lvl in hits:
                hits[lvl] += p.lower[lvl] <= truth <= p.upper[lvl]
    assert abs(hits[0.8] / total - 0.8) < 0.03
    assert abs(hits[0.95] / total - 0.95) < 0.02
    online = f.accuracy()["coverage"]
    assert abs(online["80"] - 0.8) < 0.06
    assert abs(online["95"] - 0.95) < 0.04


def test_bands_are_nested_and_widen_with_the_level():
    rng = np.random.default_rng(3)
    f = IntervalForecaster(horizon=3, season_length=0)
    for v in rng.normal(0, 1, 500):
        f.learn_one(float(v))
    for p in f.forecast():
        assert p.lower[0.95] < p.lower[0.8] < p.yhat < p.upper[0.8] < p.upper[0.95]


def test_asymmetric_bands_follow_skewed_errors():
    rng = np.random.default_rng(4)
    f = IntervalForecaster(horizon=1, season_length=0, symmetric=False, alpha=0.05, beta=0.0)
    for v in rng.exponential(1.0, 3000):  # right-skewed noise
        f.learn_one(float(v))
    p = f.forecast()[0]
    assert p.upper[0.95] - p.yhat > 2 * (p.yhat - p.lower[0.95])


def test_seasonal_forecaster_beats_seasonal_naive_on_noisy_daily_series():
    rng = np.random.default_rng(5)
    f = IntervalForecaster()
    for i in range(6 * DAY):
        f.learn_one(float(daily(i) + rng.normal(0, 2.0)), ts=T0 + 300 * i)
    acc = f.accuracy()
    assert f.period == DAY
    assert acc["mase"] < 0.9
    assert set(acc) >= {"n", "mae", "smape", "mase", "mase_naive", "coverage"}


def test_detects_daily_period_and_none_on_white_noise():
    rng = np.random.default_rng(6)
    seasonal = daily(np.arange(3 * DAY)) + rng.normal(0, 3.0, 3 * DAY)
    assert detect_period(seasonal, [DAY, 7 * DAY]) == DAY
    assert autocorrelation(seasonal, DAY) > 0.5
    for seed in range(5):
        noise = np.random.default_rng(100 + seed).normal(0, 1, 3 * DAY)
        assert detect_period(noise, [DAY]) is None


def test_online_detector_finds_period_and_forecaster_stays_nonseasonal_on_noise():
    rng = np.random.default_rng(7)
    detector = SeasonalityDetector([DAY])
    for i in range(3 * DAY):
        detector.learn_one(float(daily(i) + rng.normal(0, 2.0)))
    assert detector.period == DAY

    f = IntervalForecaster()
    for i, v in enumerate(rng.normal(50, 5, 4 * DAY)):
        f.learn_one(float(v), ts=T0 + 300 * i)
    assert f.period is None
    assert f.model_name == "ets-damped-nonseasonal+conformal"


def test_the_detector_keeps_block_means_of_any_size_in_two_bytes():
    """A network rate of 2e9 with a daily rhythm of 1 % and noise: the float16 block means
    widen their scale as the rate grows from idle, and the period and profile come out as
    from exact means (to 2**-11 of the values)."""
    rng = np.random.default_rng(11)
    n = 3 * DAY
    values = np.concatenate(
        (np.full(DAY // 2, 10.0), 2e9 * (1 + 0.01 * np.sin(2 * np.pi * np.arange(n) / DAY)))
    )
    values = values + rng.normal(0, 2e6, values.size)
    detector = SeasonalityDetector([DAY])
    for v in values:
        detector.learn_one(float(v))
    assert detector.period == DAY
    assert detector._buffer.dtype == np.float16 and detector.nbytes == 2 * detector.capacity
    kept = min(detector._blocks, detector.capacity) * detector.block
    exact = values[values.size - kept :].reshape(-1, detector.block).mean(axis=1)
    np.testing.assert_allclose(detector._ordered(), exact, rtol=2**-11)


def test_a_state_with_float32_detector_means_loads_with_the_same_detection():
    """Checkpoints written when the detector kept float32 block means load coded, and the
    loaded forecaster finds the same period and forecasts within the coding of the means."""
    from models import array_state

    rng = np.random.default_rng(12)
    values = daily(np.arange(3 * DAY)) * 1e5 + rng.normal(0, 1e4, 3 * DAY)
    f = IntervalForecaster()
    for i in range(2 * DAY):
        f.learn_one(float(values[i]), ts=T0 + 300 * i)
    scalars, arrays = array_state.unpack(f.dump())
    del scalars["detector"]["exp"]
    arrays["detector_buffer"] = f._detector._ordered()[: f._detector._blocks].astype(np.float32)
    old = IntervalForecaster.load(array_state.pack(scalars, arrays))
    np.testing.assert_allclose(old._detector._ordered(), f._detector._ordered(), rtol=2**-11)
    for i in range(2 * DAY, 3 * DAY):
        f.learn_one(float(values[i]), ts=T0 + 300 * i)
        old.learn_one(float(values[i]), ts=T0 + 300 * i)
    assert old.period == f.period == DAY
    for a, b in zip(old.forecast(), f.forecast(), strict=True):
        assert a.yhat == pytest.approx(b.yhat, rel=1e-3)


def test_period_follows_the_sampling_interval():
    # One-minute samples: a daily cycle is 1440 samples; the detector must look there.
    f = IntervalForecaster()
    for i in range(3 * 1440 + 10):
        f.learn_one(50 + 10 * math.sin(2 * math.pi * i / 1440), ts=T0 + 60 * i)
    assert f.interval_seconds == 60
    assert f.period == 1440


def test_gaps_in_timestamps_keep_the_seasonal_phase():
    f = IntervalForecaster()
    kept = [i for i in range(5 * DAY) if i % 37 and not (3 * DAY < i < 3 * DAY + 20)]
    for i in kept:
        f.learn_one(float(daily(i)), ts=T0 + 300 * i)
    f.learn_one(1e9, ts=T0 + 300 * kept[-1])  # duplicate timestamp: ignored
    assert f.period == DAY and f.n == kept[-1] - kept[0] + 1  # gaps filled
    last = kept[-1]
    truth = daily(np.arange(last + 1, last + 13))
    assert np.abs(np.array([p.yhat for p in f.forecast()]) - truth).max() < 0.25
    assert f.forecast()[0].ts == T0 + 300 * (last + 1)


def test_state_is_bounded():
    f = IntervalForecaster()
    for i in range(3 * DAY):
        f.learn_one(float(daily(i)), ts=T0 + 300 * i)
    size = f.nbytes
    for i in range(3 * DAY, 5 * DAY):
        f.learn_one(float(daily(i)), ts=T0 + 300 * i)
    assert f.nbytes == size
    assert size < 16_000


def test_a_period_longer_than_the_cap_is_not_tracked_so_fine_intervals_stay_small():
    # A day at 2 s is 43,200 samples: tracking it would cost two arrays of that length.
    fine = IntervalForecaster()
    minute = IntervalForecaster()
    for i in range(200):
        fine.learn_one(50.0 + math.sin(i / 5.0), ts=T0 + 2.0 * i)
        minute.learn_one(50.0 + math.sin(i / 5.0), ts=T0 + 60.0 * i)
    assert fine.season_length == 0 and fine.nbytes < 16_000
    assert minute._detector is not None and minute._detector.candidate_lags == (1440,)
    wider = IntervalForecaster(max_period_samples=50_000)
    for i in range(10):
        wider.learn_one(50.0, ts=T0 + 2.0 * i)
    assert wider._detector is not None and wider._detector.candidate_lags == (43_200,)


def test_forecast_message_shape_and_timestamps():
    rng = np.random.default_rng(8)
    f = IntervalForecaster(horizon=4)
    for i in range(100):
        f.learn_one(float(1e6 + rng.normal(0, 1e4)), ts=T0 + 300 * i)
    msg = forecast_message("vm-1", "net_in_bps", f, issued_at=T0 + 300 * 99)
    json.dumps(msg)  # JSON-ready
    assert msg["vm_id"] == "vm-1" and msg["metric"] == "net_in_bps"
    assert msg["model"] == f.model_name
    assert msg["levels"] == ["80", "95"]
    assert [p["ts"] for p in msg["points"]] == [T0 + 300 * (99 + h) for h in range(1, 5)]
    for p in msg["points"]:
        assert p["lower_95"] <= p["lower_80"] <= p["yhat"] <= p["upper_80"] <= p["upper_95"]
    assert msg["accuracy"]["n"] == 99


def test_forecast_before_any_data_is_empty_and_nan_is_ignored():
    f = IntervalForecaster()
    assert f.forecast() == []
    f.learn_one(float("nan"))
    assert f.n == 0


def test_accuracy_figures_are_rolling_means_over_the_steps_each_truth_scores():
    """mae, sMAPE and the naive reference's MAE: for each new truth, the mean over the steps
    it scores (1..min(n, horizon)) of the forecasts issued for it, exponentially weighted
    over truths (a running mean for the first `accuracy_window`). Computed here from the
    forecasts as issued; the forecaster scores float16 codes of them (2**-11 of each)."""
    rng = np.random.default_rng(21)
    values = 10.0 + np.sin(np.arange(400) / 7.0) + rng.normal(0, 0.3, 400)
    horizon, window = 4, 50
    f = IntervalForecaster(horizon=horizon, season_length=0, accuracy_window=window)
    issued: list[np.ndarray] = []  # forecasts made after sample i, steps 1..horizon
    mae = smape = naive = 0.0
    for i, y in enumerate(values):
        if i:
            steps = np.arange(1, min(i, horizon) + 1)
            forecasts = np.array([issued[i - s][s - 1] for s in steps])
            err = np.abs(y - forecasts)
            rate = max(1.0 / i, 1.0 / window)
            mae += rate * (err.mean() - mae)
            smape += rate * ((200 * err / (abs(y) + np.abs(forecasts))).mean() - smape)
            naive += rate * (np.abs(y - values[i - steps]).mean() - naive)
        f.learn_one(float(y))
        issued.append(np.array([p.yhat for p in f.forecast()]))
        if i in (3, 8, values.size - 1):  # young (truths scoring fewer steps), and later
            got = f.accuracy()
            assert got["n"] == i
            assert got["mae"] == pytest.approx(mae, rel=2e-3)
            assert got["smape"] == pytest.approx(smape, rel=2e-3)
            assert got["mase_naive"] == pytest.approx(mae / naive, rel=2e-3)


def test_a_state_with_figures_per_step_loads_with_the_figures_it_published():
    """States written when all five statistics and the coverage were kept per step load with
    their step means: the forecaster publishes the figures it did before."""
    from models import array_state

    rng = np.random.default_rng(22)
    f = IntervalForecaster()
    for i in range(DAY):
        f.learn_one(float(daily(i) + rng.normal(0, 1)), ts=T0 + 300 * i)
    scalars, arrays = array_state.unpack(f.dump())
    h, levels = f.horizon, len(f.levels)
    old_table = rng.uniform(0.5, 2.0, (5, h)).astype(np.float32)
    old_coverage = rng.uniform(0.6, 1.0, (h, levels)).astype(np.float32)
    arrays["acc_table"], arrays["coverage"] = old_table, old_coverage
    arrays["cov_count"] = np.full(h, scalars.pop("cov_count"), dtype=np.int32)
    del arrays["acc_means"]
    old = IntervalForecaster.load(array_state.pack(scalars, arrays)).accuracy()
    mae, smape, snaive, naive = old_table[:4].astype(np.float64).mean(axis=1)
    assert old["mae"] == pytest.approx(mae, rel=1e-6)
    assert old["smape"] == pytest.approx(smape, rel=1e-6)
    assert old["mase"] == pytest.approx(mae / snaive, rel=1e-6)
    assert old["mase_naive"] == pytest.approx(mae / naive, rel=1e-6)
    shares = old_coverage.astype(np.float64).mean(axis=0)
    assert list(old["coverage"].values()) == pytest.approx(shares.tolist(), rel=1e-6)


def test_deterministic():
    def run():
        rng = np.random.default_rng(9)
        f = IntervalForecaster()
        for i in range(2 * DAY):
            f.learn_one(float(daily(i) + rng.normal(0, 1)), ts=T0 + 300 * i)
        return forecast_message("vm", "cpu_pct", f)

    assert run() == run()


def test_level_keys():
    assert level_key(0.8) == "80" and level_key(0.975) == "97.5"


def _misses(bands: ConformalBands, errors: np.ndarray) -> float:
    """Share of `errors` (one step) outside the bands as they stood before each."""
    missed = 0
    for e in errors:
        covered = bands.update_many(np.array([e]))
        missed += covered is not None and not covered[0, 0]
    return missed / errors.size


@pytest.mark.parametrize("symmetric", [True, False])
def test_tracked_bands_reach_the_nominal_miss_rate_on_heavy_tailed_errors(symmetric):
    """Student-t errors with 2 degrees of freedom: the normal start is far too narrow; the
    tracked band still misses 10 % of the errors over the run, and hovers around the true
    quantile (each side around its own 95 % quantile when asymmetric)."""
    rng = np.random.default_rng(11)
    bands = ConformalBands(horizon=1, levels=(0.9,), symmetric=symmetric)
    errors = rng.standard_t(2, 20_000)
    assert abs(_misses(bands, errors[:10_000]) - 0.1) < 0.01
    widths = []
    for e in errors[10_000:]:
        bands.update_many(np.array([e]))
        widths.append(bands.half_widths(1)[0])
    true_q = np.quantile(np.abs(errors), 0.9)  # ~2.92 for t(2)
    assert np.median(widths, axis=0) == pytest.approx([true_q, true_q], rel=0.1)


def test_tracked_bands_stay_nested_whatever_the_errors():
    """Each level is tracked on its own; a run of misses between two levels' bands must still
    leave the wider level's band around the narrower one's."""
    bands = ConformalBands(horizon=3, levels=(0.5, 0.8, 0.95), symmetric=False)
    rng = np.random.default_rng(13)
    errors = np.concatenate(
        (rng.normal(0, 1, (300, 3)), np.full((200, 3), 2.2), rng.standard_t(1, (500, 3)))
    )
    for e in errors:
        bands.update_many(e)
        widths = bands.widths[bands.ready_steps()]
        assert (np.diff(widths, axis=1) >= 0).all()


def test_tracked_bands_widen_after_a_shift_and_shrink_back():
    bands = ConformalBands(horizon=1, levels=(0.9,))
    rng = np.random.default_rng(10)
    _misses(bands, rng.normal(0, 1, 300))
    narrow = bands.half_widths(1)[0][1]
    assert narrow == pytest.approx(1.645, rel=0.3)
    _misses(bands, rng.normal(0, 5, 300))
    assert bands.half_widths(1)[0][1] > 3 * narrow
    _misses(bands, rng.normal(0, 1, 600))
    assert bands.half_widths(1)[0][1] < 1.5 * narrow


def test_a_band_that_shrank_on_a_flat_stretch_grows_again():
    bands = ConformalBands(horizon=1, levels=(0.8,))
    rng = np.random.default_rng(12)
    _misses(bands, rng.normal(0, 1, 200))
    _misses(bands, np.zeros(2000))  # a flat stretch: the band decays towards zero
    assert bands.half_widths(1)[0][1] < 0.05
    assert _misses(bands, rng.normal(0, 1, 400)) < 0.3
    assert bands.half_widths(1)[0][1] == pytest.approx(1.28, rel=0.3)


def test_no_band_before_warmup_then_the_normal_one_for_the_errors_seen():
    bands = ConformalBands(horizon=2, levels=(0.8,), warmup=10)
    errors = np.linspace(-2.0, 2.0, 10)
    for i, e in enumerate(errors):
        assert bands.update_many(np.array([e, e])) is None  # no band to score yet
        assert bands.ready_steps().tolist() == [i == 9, i == 9]
    mae = np.abs(errors).mean()
    assert bands.half_widths(1)[0][1] == pytest.approx(1.2816 * math.sqrt(math.pi / 2) * mae, 1e-3)
    assert bands.update_many(np.array([0.0])).tolist() == [[1.0]]


def test_a_state_of_the_windowed_bands_version_loads_with_its_bands_and_season():
    """A checkpoint written by the previous version (bands from windows of past errors, one
    seasonal value per phase: `data/forecaster_state_f1b19bb.*` says how it was made) loads
    into the current forecaster: same bands and accuracy figures (to float32, as they are
    kept now), nearly the same point forecasts (its season becomes the closest curve), and it
    learns on."""
    data = Path(__file__).parent / "data"
    state = (data / "forecaster_state_f1b19bb.bin").read_bytes()
    old = json.loads((data / "forecaster_state_f1b19bb.json").read_text())
    f = IntervalForecaster.load(state)
    assert (f.n, f.period) == (914, DAY)
    new = forecast_message("vm", "cpu_pct", f)
    got, want = new["accuracy"], old["message"]["accuracy"]
    assert got.keys() == want.keys() and got["n"] == want["n"]
    assert got["coverage"] == pytest.approx(want["coverage"], rel=1e-6)
    for name in ("mae", "smape", "mase", "mase_naive"):
        assert got[name] == pytest.approx(want[name], rel=1e-6)
    truth = np.array(old["next_values"])
    for before, after in zip(old["message"]["points"], new["points"], strict=True):
        for key in ("80", "95"):
            assert after[f"upper_{key}"] - after["yhat"] == pytest.approx(
                before[f"upper_{key}"] - before["yhat"], rel=1e-6
            )
        assert abs(after["yhat"] - before["yhat"]) < 0.2 * (before["upper_80"] - before["yhat"])
    old_error = np.abs([p["yhat"] for p in old["message"]["points"]] - truth).mean()
    new_error = np.abs([p["yhat"] for p in new["points"]] - truth).mean()
    assert new_error < 1.1 * old_error
    bank = ForecasterBank(capacity=1)
    row = bank.load_row(state)
    assert bank.messages([row], ["vm"], ["cpu_pct"], [None]) == [new]
    rng = np.random.default_rng(1)
    for i in range(914, 914 + 300):
        f.learn_one(float(daily(i) + rng.normal(0, 1.5)), ts=T0 + 300 * i)
    assert 0.7 < f.accuracy()["coverage"]["80"] < 0.9


@pytest.mark.parametrize("broken", ["widths", "error_count", "errors"])
def test_a_damaged_state_of_the_windowed_bands_version_is_refused(broken):
    """A malformed old checkpoint is a ValueError (the worker counts it and starts the VM
    afresh), never another exception."""
    from models import array_state

    data = (Path(__file__).parent / "data" / "forecaster_state_f1b19bb.bin").read_bytes()
    scalars, arrays = array_state.unpack(data)
    arrays[broken] = arrays[broken][:5]
    with pytest.raises(ValueError):
        IntervalForecaster.load(array_state.pack(scalars, arrays))
