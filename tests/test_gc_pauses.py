"""The worker's garbage-collector pauses reach Prometheus and /stats."""

from __future__ import annotations

import gc

from prometheus_client import REGISTRY

from streams.telemetry import GCPauses


def _count(generation: int) -> float:
    value = REGISTRY.get_sample_value(
        "novacron_gc_pause_seconds_count", {"generation": str(generation)}
    )
    return value or 0.0


def test_every_collection_is_timed_by_generation():
    pauses = GCPauses()
    pauses.install()
    pauses.install()  # once only
    try:
        assert gc.callbacks.count(pauses) == 1
        before = _count(2), _count(1)
        gc.collect()
        gc.collect(1)
        assert _count(2) == before[0] + 1 and _count(1) == before[1] + 1
        assert pauses.longest_s[2] > 0.0
        snapshot = pauses.snapshot()
        assert snapshot["longest_pause_s"][2] > 0.0
        assert snapshot["collections"][2] == gc.get_stats()[2]["collections"]
        assert snapshot["young_threshold"] == gc.get_threshold()[0]
    finally:
        gc.callbacks.remove(pauses)


def test_objects_frozen_at_start_are_counted():
    pauses = GCPauses()
    assert pauses.snapshot()["frozen_objects"] == 0
    try:
        pauses.freeze()
        assert pauses.snapshot()["frozen_objects"] == gc.get_freeze_count() > 0
    finally:
        gc.unfreeze()
