"""Hand a stream's events to the agent in batches sized by what is waiting, not by a timer.

Faust's `Stream.take_events(max_, within)` waits `within` seconds after every batch unless
`max_` events arrive first. A record of 100 samples is worth a batch on its own, yet it waited
those 20 ms behind each batch: at half the batched rate, about a fifth of the time between a
sample and its alert. `take_ready` hands the buffered events over as soon as one of these
holds:

- `max_events` events, or `max_bytes` bytes of record values, are buffered (a backlog: the
  batch is as large as it may be). While fewer than `max_events` events wait (a shallow
  backlog, such as a worker at half load builds during a pause), the batch goes at
  `shallow_max_events`: one long call would hold its first records until all were handled;
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

The events are read from the stream's channel queue, everything waiting at once, rather than
one by one through the stream's iterator: that path (processors, the current event, sensors and
an acknowledgement per event, and a wake-up of the agent per event) cost about half of a no-op
Faust agent's time per record (docs/benchmarks.md, "Faust's per-record path"). With eager
delivery (`streams/eager_delivery.py`) a whole fetch is in the queue when the agent wakes, and
one wake-up takes all of it. The bookkeeping Faust's stream does for each event is kept, done
here: an event fetched before a rebalance began is skipped and acknowledged, a record is
tracked as pending until it is acknowledged (a rebalance waits for those), and the sensors see
each event in and out, so Faust's event counts and runtime histogram still hold.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Callable

import faust

from streams.settings import Settings

Backlog = Callable[[faust.EventT], int]


def partition_backlog(app: faust.App) -> Backlog:
    """How many later records of an event's partition are known to exist (0: none known): the
    high-water mark the consumer read in its last fetch, less the event's offset and one."""

    def behind(event: faust.EventT) -> int:
        message = event.message
        try:
            highwater = app.consumer.highwater(message.tp)
        except Exception:  # noqa: BLE001 - not known here: consumer not started, or the
            # partition was revoked in a rebalance while its events were on their way
            return 0
        return max(0, highwater - message.offset - 1) if highwater is not None else 0

    return behind


class _Buffer:
    """The events taken from a stream's channel and not yet handed over, with the per-event
    bookkeeping Faust's stream iterator would have done for them."""

    def __init__(self, stream: faust.StreamT) -> None:
        app = stream.app
        self.stream = stream
        self.queue = stream.channel.queue
        self.events: list[faust.EventT] = []
        self.states: list[dict | None] = []  # the sensors' state of each event
        self.size = 0  # bytes of the buffered record values
        self.first_at = 0.0
        self._app = app
        self._flow = app.flow_control
        self._acking = app.topics.acking_topics
        self._consumer = app.consumer
        self._sensors = app.sensors

    def admit(self, event: faust.EventT) -> None:
        """Buffer an event, or acknowledge it at once if a rebalance began after its fetch."""
        message = event.message
        if not self._flow.is_active() or message.generation_id != self._app.consumer_generation_id:
            self.finish(event, None)  # as Faust's stream skips such an event
            return
        if message.topic in self._acking and not message.tracked:
            message.tracked = True
            self._consumer.track_message(message)  # a rebalance waits until it is acked
        state = self._sensors.on_stream_event_in(message.tp, message.offset, self.stream, event)
        if not self.events:
            self.first_at = time.monotonic()
        self.events.append(event)
        self.states.append(state)
        self.size += len(message.value or b"")

    def take_waiting(self, max_events: int, max_bytes: float) -> None:
        """Buffer the events already in the queue, without waiting, up to `max_events` or
        `max_bytes`."""
        queue = self.queue
        while len(self.events) < max_events and self.size < max_bytes and not queue.empty():
            self.admit(queue.get_nowait())

    async def wait_for_event(self, timeout: float | None) -> None:
        """Buffer the next event, waiting for it at most `timeout` seconds (None: no limit)."""
        try:
            async with asyncio.timeout(timeout):
                event = await self.queue.get()
        except TimeoutError:
            return
        self.admit(event)

    def hand_over(self) -> tuple[list[faust.EventT], list[dict | None]]:
        """Empty the buffer: its events and their sensor states, counted as the stream's."""
        taken = self.events, self.states
        self.events, self.states, self.size = [], [], 0
        self.stream.events_total += len(taken[0])
        return taken

    def finish(self, event: faust.EventT, state: dict | None) -> None:
        """Acknowledge an event as Faust's stream does, sensors included."""
        last = event.ack()
        message = event.message
        self._sensors.on_stream_event_out(message.tp, message.offset, self.stream, event, state)
        if last:
            self._sensors.on_message_out(message.tp, message.offset, message)


async def take_ready(
    stream: faust.StreamT,
    max_events: int,
    ready_bytes: int,
    within: float,
    backlog: Backlog | None = None,
    backlog_within: float | None = None,
    max_bytes: int | None = None,
    shallow_max_events: int | None = None,
) -> AsyncIterator[list[faust.EventT]]:
    """Yield lists of the stream's events; see the module docstring for when.

    `backlog` tells how many records are known to wait behind an event (None: only the
    stream's queue is looked at); `backlog_within` bounds the wait while some do (never below
    `within`).
    `max_bytes` bounds a batch by its record values' bytes as well (None: no bound): the
    record that reaches it is the batch's last. `shallow_max_events` bounds it instead of
    `max_events` while fewer than `max_events` events are buffered and queued together, and
    `backlog` knows of fewer than `max_events` behind the last buffered one.
    """
    if (
        max_events < 1
        or ready_bytes < 0
        or within <= 0
        or (max_bytes is not None and max_bytes < 1)
        or (shallow_max_events is not None and not 1 <= shallow_max_events <= max_events)
    ):
        raise ValueError(
            "take_ready needs max_events >= 1, ready_bytes >= 0, within > 0, max_bytes >= 1"
            " and 1 <= shallow_max_events <= max_events"
        )
    full_at = max_bytes if max_bytes is not None else float("inf")
    backlog_within = max(within, backlog_within or 0.0)
    buffer = _Buffer(stream)
    started = await stream.maybe_start()
    try:
        while not stream.should_stop:
            if not buffer.events:
                await buffer.wait_for_event(None)
            deep = len(buffer.events) + buffer.queue.qsize() >= max_events or (
                backlog is not None
                and bool(buffer.events)
                and backlog(buffer.events[-1]) >= max_events
            )
            # a shallow backlog goes in smaller calls, which do not hold its first ones long
            limit = max_events if deep or shallow_max_events is None else shallow_max_events
            buffer.take_waiting(limit, full_at)
            if not buffer.events:
                continue  # the events that came were skipped
            waited = time.monotonic() - buffer.first_at
            behind = backlog is not None and backlog(buffer.events[-1])
            worth = buffer.size >= ready_bytes or waited >= within
            full = len(buffer.events) >= limit or buffer.size >= full_at
            if not full and not (worth and not behind):
                if waited < within:
                    await buffer.wait_for_event(within - waited)
                    continue
                if behind and waited < backlog_within:
                    # the records behind the last event will come; the batch goes with the
                    # first event that has none behind it, or when the wait is over
                    await buffer.wait_for_event(backlog_within - waited)
                    continue
            batch, states = buffer.hand_over()
            try:
                yield batch
            finally:
                for event, state in zip(batch, states, strict=True):
                    buffer.finish(event, state)
    except StopAsyncIteration:
        return  # the channel ended (Faust's stream ends its iteration the same way)
    finally:
        if started:
            await stream.stop()


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
        max_bytes=settings.take_max_bytes,
        shallow_max_events=min(settings.take_max_shallow, settings.take_max),
    )
