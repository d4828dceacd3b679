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
    code = encode(value, exponent)
    if np.isinf(code):
        exponent = refit(ring, exponent, value)
        code = encode(value, exponent)
    return code, exponent


def refit(codes: np.ndarray, exponent: int, value: float) -> int:
    """Re-code `codes` in place for an exponent fitted to their largest magnitude and to
    `value`'s (about to be written); returns that exponent."""
    values = decode(codes, exponent)
    largest = max(float(np.max(np.abs(values), initial=0.0)), abs(value))
    fitted = exponent_for(largest)
    if fitted != exponent:
        codes[...] = encode(values, fitted)
    return fitted
