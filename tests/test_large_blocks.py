"""The worker maps large blocks for themselves (streams.cli.map_large_blocks)."""

from __future__ import annotations

import ctypes
import ctypes.util
import sys

import pytest

from streams.cli import map_large_blocks

MB = 1 << 20


class _MallInfo2(ctypes.Structure):
    _fields_ = [
        (name, ctypes.c_size_t)
        for name in (
            "arena",
            "ordblks",
            "smblks",
            "hblks",
            "hblkhd",  # bytes in blocks mapped for themselves
            "usmblks",
            "fsmblks",
            "uordblks",
            "fordblks",
            "keepcost",
        )
    ]


def _mapped_bytes() -> int:
    libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
    libc.mallinfo2.restype = _MallInfo2
    return libc.mallinfo2().hblkhd


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc's mallopt")
def test_a_block_above_the_threshold_is_mapped_even_after_glibc_raised_its_own() -> None:
    big = bytearray(24 * MB)  # freeing a mapped 24 MB block raises glibc's own threshold
    del big
    assert map_large_blocks(MB)
    before = _mapped_bytes()
    block = bytearray(8 * MB)  # from the heap under glibc's raised threshold, kept resident
    assert _mapped_bytes() - before >= 8 * MB
    del block
    assert _mapped_bytes() - before < MB  # and handed back when freed


def test_no_threshold_leaves_glibc_alone() -> None:
    assert not map_large_blocks(0)
