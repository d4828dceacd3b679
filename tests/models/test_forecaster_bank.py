"""The forecaster bank forecasts exactly as one `IntervalForecaster` per series would."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest

from models import array_state, half_history
from models.forecaster_bank import ForecasterBank
from models.forecasting import IntervalForecaster, forecast_message

T0 = 1.7e9
STEP = 60.0

SETTINGS = (
    # detected periods (two candidates), a seasonal curve of fewer knots than samples; short
    # accuracy window, so seasonal-naive takes over; its reference as means of 6 samples
    {
        "candidate_periods": (48 * STEP, 24 * STEP),
        "accuracy_window": 30,
        "season_knots": 16,
        "seasonal_slots": 8,
    },
    # other horizon, levels and band settings
    {
        "candidate_periods": (48 * STEP,),
        "horizon": 6,
        "levels": (0.5, 0.9, 0.99),
        "band_rate": 0.3,
        "band_window": 20,
    },
    # a given period, through a curve of 8 knots, its reference as means of 4 samples
    {
        "season_length": 24,
        "candidate_periods": (48 * STEP,),
        "season_knots": 8,
        "seasonal_slots": 6,
    },
    {"season_length": 0, "symmetric": False},  # no season, asymmetric bands
    # a detector of blocks of two samples
    {"candidate_periods": (96 * STEP,), "seasonal_slots": 12},
    # a reference of one mean per period: forecasts read the block still being filled
    {"season_length": 8, "horizon": 6, "seasonal_slots": 1, "accuracy_window": 30},
)


def _value(kind: int, t: float, rng: np.random.Generator) -> float:
    x = t / STEP
    if rng.random() < 0.005:
        return math.nan  # ignored by the forecaster
    if kind == 0:
        return 50 + 10 * math.sin(2 * math.pi * x / 48) + rng.normal()
    if kind == 1:
        return 1e6 * (1 + 0.3 * math.sin(2 * math.pi * x / 24)) + 1e4 * rng.normal()
    if kind == 2:
        return 20 + 0.01 * x + 2 * rng.normal()
    if kind == 3:
        return float(rng.exponential(5.0))
    # growing from 1 past 1e6 within the test: float16 scales must widen as it goes
    return 1.05 ** (x % 360) * (1 + 0.05 * rng.normal())


def _same(a: dict, b: dict) -> bool:
    return json.dumps(a) == json.dumps(b)


@pytest.mark.parametrize("settings", SETTINGS)
def test_the_bank_matches_one_forecaster_per_series_bit_for_bit(settings):
    """Series of several shapes, learnt in varying subsets per call, with gaps, repeated
    timestamps and missing values; a series forgotten half-way and its row reused. Every
    message and state, young and old, must be identical to an independent forecaster's."""
    rng = np.random.default_rng(len(json.dumps(settings)))
    series = 24
    bank = ForecasterBank(capacity=2, **settings)  # grows on the way
    rows = [bank.add() for _ in range(series)]
    reference = [IntervalForecaster(**settings) for _ in range(series)]
    ts = np.full(series, T0)
    kinds = rng.integers(0, 5, series)
    checked = switched = 0
    for t in range(360):
        if t == 180:  # forget series 0: its row starts over for a new series
            bank.remove(rows[0])
            rows[0] = bank.add()
            reference[0] = IntervalForecaster(**settings)
        active = np.flatnonzero(rng.random(series) < 0.8)
        ys, times = [], []
        for i in active.tolist():
            draw = rng.random()
            ts[i] += STEP * (rng.integers(2, 5) if draw < 0.03 else (0 if draw < 0.04 else 1))
            ys.append(_value(int(kinds[i]), ts[i], rng))
            times.append(float(ts[i]))
            reference[i].learn_one(ys[-1], times[-1])
        bank.learn([rows[i] for i in active.tolist()], ys, times)
        live = [i for i in range(series) if reference[i].n]
        if t % 4 and t < 350 or not live:
            continue
        expected = [forecast_message(f"vm-{i}", "cpu_pct", reference[i]) for i in live]
        got = bank.messages(
            [rows[i] for i in live],
            [f"vm-{i}" for i in live],
            ["cpu_pct"] * len(live),
            [None] * len(live),
        )
        for i, want, have in zip(live, expected, got, strict=True):
            assert _same(want, have), (t, i, want, have)
            # the whole state too: what no message shows yet (the detector's block means)
            assert bank.dump_row(rows[i]) == reference[i].dump(), (t, i)
            checked += 1
            switched += "+snaive" in have["model"]
        assert [bank.period(rows[i]) for i in live] == [reference[i].period for i in live]
    assert checked > 1500
    if settings.get("accuracy_window") == 30:
        assert switched, "the seasonal-naive switch was exercised"


def test_a_checked_out_row_is_a_forecaster_in_the_same_state():
    bank = ForecasterBank()
    row = bank.add()
    reference = IntervalForecaster()
    for k in range(50):
        y = 10 + math.sin(k / 3)
        bank.learn([row], [y], [T0 + STEP * k])
        reference.learn_one(y, T0 + STEP * k)
    copy = bank.checkout(row)
    assert _same(forecast_message("a", "m", copy), forecast_message("a", "m", reference))
    assert bank.nbytes > 0


@pytest.mark.parametrize("settings", SETTINGS)
def test_dumped_state_forecasts_and_learns_on_exactly_as_the_original(settings):
    """Rows dumped at every age (young, detector running, period found) and loaded into a new
    bank and into a lone forecaster go on exactly as the original rows do."""
    rng = np.random.default_rng(7)
    series = 8
    bank = ForecasterBank(capacity=2, **settings)
    rows = [bank.add() for _ in range(series)]
    kinds = [i % 4 for i in range(series)]
    clock = 0

    def tick(active: list[int]) -> tuple[list[float], list[float]]:
        nonlocal clock
        clock += 1
        ts = T0 + STEP * clock
        return [_value(kinds[i], ts, rng) for i in active], [ts] * len(active)

    for t in range(300):
        active = [i for i in range(series) if t >= 20 * i]  # rows of different ages
        ys, stamps = tick(active)
        bank.learn([rows[i] for i in active], ys, stamps)
        if t not in (40, 120, 299):
            continue
        other = ForecasterBank(capacity=1, **settings)
        moved = [other.load_row(bank.dump_row(rows[i])) for i in active]
        lone = [IntervalForecaster.load(bank.dump_row(rows[i]), **settings) for i in active]
        for _ in range(30):
            ys, stamps = tick(active)
            bank.learn([rows[i] for i in active], ys, stamps)
            other.learn(moved, ys, stamps)
            for f, y, ts in zip(lone, ys, stamps, strict=True):
                f.learn_one(y, ts)
        names, metrics, issued = (
            [f"vm-{i}" for i in active],
            ["m"] * len(active),
            [None] * len(active),
        )
        expected = bank.messages([rows[i] for i in active], names, metrics, issued)
        assert _same(other.messages(moved, names, metrics, issued), expected)
        lone_messages = [forecast_message(n, "m", f) for n, f in zip(names, lone, strict=True)]
        assert _same(lone_messages, expected)
    if settings.get("season_length") != 0:
        assert any(bank.period(r) for r in rows), "some row should have found its period"


def test_a_state_that_does_not_fit_is_refused():
    bank = ForecasterBank(capacity=1, horizon=6)
    row = bank.add()
    bank.learn([row], [1.0], [T0])
    state = bank.dump_row(row)
    with pytest.raises(ValueError, match="does not fit"):
        ForecasterBank(capacity=1, horizon=12).load_row(state)
    with pytest.raises(ValueError, match="truncated"):
        ForecasterBank(capacity=1, horizon=6).load_row(state[:-5])
    with pytest.raises(ValueError):
        IntervalForecaster.load(b"\x00" * 40)
    scalars, arrays = array_state.unpack(state)
    del scalars["level"]
    with pytest.raises(ValueError, match="not a forecaster state"):
        IntervalForecaster.load(array_state.pack(scalars, arrays), horizon=6)


def test_a_state_with_pending_forecasts_as_a_table_loads_and_goes_on_the_same():
    """States written before the pending forecasts became triangles kept them in a table of
    origins (ring rows) by steps: a forecast for sample origin + s, issued after sample
    `origin`, at [origin % horizon, s - 1]. Such a state scores the truths that follow against
    the same forecasts, so it learns and forecasts on exactly as the state it was made from."""
    rng = np.random.default_rng(4)
    bank = ForecasterBank(capacity=1)
    row = bank.add()
    clock = 0
    for _ in range(100):
        clock += 1
        bank.learn([row], [_value(0, T0 + STEP * clock, rng)], [T0 + STEP * clock])
    state = bank.dump_row(row)
    scalars, arrays = array_state.unpack(state)
    n, h = int(scalars["n"]), bank.horizon
    exponent = scalars.pop("pending_exp")  # those states kept the forecasts as float32
    for name in ("pending", "pending_model"):
        triangle = half_history.decode(arrays[name], exponent).astype(np.float32)
        assert triangle.shape == (h * (h + 1) // 2,)
        table = np.full((h, h), np.nan, dtype=np.float32)  # cells no truth will read stay NaN
        start = 0
        for s in range(1, h + 1):
            for origin in range(n - s, n):
                table[origin % h, s - 1] = triangle[start + origin % s]
            start += s
        arrays[name] = table
    old = IntervalForecaster.load(array_state.pack(scalars, arrays))
    new = IntervalForecaster.load(state)
    for _ in range(2 * h):
        clock += 1
        y = _value(0, T0 + STEP * clock, rng)
        old.learn_one(y, T0 + STEP * clock)
        new.learn_one(y, T0 + STEP * clock)
    assert _same(forecast_message("vm", "m", old), forecast_message("vm", "m", new))
    assert math.isfinite(forecast_message("vm", "m", old)["accuracy"]["mae"])


def test_a_state_with_a_damaged_history_is_refused():
    bank = ForecasterBank(capacity=1)
    row = bank.add()
    bank.learn([row], [1.0], [T0])
    scalars, arrays = array_state.unpack(bank.dump_row(row))
    for key, value in (("history_block", 0), ("history_size", 3)):
        broken = dict(scalars, **{key: value})
        with pytest.raises(ValueError, match="does not fit"):
            IntervalForecaster.load(array_state.pack(broken, arrays))
