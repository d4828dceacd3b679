"""Alerts first, forecasts after: `assess_many`, then `plan_pending`.

A worker delivers a batch's alerts before it works out the forecasts and scaling actions of
the windows the batch closed. What it publishes must not change, only in which order.
"""

from __future__ import annotations

import json

from models.engine import AnomalyEngine, EngineConfig
from streams.capacity import CapacityConfig, CapacityPlanner
from streams.processor import MetricsProcessor, Source
from streams.simulator import Fleet
from streams.windows import TumblingWindows

START = 1_790_000_000.0
VMS = 40


def _processor() -> MetricsProcessor:
    return MetricsProcessor(
        engine=AnomalyEngine(EngineConfig(threshold_interval=0)),
        planner=CapacityPlanner(CapacityConfig(min_windows=3, act_after_windows=5)),
        forecast_windows=TumblingWindows(10.0),
    )


def _ticks(ticks: int = 200) -> list[list[bytes]]:
    """Per tick, one single-sample record per VM: every VM closes its window on the same tick."""
    fleet = Fleet(VMS, seed=4, day_seconds=600)
    fleet.inject(7, "cpu_spike", 120, 10)
    return [
        [json.dumps(value).encode() for _, value in records]
        for _, records in fleet.records(ticks, START, 1.0, batch=False)
    ]


def _batch(records: list[bytes], first: int, partitions: int = 1) -> list[tuple[bytes, Source]]:
    return [
        (raw, Source("vm.metrics", i % partitions, first + i, b"k"))
        for i, raw in enumerate(records)
    ]


def test_assessing_then_planning_publishes_what_processing_at_once_does() -> None:
    at_once, in_two = _processor(), _processor()
    expected, got = [], []
    offset = 0
    for records in _ticks():
        batch = _batch(records, offset)
        offset += len(records)
        expected += [(o.topic_id, o.value) for o in at_once.process_many(batch)]
        first = in_two.assess_many(batch)
        assert {o.topic_id for o in first} <= {"anomalies", "dlq"}
        then = in_two.plan_pending()
        assert {o.topic_id for o in then} <= {"forecasts", "actions"}
        got += [(o.topic_id, o.value) for o in first + then]
    assert {topic for topic, _ in expected} == {"anomalies", "forecasts", "actions"}
    assert got == expected


def test_windows_of_a_partition_lost_before_planning_are_not_planned() -> None:
    processor = _processor()
    ticks = _ticks(12)
    offset = 0
    for records in ticks[:10]:  # 0..9 s: the first windows are still open
        processor.process_many(_batch(records, offset, partitions=2))
        offset += len(records)
    processor.assess_many(_batch(ticks[10], offset, partitions=2))  # closes every VM's window
    lost = {vm for vm, p in processor._partition_of.items() if p == 1}
    assert len(lost) == VMS // 2
    processor.forget_partitions({1})
    processor.plan_pending()
    planner = processor.planner
    assert not any(planner.knows(vm) for vm in lost), "their new owner plans them"
    assert all(planner.knows(vm) for vm in processor._partition_of)
