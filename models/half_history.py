"""A series' past values as float16 codes sharing one power-of-two scale.

A forecaster keeps its last samples, and a period of its series for the seasonal-naive
reference: up to 303 values per series with the default settings, the largest array of a
watched VM's forecasting. Stored as float16 divided by 2**exponent, a value costs two bytes
instead of four, and multiplying back by 2**exponent is exact, so the only change is the
float16 rounding: at most 2**-11 (0.05 %) of the value, down to 2**(exponent - 14); below
that, at most 2**(exponent - 25) in absolute terms. The exponent starts at 0 and grows only
when a value would overflow (above 65,504 * 2**exponent), to put the largest value kept just
under float16's top.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np

_TOP = 15  # the largest magnitude is coded in [2**14, 2**15); float16 overflows above 65504


def exponent_for(magnitude: float) -> int:
    """The exponent that codes `magnitude` as the series' largest value (0 for none)."""
    if not magnitude > 0.0 or not math.isfinite(magnitude):
        return 0
    return math.frexp(magnitude)[1] - _TOP


def encode(values: float | np.ndarray, exponent: int | np.ndarray) -> np.ndarray:
    """float16 codes of `values` under `exponent` (inf where a value is too large for it)."""
    with np.errstate(over="ignore"):
        return np.ldexp(np.asarray(values, dtype=np.float64), -np.asarray(exponent)).astype(
            np.float16
        )


def decode(codes: np.ndarray, exponent: int | np.ndarray) -> np.ndarray:
    """The values the codes stand for, as float64 (exact)."""
    return np.ldexp(codes.astype(np.float64), np.asarray(exponent))


def code_for(ring: np.ndarray, exponent: int, value: float) -> tuple[np.ndarray, int]:
    """`value`'s code in `ring`, and the ring's exponent after: widened, with the ring
    re-coded, when the value is too large for the one it has."""
    return codes_for((ring,), exponent, value)


def codes_for(
    rings: Sequence[np.ndarray], exponent: int, values: float | np.ndarray
) -> tuple[np.ndarray, int]:
    """Codes of `values` for `rings` that share `exponent`, and the exponent after: widened,
    with every ring re-coded, when a value is too large for the one they have."""
    codes = encode(values, exponent)
    if np.isinf(codes).any():
        exponent = refit(rings, exponent, values)
        codes = encode(values, exponent)
    return codes, exponent


def refit(rings: Sequence[np.ndarray], exponent: int, values: float | np.ndarray) -> int:
    """Re-code `rings` in place for an exponent fitted to their largest magnitude and to
    that of `values` (about to be written); returns that exponent."""
    decoded = [decode(ring, exponent) for ring in rings]
    largest = max(float(np.max(np.abs(v), initial=0.0)) for v in [np.asarray(values), *decoded])
    fitted = exponent_for(largest)
    if fitted != exponent:
        for ring, ring_values in zip(rings, decoded, strict=True):
            ring[...] = encode(ring_values, fitted)
    return fitted


def encode_fitted(values: np.ndarray) -> tuple[np.ndarray, int]:
    """Codes of values kept uncoded (as float32, in states written before), under the
    exponent a ring that started at 0 would have grown to for them."""
    exponent = max(0, exponent_for(float(np.max(np.abs(values), initial=0.0))))
    return encode(values, exponent), exponent
