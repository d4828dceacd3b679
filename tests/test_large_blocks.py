"""The worker maps large blocks for themselves (streams.cli.map_large_blocks)."""

from __future__ import annotations

import ctypes
import ctypes.util
import subprocess
import sys
from pathlib import Path

import pytest

from streams.cli import map_large_blocks

MB = 1 << 20
ROOT = Path(__file__).resolve().parents[1]


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


# Run in a process of its own: a block is taken from the heap, whatever the threshold, when
# a free chunk that large is already there, and what earlier tests freed decides that here.
_MAPPED_AFTER_RAISE = """
import sys
from tests.test_large_blocks import MB, _mapped_bytes
from streams.cli import map_large_blocks

big = bytearray(24 * MB)  # freeing a mapped 24 MB block raises glibc's own threshold
del big
assert map_large_blocks(MB)
before = _mapped_bytes()
block = bytearray(8 * MB)  # from the heap under glibc's raised threshold, kept resident
grew = _mapped_bytes() - before
del block
kept = _mapped_bytes() - before
print(grew, kept)
sys.exit(0 if grew >= 8 * MB and kept < MB else 1)
"""


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc's mallopt")
def test_a_block_above_the_threshold_is_mapped_even_after_glibc_raised_its_own() -> None:
    done = subprocess.run(
        [sys.executable, "-c", _MAPPED_AFTER_RAISE],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
    )
    # mapped bytes grew by the block, and went back down once it was freed
    assert done.returncode == 0, (done.stdout, done.stderr)


def test_no_threshold_leaves_glibc_alone() -> None:
    assert not map_large_blocks(0)
