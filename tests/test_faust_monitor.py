"""The worker's Faust monitor exports the series Faust's Prometheus sensor exports."""

from __future__ import annotations

import faust
from faust.sensors.prometheus import FaustMetrics, PrometheusMonitor
from faust.types import TP
from prometheus_client import CollectorRegistry, generate_latest

from streams.faust_monitor import setup_prometheus_monitor


class _Message:
    """What the monitor touches of a message: it sets `time_in`."""


class _Owner:
    """A stream's task owner (the monitor keys a weak reference on it)."""


def _series(registry: CollectorRegistry) -> list[str]:
    lines = generate_latest(registry).decode().splitlines()
    # `_created` samples are wall-clock times of creation and the runtime sum adds measured
    # times: both differ between two registries fed alike
    return sorted(
        line
        for line in lines
        if not line.startswith("#") and "_created" not in line and "runtime_ms_sum" not in line
    )


def _feed(monitor, stream, events: int) -> None:
    for offset in range(events):
        tp = TP("vm.metrics", offset % 3)
        message, event = _Message(), _Message()
        monitor.track_tp_end_offset(tp, offset + 1 + offset % 5)
        monitor.on_message_in(tp, offset, message)
        state = monitor.on_stream_event_in(tp, offset, stream, event)
        # events of 2 ms, 30 ms, 0.3 s and 6 s (well inside buckets: both monitors measure
        # the same runtimes give or take microseconds)
        state["time_in"] -= (0.002, 0.03, 0.3, 6.0)[offset % 4]
        monitor.on_stream_event_out(tp, offset, stream, event, state)
        if offset % 4:  # some messages are still in flight
            monitor.on_message_out(tp, offset, message)


def test_the_monitor_exports_faust_sensors_series_with_the_same_values() -> None:
    ours, faust_own = CollectorRegistry(), CollectorRegistry()
    app = faust.App("monitor-test", broker="kafka://127.0.0.1:1")
    stream = app.topic("vm.metrics", value_serializer="raw").stream()
    stream.task_owner = _Owner()
    monitor = setup_prometheus_monitor(app, registry=ours)
    reference = PrometheusMonitor(metrics=FaustMetrics.create(faust_own, "faust"))
    assert app.monitor is monitor

    _feed(monitor, stream, 50)
    _feed(reference, stream, 50)

    exported = _series(ours)
    assert exported == _series(faust_own)
    offset = 'faust_messages_received_per_topics_partition{partition="1",topic="vm.metrics"}'
    assert f"{offset} 49.0" in exported  # the offset last read from partition 1
    assert "faust_active_messages 13.0" in exported  # 50 in, 37 out
    assert 'faust_events_runtime_ms_bucket{le="25.0"} 13.0' in exported  # 2 ms: 13 of 50
    assert 'faust_events_runtime_ms_bucket{le="+Inf"} 50.0' in exported
    assert 'faust_events_runtime_ms_bucket{le="5000.0"} 38.0' in exported  # all but the 6 s
    (runtime_sum,) = (
        float(line.split()[1])
        for line in generate_latest(ours).decode().splitlines()
        if line.startswith("faust_events_runtime_ms_sum")
    )
    assert abs(runtime_sum - (13 * 2 + 13 * 30 + 12 * 300 + 12 * 6000)) < 50  # ms
    end = 'faust_topic_partition_end_offset{partition="2",topic="vm.metrics"}'
    assert f"{end} 50.0" in exported  # tracked last for partition 2 at offset 47: 47 + 1 + 2
