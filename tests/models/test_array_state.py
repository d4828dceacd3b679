"""The model-state byte format: what goes in comes out, and anything else is a ValueError."""

from __future__ import annotations

import numpy as np
import pytest

from models import array_state


def test_scalars_and_arrays_come_back_as_they_went_in() -> None:
    arrays = {
        "ring": np.arange(12, dtype=np.float32).reshape(3, 4),
        "counts": np.array([1, 2, 3], dtype=np.int64),
        "empty": np.zeros((2, 0)),
        "flags": np.array([True, False]),
        "strided": np.arange(10.0)[::3],
    }
    scalars = {"n": 3, "ts": 1.5, "none": None, "nested": {"lags": [1, 2]}}
    got_scalars, got = array_state.unpack(array_state.pack(scalars, arrays))
    assert got_scalars == scalars
    assert list(got) == list(arrays)
    for name, array in arrays.items():
        assert got[name].dtype == array.dtype and np.array_equal(got[name], array)
        assert got[name].flags.writeable


@pytest.mark.parametrize(
    "data",
    [b"", b"\x01", b"\x09\x00\x00\x00\x00", b"\x01\x05\x00\x00\x00{not", b"\x01\xff\xff\xff\x7f"],
)
def test_anything_else_is_a_value_error(data: bytes) -> None:
    with pytest.raises(ValueError):
        array_state.unpack(data)


def test_a_truncated_state_and_object_arrays_are_refused() -> None:
    data = array_state.pack({}, {"x": np.ones(100)})
    with pytest.raises(ValueError, match="truncated"):
        array_state.unpack(data[:-1])
    header = b'{"scalars":{},"arrays":[["x","|O",[1]]]}'
    forged = b"\x01" + len(header).to_bytes(4, "little") + header + b"\x00" * 8
    with pytest.raises(ValueError, match="object"):
        array_state.unpack(forged)
