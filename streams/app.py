"""The Faust application: topics from topics.yaml, the agents, and the worker's web views.

Run it with `novacron worker`; every setting comes from `NOVACRON_*` variables (see settings.py).
"""

from __future__ import annotations

import asyncio
import base64
import logging
import time
import weakref
from contextvars import ContextVar
from datetime import timedelta

import faust
from faust.streams import _current_event as faust_current_event  # no public setter

from models.engine import AnomalyEngine
from streams.batching import take_as_configured
from streams.capacity import CapacityPlanner
from streams.eager_delivery import deliver_eagerly
from streams.faust_monitor import setup_prometheus_monitor
from streams.fetch_wait import limit_fetch_wait
from streams.host_windows import merge_into_host
from streams.processor import Checkpoint, MetricsProcessor, Source
from streams.publisher import BATCH_BYTES, Publisher
from streams.recovery_flow import keep_current_generation_on_resume
from streams.settings import Settings
from streams.topics import load_topics
from streams.validation import Validator
from streams.web import register_views
from streams.windows import ClosedWindow, TumblingWindows

settings = Settings.from_env()
limit_fetch_wait(settings.fetch_max_wait_ms)
TOPICS = load_topics(settings.topics_file, prefix=settings.topic_prefix)

app = faust.App(
    settings.app_id,
    broker=settings.broker,
    store=settings.store,
    recovery_consistency_check=settings.recovery_consistency_check,
    datadir=settings.data_dir,
    web_host=settings.web_host,
    web_bind=settings.web_host,
    web_port=settings.web_port,
    broker_session_timeout=settings.session_timeout_s,
    broker_heartbeat_interval=settings.heartbeat_interval_s,
    broker_rebalance_timeout=max(2 * settings.session_timeout_s, 4.0),
    consumer_auto_offset_reset="earliest",
    topic_partitions=TOPICS["metrics"].partitions,
    topic_replication_factor=TOPICS["metrics"].replication_factor,
    producer_acks=-1,
    producer_max_batch_size=BATCH_BYTES,  # the publisher fills one batch per partition
    producer_max_request_size=max(s.max_message_bytes or 0 for s in TOPICS.values()) or 1_048_576,
)
setup_prometheus_monitor(app)  # Faust's series; per-record counts read on scrape
deliver_eagerly(app)  # no tasks per fetched record unless its delivery has to wait
keep_current_generation_on_resume(app)  # a recovery's resume drops only stale records


def _raw_topic(topic_id: str) -> faust.TopicT:
    spec = TOPICS[topic_id]
    return app.topic(
        spec.name, partitions=spec.partitions, key_serializer="raw", value_serializer="raw"
    )


# the topics the agents consume; outputs go through the publisher, by topic name
topics = {topic_id: _raw_topic(topic_id) for topic_id in ("metrics", "feedback")}
publisher = Publisher(app, {topic_id: spec.name for topic_id, spec in TOPICS.items()})
P = TOPICS["metrics"].partitions
# Each VM's model state, checkpointed every `checkpoint_every` samples into a changelog-backed
# table: a worker that takes a partition over restores the VMs of that partition from it.
model_state = app.Table("vm-model-state", default=None, partitions=TOPICS["metrics"].partitions)
# Each VM's forecasters, usage history and scaling memory, every `forecast_checkpoint_every`
# forecast windows: tens of KB a VM, so written far less often than the anomaly models.
# Values are base64 text: Faust's changelog recovery decodes raw byte values as UTF-8.
forecast_state = app.Table("vm-forecast-state", default=None, partitions=P)
# Closed 1-min and 5-min aggregates per VM, in event time: each is written once, when its window
# closes, into a changelog-backed tumbling table that Faust expires after `retention`.
_window_start: ContextVar[float] = ContextVar("window_start", default=0.0)
AGGREGATES = {60.0: timedelta(hours=6), 300.0: timedelta(days=2)}
aggregate_tables = {
    size: app.Table(f"vm-metrics-{int(size // 60)}m", default=None, partitions=P)
    .tumbling(size, expires=retention)
    .relative_to(lambda event: _window_start.get())
    for size, retention in AGGREGATES.items()
}
# The same windows summed per host (the VMs of a host share a partition when host agents key
# their batch records by host; with vm_id keys each worker holds a partial host view).
host_tables = {
    size: app.Table(f"host-metrics-{int(size // 60)}m", default=None, partitions=P)
    .tumbling(size, expires=retention)
    .relative_to(lambda event: _window_start.get())
    for size, retention in AGGREGATES.items()
}
# one set of windows: the shortest size, the longer ones rolled up from it as they close
aggregate_windows = TumblingWindows(
    min(AGGREGATES), settings.window_grace_s, rollups=tuple(sorted(AGGREGATES))[1:]
)
processor = MetricsProcessor(
    engine=AnomalyEngine(settings.engine),
    validator=Validator(
        settings.max_record_bytes, settings.max_batch_samples, settings.max_clock_skew_s
    ),
    checkpoint_every=settings.checkpoint_every,
    planner=CapacityPlanner(settings.capacity),
    forecast_windows=(
        aggregate_windows
        if settings.forecast_window_s == aggregate_windows.size_s
        else TumblingWindows(settings.forecast_window_s, settings.window_grace_s)
    ),
    aggregate_windows=(aggregate_windows,),
    restore=lambda vm_id: Checkpoint.decode(model_state.get(vm_id)),
    forecast_checkpoint_every=settings.forecast_checkpoint_every,
    restore_forecasts=lambda vm_id: _from_text(forecast_state.get(vm_id)),
)
started_at = time.time()
readiness = {"assigned": False}


def _from_text(value: str | None) -> bytes | None:
    return None if value is None else base64.b64decode(value)


def _source(message: faust.types.Message) -> Source:
    return Source(message.topic, message.partition, message.offset, message.key)


@app.agent(topics["metrics"])
async def process_metrics(stream: faust.StreamT) -> None:
    """Validate, score and learn records; publish alerts, forecasts, actions and dead letters.

    Records are taken a few at a time so that one engine call scores them all (single-sample
    records would otherwise each pay the fleet forests' per-call cost); `take_ready` hands them
    over as soon as nothing more is waiting, and acknowledges the events only after the batch
    is handled, so delivery stays at-least-once. A batch's alerts are delivered before the
    forecasts and scaling actions of the windows it closed are worked out.
    """
    async for events in take_as_configured(app, stream, settings):
        records = [(e.message.value, _source(e.message)) for e in events]
        # A checkpoint must not reach the changelog before the outputs it reflects: a worker
        # that restores it skips the records (and windows) it covers, and would not send them
        # again. The alerts are awaited first, before the forecasts are worked out: the
        # producer sends nothing while the agent computes.
        alerts = (await publisher.publish(processor.assess_many(records))).get("anomalies")
        if alerts:
            await asyncio.gather(*alerts)
        planned = await publisher.publish(processor.plan_pending())
        if processor.forecast_checkpoints_due:
            landing = planned.get("forecasts", []) + planned.get("actions", [])
            if landing:
                await asyncio.gather(*landing)
        _store_state({e.message.partition: e for e in events})


def _store_state(event_of: dict[int, faust.EventT]) -> None:
    """Write due checkpoints and closed windows, each under an event of its VM's partition.

    A table write goes to the changelog partition of the current event, and a worker taking a
    partition over recovers only that changelog partition: with records of several partitions
    in one batch, each VM's state must be written while an event of its own partition is
    current.
    """
    writes: dict[int, list] = {}
    for vm_id, checkpoint in processor.take_checkpoints(partitions=set(event_of)).items():
        writes.setdefault(processor.partition_of(vm_id), []).append(
            (model_state, vm_id, checkpoint.encode(), None)
        )
    for vm_id, state in processor.take_forecast_checkpoints(partitions=set(event_of)).items():
        writes.setdefault(processor.partition_of(vm_id), []).append(
            (forecast_state, vm_id, base64.b64encode(state).decode(), None)
        )
    # the VMs of a host whose windows close together (a host agent's batch record) make one
    # write of the host's window, not one each
    host_shares: dict[tuple[int, float, str, float], list[ClosedWindow]] = {}
    for window in processor.take_closed_windows():
        partition = processor.partition_of(window.vm_id)
        writes.setdefault(partition, []).append(
            (aggregate_tables[window.size_s], window.vm_id, window.as_dict(), window.start)
        )
        if window.host is not None:
            group = (partition, window.size_s, window.host, window.start)
            shares = host_shares.get(group)
            if shares is None:
                shares = host_shares[group] = []
                writes[partition].append(
                    (host_tables[window.size_s], window.host, shares, window.start)
                )
            shares.append(window)
    for partition, items in writes.items():
        event = event_of.get(partition)
        if event is None:  # the VM moved partitions since; its new owner has its state
            continue
        # Table writes read the current event from Faust's context variable, local to this
        # agent's task. Only that is set, and reset at once: the stream's own current_event
        # attribute is what take_events uses to buffer the next records, and must not move.
        token = faust_current_event.set(weakref.ref(event))
        try:
            for table, key, value, window_start in items:
                if window_start is not None:
                    _window_start.set(window_start)
                if isinstance(value, list):  # VMs' shares of their host's window
                    stored = table.table
                    current = stored.get((key, stored.window.current(window_start)))
                    value = merge_into_host(current, value)
                table[key] = value
        finally:
            faust_current_event.reset(token)


@app.agent(topics["feedback"])
async def apply_feedback(stream: faust.StreamT) -> None:
    """Operator verdicts on incidents move the VM's threshold without a restart."""
    async for event in stream.events():
        message = event.message
        await publisher.publish(processor.feedback(message.value, _source(message)))


@app.on_partitions_revoked.connect
async def _on_revoked(sender: faust.App, revoked: set, **kwargs: object) -> None:
    lost = {tp.partition for tp in revoked if tp.topic == TOPICS["metrics"].name}
    processor.forget_partitions(lost)


@app.task
async def _restore_root_log_level() -> None:
    """Undo the DEBUG root level Faust's worker leaves behind at WARN and above.

    For its start-up spinner the worker lowers the root logger to DEBUG whenever the log level
    is WARN or higher, and never raises it again: every debug call in Faust and aiokafka (one
    per message sent) would build a log record for the handler to drop.
    """
    level = logging.getLevelName(settings.log_level.upper())
    if isinstance(level, int):
        logging.root.setLevel(level)


@app.on_rebalance_complete.connect
async def _on_rebalanced(sender: faust.App, **kwargs: object) -> None:
    readiness["assigned"] = True


def recent_windows(vm_id: str, count: int = 12) -> dict[str, list[dict]]:
    """The VM's latest closed windows of each size, newest first, read from the tables."""
    return {
        f"{int(size)}s": _read_back(
            aggregate_tables[size], vm_id, aggregate_windows.last_closed_end(vm_id, size), count
        )
        for size in AGGREGATES
    }


def recent_host_windows(host: str, count: int = 12) -> dict[str, list[dict]]:
    """The host's latest windows of each size, newest first (None if this worker has none)."""
    out = {}
    for size in AGGREGATES:
        ends = [aggregate_windows.last_closed_end(vm, size) for vm in processor.vms_on(host)]
        ends = [e for e in ends if e is not None]
        out[f"{int(size)}s"] = _read_back(host_tables[size], host, max(ends, default=None), count)
    return out


def _read_back(
    wrapper: faust.tables.wrappers.WindowWrapper, key: str, end: float | None, count: int
) -> list[dict]:
    if end is None:
        return []
    table, size = wrapper.table, wrapper.table.window.size
    rows = (table.get((key, table.window.current(end - i * size))) for i in range(1, count + 1))
    return [row for row in rows if row is not None]


register_views(
    app,
    processor,
    readiness,
    started_at,
    settings,
    topics["feedback"],
    recent_windows,
    recent_host_windows,
)
