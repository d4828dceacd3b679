"""float16 history codes: the precision they promise, and the scale that grows on overflow."""

from __future__ import annotations

import numpy as np
import pytest

from models import half_history

REL = 2.0**-11  # float16 keeps 11 significant bits: rounding is at most half a unit of the 11th


@pytest.mark.parametrize("largest", [3e-4, 1.0, 87.5, 65504.0, 2.5e6, 1e12])
def test_the_largest_value_is_coded_just_under_float16s_top(largest):
    exponent = half_history.exponent_for(largest)
    code = float(half_history.encode(largest, exponent))
    assert 2.0**14 <= code < 2.0**15


def test_values_come_back_within_the_promised_precision_across_the_range():
    rng = np.random.default_rng(3)
    for exponent in (-20, 0, 7, 25):
        values = np.ldexp(rng.uniform(1.0, 2.0, 5000), rng.integers(-14, 16, 5000) + exponent)
        back = half_history.decode(half_history.encode(values, exponent), exponent)
        assert np.all(np.abs(back - values) <= REL * np.abs(values))
        tiny = np.ldexp(rng.uniform(0.0, 1.0, 5000), exponent - 14)  # below the normal range
        back = half_history.decode(half_history.encode(tiny, exponent), exponent)
        assert np.all(np.abs(back - tiny) <= 2.0 ** (exponent - 25))


def test_decoding_is_exact_scaling_by_a_power_of_two():
    codes = np.array([1.5, -3.0e4, 6.1e-5, 0.0], dtype=np.float16)
    for exponent in (-30, 0, 30):
        assert half_history.decode(codes, exponent).tolist() == [
            float(c) * 2.0**exponent for c in codes
        ]


def test_a_value_too_large_for_the_scale_overflows_and_a_refit_makes_room():
    ring = half_history.encode(np.array([12.5, 0.0, 40000.0, -7.25]), 0)
    assert np.isinf(half_history.encode(1e9, 0))
    exponent = half_history.refit((ring,), 0, 1e9)
    assert exponent == half_history.exponent_for(1e9) > 0
    assert np.isfinite(half_history.encode(1e9, exponent))
    back = half_history.decode(ring, exponent)
    assert back[1] == 0.0
    assert back[2] == pytest.approx(40000.0, rel=REL)
    # the small values lost precision to the wider scale, within its absolute bound
    assert abs(back[0] - 12.5) <= 2.0 ** (exponent - 25)
    assert abs(back[3] + 7.25) <= 2.0 ** (exponent - 25)


def test_code_for_keeps_the_scale_when_the_value_fits_and_widens_it_when_not():
    ring = half_history.encode(np.array([3.0, -250.0]), 0)
    code, exponent = half_history.code_for(ring, 0, 1000.0)
    assert exponent == 0 and float(code) == 1000.0
    code, exponent = half_history.code_for(ring, 0, 3e8)
    assert exponent == half_history.exponent_for(3e8) > 0
    assert half_history.decode(code, exponent) == pytest.approx(3e8, rel=REL)
    assert half_history.decode(ring, exponent)[1] == pytest.approx(
        -250.0, abs=2.0 ** (exponent - 25)
    )


def test_rings_that_share_a_scale_are_recoded_together():
    issued = half_history.encode(np.array([10.0, -20.0]), 0)
    model = half_history.encode(np.array([30000.0]), 0)
    codes, exponent = half_history.codes_for((issued, model), 0, np.array([5.0, 2e6]))
    assert exponent == half_history.exponent_for(2e6) > 0
    assert half_history.decode(codes, exponent)[1] == pytest.approx(2e6, rel=REL)
    assert half_history.decode(model, exponent)[0] == pytest.approx(30000.0, rel=REL)
    assert half_history.decode(issued, exponent)[1] == pytest.approx(
        -20.0, abs=2.0 ** (exponent - 25)
    )
    codes, same = half_history.codes_for((issued, model), exponent, np.array([1e6]))
    assert same == exponent


def test_values_kept_uncoded_are_coded_at_the_scale_a_ring_grows_to():
    codes, exponent = half_history.encode_fitted(np.array([3.0, 90.0], dtype=np.float32))
    assert exponent == 0 and half_history.decode(codes, 0).tolist() == [3.0, 90.0]
    codes, exponent = half_history.encode_fitted(np.array([1.0, 7e8], dtype=np.float32))
    assert exponent == half_history.exponent_for(7e8)
    assert half_history.decode(codes, exponent)[1] == pytest.approx(7e8, rel=REL)
