"""Event-time tumbling windows: aggregates, closing by later samples, grace and late records."""

from __future__ import annotations

import json
import math
import time

import pytest

from models.engine import AnomalyEngine, Sample
from streams.capacity import CapacityConfig, CapacityPlanner
from streams.processor import MetricsProcessor, Source
from streams.windows import TumblingWindows


def s(ts: float, cpu: float, vm: str = "vm") -> Sample:
    return Sample(vm, ts, {"cpu_pct": cpu})


def test_a_window_closes_when_a_later_window_starts() -> None:
    w = TumblingWindows(60)
    assert w.add(s(0, 10), host="h") == []
    assert w.add(s(30, 30)) == []
    (closed,) = w.add(s(61, 99))
    assert (closed.start, closed.end, closed.host) == (0, 60, "h")
    assert closed.metrics["cpu_pct"].as_dict() == {"mean": 20.0, "max": 30.0, "count": 2}
    assert w.open_windows("vm")[0]["metrics"]["cpu_pct"]["count"] == 1


def test_late_samples_are_counted_and_do_not_change_closed_windows() -> None:
    w = TumblingWindows(60)
    w.add(s(10, 1))
    w.add(s(70, 2))
    assert w.add(s(20, 50)) == [] and w.late == 1
    (closed,) = w.add(s(130, 3))
    assert closed.start == 60 and closed.metrics["cpu_pct"].count == 1


def test_grace_keeps_a_window_open_for_out_of_order_samples() -> None:
    w = TumblingWindows(60, grace_s=15)
    w.add(s(50, 10))
    assert w.add(s(65, 20)) == []  # next window started, but we are inside the grace
    assert w.add(s(55, 30)) == []  # out of order, still counted in [0, 60)
    (closed,) = w.add(s(76, 40))
    assert closed.start == 0 and closed.metrics["cpu_pct"].count == 2 and w.late == 0


def test_a_gap_closes_every_pending_window_in_order() -> None:
    w = TumblingWindows(10, grace_s=25)
    for ts in (1, 11, 21):
        w.add(s(ts, ts))
    closed = w.add(s(100, 0))
    assert [c.start for c in closed] == [0, 10, 20]


def test_vms_are_independent_and_forgettable() -> None:
    w = TumblingWindows(60)
    w.add(s(0, 1, "a"))
    w.add(s(500, 1, "b"))
    assert w.add(s(61, 1, "a"))[0].vm_id == "a"
    w.forget("a")
    assert w.open_windows("a") == []


def test_invalid_sizes_are_refused() -> None:
    with pytest.raises(ValueError):
        TumblingWindows(0)


def test_a_rollup_is_the_sum_of_its_windows_and_closes_with_its_last_one() -> None:
    w = TumblingWindows(60, grace_s=10, rollups=(300,))
    for ts, cpu in ((5, 10), (65, 50), (70, 20), (250, 40)):
        w.add(s(ts, cpu))
    assert w.add(s(305, 1)) == []  # [240, 300) has its grace still
    minute, five = w.add(s(311, 2))
    assert (minute.size_s, minute.start, five.size_s, five.start) == (60, 240, 300, 0)
    assert five.metrics["cpu_pct"].as_dict() == {"mean": 30.0, "max": 50.0, "count": 4}
    assert w.last_closed_end("vm", 300) == 300 and w.last_closed_end("vm") == 300


def test_a_rollup_closes_on_a_sample_that_closes_no_shorter_window() -> None:
    w = TumblingWindows(60, grace_s=10, rollups=(300,))
    w.add(s(10, 4))
    (minute,) = w.add(s(305, 8))  # closes [0, 60); the rollup [0, 300) is still in its grace
    assert minute.start == 0 and w.last_closed_end("vm", 300) is None
    (five,) = w.add(s(315, 8))
    assert (five.size_s, five.start, five.metrics["cpu_pct"].count) == (300, 0, 1)


def test_a_sample_late_for_its_window_is_late_for_the_rollup_too() -> None:
    w = TumblingWindows(60, grace_s=10, rollups=(300,))
    w.add(s(10, 1))
    w.add(s(75, 2))  # closes [0, 60)
    assert w.add(s(20, 99)) == [] and w.late == 1
    (five,) = w.open_windows("vm", 300)
    assert five["metrics"]["cpu_pct"] == {"mean": 1.5, "max": 2.0, "count": 2}
    assert w.open_windows("vm")[0]["start"] == 60  # the base size's open windows


def test_rollups_must_be_multiples_of_the_window() -> None:
    for bad in (60, 90, 30):
        with pytest.raises(ValueError):
            TumblingWindows(60, rollups=(bad,))


def test_the_processor_forecasts_the_minutes_not_their_rollups() -> None:
    """With the 5-minute rollup on the forecast windows' instance, the planner learns the same
    windows, and publishes the same forecasts and actions, as with 1-minute windows alone."""
    start = (time.time() - 7200.0) // 300.0 * 300.0  # windows aligned: fixed counts
    records = [
        json.dumps(
            {
                "vm_id": "vm-1",
                "ts": start + 20.0 * i,
                "cpu_pct": 40.0 + 30.0 * math.sin(i / 9.0),
                "mem_pct": 50.0 + i % 7,
                "net_in_bps": 1e6 * (2.0 + math.cos(i / 5.0)),
                "net_out_bps": 5e5 + 1e3 * (i % 11),
                "vcpus": 4,
                "mem_mib": 8192,
                "net_mbps": 1000.0,
            }
        ).encode()
        for i in range(300)
    ]

    def published(forecast: TumblingWindows, aggregates: tuple) -> tuple[list, list]:
        processor = MetricsProcessor(
            engine=AnomalyEngine(),
            planner=CapacityPlanner(CapacityConfig(min_windows=3, act_after_windows=5)),
            forecast_windows=forecast,
            aggregate_windows=aggregates,
        )
        outputs = []
        for i, raw in enumerate(records):
            outputs += processor.process(raw, Source("vm.metrics", 0, i, b"vm-1"))
        planned = [(o.topic_id, o.value) for o in outputs if o.topic_id in ("forecasts", "actions")]
        return planned, [w.size_s for w in processor.take_closed_windows()]

    rolled = TumblingWindows(60.0, 10.0, rollups=(300.0,))
    with_rollup, sizes = published(rolled, (rolled,))
    alone, _ = published(TumblingWindows(60.0, 10.0), ())
    assert sizes.count(300.0) == 19 and sizes.count(60.0) == 99
    assert with_rollup and with_rollup == alone
