"""Hand a stream's events to the agent in batches sized by what is waiting, not by a timer.

Faust's `Stream.take_events(max_, within)` waits `within` seconds after every batch unless
`max_` events arrive first. A record of 100 samples is worth a batch on its own, yet it waited
those 20 ms behind each batch: at half the batched rate, about a fifth of the time between a
sample and its alert. `take_ready` hands the buffered events over as soon as one of these
holds:

- `max_events` events are buffered (a backlog: the batch is as large as it may be);
- no further record is waiting, neither in the stream's queue nor, by the consumer's high-water
  mark, in the partition behind the last event, and the buffered record values add up to
  `ready_bytes` (enough samples to be worth an engine call: one batched record, or some
  dozens of single-sample ones);
- the first buffered event has waited `within` seconds (single-sample records at low rates),
  or `backlog_within` seconds while records are still waiting behind the last buffered one.

Records that are waiting behind the buffer would only be handled after this batch anyway, so
while there is a backlog the buffer keeps filling, up to `max_events`: with a 20 ms timer alone
the batch size was whatever Faust's per-record path delivered in 20 ms, 200 records on a fast
machine but 40-50 on average on a slower one, which then paid the engine's per-call cost four
times as often.

So batches grow with a backlog (as large as before: a worker that is behind still makes the
engine calls of up to `max_events` records that its throughput rests on) and shrink to what
has arrived when the worker keeps up. As with Faust's own, an event is acknowledged only after
the agent has handled the batch that holds it, so delivery stays at-least-once.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import AsyncIterator, Callable

import faust

from streams.settings import Settings

log = logging.getLogger(__name__)

Backlog = Callable[[faust.EventT], bool]


def partition_backlog(app: faust.App) -> Backlog:
    """Whether later records of an event's partition are known to exist: its offset lies
    before the high-water mark the consumer read in its last fetch."""

    def behind(event: faust.EventT) -> bool:
        message = event.message
        try:
            highwater = app.consumer.highwater(message.tp)
        except Exception:  # noqa: BLE001 - not known here: consumer not started, or the
            # partition was revoked in a rebalance while its events were on their way
            return False
        return highwater is not None and message.offset + 1 < highwater

    return behind


async def take_ready(
    stream: faust.StreamT,
    max_events: int,
    ready_bytes: int,
    within: float,
    backlog: Backlog | None = None,
    backlog_within: float | None = None,
) -> AsyncIterator[list[faust.EventT]]:
    """Yield lists of the stream's events; see the module docstring for when.

    `backlog` tells whether records are waiting behind an event (None: only the stream's queue
    is looked at); `backlog_within` bounds the wait while they are (never below `within`).
    """
    if max_events < 1 or ready_bytes < 0 or within <= 0:
        raise ValueError("take_ready needs max_events >= 1, ready_bytes >= 0 and within > 0")
    backlog_within = max(within, backlog_within or 0.0)
    queue = stream.channel.queue  # what the stream reads its next events from
    events: list[faust.EventT] = []
    size = 0
    first_at = 0.0
    arrived = asyncio.Event()  # the buffer holds an event
    ready = asyncio.Event()  # the buffer is to be handed over now
    accepting = asyncio.Event()  # cleared while the agent handles a batch
    accepting.set()

    async def buffer(value: object) -> object:
        nonlocal size, first_at
        if not accepting.is_set():
            await accepting.wait()
        try:
            event = stream.current_event
            if event is None:
                raise RuntimeError("take_ready found no current event")
            now = time.monotonic()
            if not events:
                first_at = now
                arrived.set()
            events.append(event)
            size += len(event.message.value or b"")
            if len(events) >= max_events or (
                ((size >= ready_bytes and queue.empty()) or now - first_at >= within)
                and not (backlog and backlog(event))
            ):
                accepting.clear()
                ready.set()
        except Exception as exc:
            # raised here, it would end the background drain and leave the agent waiting for
            # events that never come: stop the stream loudly instead
            log.exception("take_ready could not buffer an event")
            await stream.crash(exc)
        return value

    stream.enable_acks = False  # acknowledged here, after the agent handled the batch
    stream.add_processor(buffer)
    # Faust's own take_events drains the stream this way: the processor above sees every
    # event, and this background task pulls them through it.
    stream._enable_passive(aiter(stream.channel))
    while not stream.should_stop:
        if not events:
            await stream.wait_for_stopped(arrived)
            continue
        waited = time.monotonic() - first_at
        if not ready.is_set() and (
            waited < within
            # past `within` with records behind the last event: they will come as events, and
            # the buffer hands the batch over with the first that has none behind it
            or (waited < backlog_within and backlog is not None and backlog(events[-1]))
        ):
            limit = within if waited < within else backlog_within
            await stream.wait_for_stopped(ready, timeout=limit - waited)
            continue  # re-check: stopped, ready, or the first event's wait is over
        accepting.clear()
        batch = list(events)
        try:
            yield batch
        finally:
            events.clear()
            size = 0
            arrived.clear()
            ready.clear()
            for event in batch:
                await stream.ack(event)
            accepting.set()


def take_as_configured(
    app: faust.App, stream: faust.StreamT, settings: Settings
) -> AsyncIterator[list[faust.EventT]]:
    """`take_ready` with the worker's batching settings, the backlog read from `app`'s consumer."""
    return take_ready(
        stream,
        settings.take_max,
        settings.take_ready_bytes,
        within=settings.take_within_s,
        backlog=partition_backlog(app),
        backlog_within=settings.take_backlog_within_s,
    )
