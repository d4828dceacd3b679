"""take_ready: when a stream's events are handed to the agent, through Faust's in-memory agent."""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import Callable

import faust
import pytest

from streams.batching import partition_backlog, take_ready

BIG = b"x" * 200  # at least ready_bytes (100) on its own
SMALL = b"y"


class Seen(faust.Sensor):
    """A sensor that records the events it is told about."""

    def __init__(self) -> None:
        super().__init__()
        self.came: list[bytes] = []
        self.went: list[tuple[bytes, object]] = []

    def on_stream_event_in(self, tp, offset, stream, event):  # noqa: ANN001, ANN201
        self.came.append(event.message.value)
        return {"token": event.message.value}

    def on_stream_event_out(self, tp, offset, stream, event, state=None) -> None:  # noqa: ANN001
        self.went.append((event.message.value, state))


class Harness:
    """An agent over an in-memory channel that records each batch it is handed."""

    def __init__(
        self,
        max_events: int,
        within: float,
        backlog: Callable[[faust.EventT], int] | None = None,
        backlog_within: float | None = None,
        max_bytes: int | None = None,
        shallow_max_events: int | None = None,
    ) -> None:
        self.app = faust.App(f"take-ready-{uuid.uuid4().hex[:8]}", web_enabled=False)
        self.seen = Seen()  # what the sensors are told
        self.app.sensors.add(self.seen)
        self.batches: list[list[bytes]] = []
        self.release = asyncio.Event()  # the agent handles a batch only once this is set
        self.release.set()
        channel = self.app.channel(value_type=bytes)

        async def collect(stream: faust.StreamT) -> None:
            batches = take_ready(
                stream,
                max_events,
                100,
                within,
                backlog=backlog,
                backlog_within=backlog_within,
                max_bytes=max_bytes,
                shallow_max_events=shallow_max_events,
            )
            async for events in batches:
                self.batches.append([e.message.value for e in events])
                await self.release.wait()
                yield len(events)

        self.agent = self.app.agent(channel)(collect)

    async def until(self, count: int, timeout: float = 10.0) -> None:
        deadline = time.monotonic() + timeout
        while len(self.batches) < count:
            assert time.monotonic() < deadline, f"{len(self.batches)} batches, not {count}"
            await asyncio.sleep(0.01)


def run(coro_fn) -> None:  # noqa: ANN001 - an async test body taking the harness
    asyncio.run(coro_fn())


def test_a_record_worth_a_batch_is_handed_over_without_waiting() -> None:
    async def body() -> None:
        h = Harness(max_events=10, within=60.0)
        async with h.agent.test_context() as agent:
            await agent.put(BIG, wait=False)
            await h.until(1)  # a 60 s timer would fail this
            assert h.batches == [[BIG]]

    run(body)


def test_small_records_wait_for_company_up_to_max_events() -> None:
    async def body() -> None:
        h = Harness(max_events=3, within=60.0)
        async with h.agent.test_context() as agent:
            for _ in range(2):
                await agent.put(SMALL, wait=False)
            await asyncio.sleep(0.3)
            assert h.batches == []  # 2 bytes, nothing else waiting: not yet worth a batch
            await agent.put(SMALL, wait=False)
            await h.until(1)
            assert h.batches == [[SMALL] * 3]

    run(body)


@pytest.mark.parametrize(
    ("within", "behind", "backlog_within", "waits"),
    [
        (0.3, False, None, 0.3),  # nothing behind it: `within`
        (0.05, True, 0.4, 0.4),  # a backlog that never arrives: `backlog_within`, no longer
        (0.3, True, 0.01, 0.3),  # the backlog wait is never shorter than `within`
    ],
)
def test_a_lone_small_record_is_handed_over_after_its_wait(
    within: float, behind: bool, backlog_within: float | None, waits: float
) -> None:
    async def body() -> None:
        h = Harness(10, within, backlog=lambda event: behind, backlog_within=backlog_within)
        async with h.agent.test_context() as agent:
            put_at = time.monotonic()
            await agent.put(SMALL, wait=False)
            await h.until(1)
            assert time.monotonic() - put_at >= waits
            assert h.batches == [[SMALL]]

    run(body)


def test_records_that_queue_behind_a_batch_make_the_next_batch_together() -> None:
    async def body() -> None:
        h = Harness(max_events=10, within=60.0)
        async with h.agent.test_context() as agent:
            h.release.clear()  # the agent is busy with its first batch
            await agent.put(BIG, wait=False)
            await h.until(1)
            for i in range(3):
                await agent.put(bytes([i]) * 150, wait=False)
            await asyncio.sleep(0.2)
            assert len(h.batches) == 1  # nothing is handed over while the agent is busy
            h.release.set()
            await h.until(2)
            assert h.batches[1] == [bytes([i]) * 150 for i in range(3)]

    run(body)


@pytest.mark.parametrize(
    ("max_events", "max_bytes", "sizes"),
    [
        (2, None, [1, 2, 2, 1]),
        (10, 450, [1, 3, 2]),  # two BIG records (400 bytes) are not full, the third makes it
    ],
)
def test_max_events_and_max_bytes_bound_a_backlog(
    max_events: int, max_bytes: int | None, sizes: list[int]
) -> None:
    async def body() -> None:
        h = Harness(max_events=max_events, within=60.0, max_bytes=max_bytes)
        async with h.agent.test_context() as agent:
            await hold_a_first_batch(h, agent)
            for _ in range(5):
                await agent.put(BIG, wait=False)
            h.release.set()
            await h.until(len(sizes))
            assert [len(b) for b in h.batches] == sizes

    run(body)


@pytest.mark.parametrize(("waiting", "sizes"), [(3, [1, 2, 1]), (5, [1, 4, 1])])
def test_a_shallow_backlog_goes_in_smaller_batches(waiting: int, sizes: list[int]) -> None:
    async def body() -> None:
        h = Harness(max_events=4, within=60.0, shallow_max_events=2)
        async with h.agent.test_context() as agent:
            await hold_a_first_batch(h, agent)
            for _ in range(waiting):  # queued behind the first batch
                await agent.put(BIG, wait=False)
            h.release.set()
            await h.until(len(sizes))
            assert [len(b) for b in h.batches] == sizes

    run(body)


def test_a_backlog_keeps_the_batch_filling_past_within_up_to_max_events() -> None:
    async def body() -> None:
        h = Harness(max_events=3, within=0.1, backlog=lambda event: True, backlog_within=60.0)
        async with h.agent.test_context() as agent:
            await agent.put(BIG, wait=False)
            await asyncio.sleep(0.4)
            # worth a batch and waited past `within`, but records wait behind it
            assert h.batches == []
            for _ in range(2):
                await agent.put(SMALL, wait=False)
            await h.until(1)
            assert h.batches == [[BIG, SMALL, SMALL]]

    run(body)


def test_once_the_backlog_is_read_a_batch_past_within_goes_at_once() -> None:
    async def body() -> None:
        waiting = {"behind": True}
        h = Harness(
            max_events=10,
            within=0.1,
            backlog=lambda event: waiting["behind"],
            backlog_within=60.0,
        )
        async with h.agent.test_context() as agent:
            await agent.put(SMALL, wait=False)
            await asyncio.sleep(0.3)
            assert h.batches == []
            waiting["behind"] = False  # the next record is the last one waiting
            await agent.put(SMALL, wait=False)
            await h.until(1)  # a 60 s wait would fail this
            assert h.batches == [[SMALL, SMALL]]

    run(body)


@pytest.mark.parametrize(
    ("max_events", "ready_bytes", "within", "max_bytes", "shallow"),
    [
        (0, 10, 1.0, None, None),
        (1, -1, 1.0, None, None),
        (1, 10, 0.0, None, None),
        (1, 10, 1.0, 0, None),
        (4, 10, 1.0, None, 0),
        (4, 10, 1.0, None, 5),  # a shallow bound above max_events
    ],
)
def test_nonsense_limits_are_refused(
    max_events: int, ready_bytes: int, within: float, max_bytes: int | None, shallow: int | None
) -> None:
    async def body() -> None:
        app = faust.App(f"take-ready-{uuid.uuid4().hex[:8]}", web_enabled=False)
        stream = app.channel(value_type=bytes).stream()
        with pytest.raises(ValueError, match="take_ready needs"):
            async for _ in take_ready(
                stream,
                max_events,
                ready_bytes,
                within,
                max_bytes=max_bytes,
                shallow_max_events=shallow,
            ):
                pass

    run(body)


def test_the_backlog_is_unknown_rather_than_an_error_without_an_assigned_partition() -> None:
    async def body() -> None:
        h = Harness(max_events=10, within=60.0)
        behind = partition_backlog(h.app)  # this app's consumer never starts
        async with h.agent.test_context() as agent:
            event = await agent.put(BIG, wait=False)
            assert behind(event) == 0  # none known
            await h.until(1)

    run(body)


async def hold_a_first_batch(h: Harness, agent: faust.types.AgentT) -> None:
    """Put one record and wait until the agent holds it, as its first batch."""
    h.release.clear()
    await agent.put(BIG, wait=False)
    await h.until(1)


def test_each_event_is_seen_by_the_sensors_and_acknowledged_once_its_batch_is_handled() -> None:
    async def body() -> None:
        h = Harness(max_events=10, within=60.0)
        seen = h.seen
        async with h.agent.test_context() as agent:
            await hold_a_first_batch(h, agent)
            assert seen.came == [BIG] and seen.went == []  # not acknowledged while handled
            h.release.set()
            await asyncio.sleep(0.05)
            h.release.clear()  # the agent holds its second batch
            await agent.put(BIG + b"2", wait=False)
            await h.until(2)
            # acknowledged once the agent asked for the next batch, with the state it came in
            assert seen.went == [(BIG, {"token": BIG})]
            assert seen.came == [BIG, BIG + b"2"]

    run(body)


def test_events_taken_while_a_rebalance_suspends_the_flow_are_acknowledged_not_handed() -> None:
    async def body() -> None:
        h = Harness(max_events=10, within=60.0)
        seen = h.seen
        async with h.agent.test_context() as agent:
            await hold_a_first_batch(h, agent)
            await agent.put(BIG + b"stale", wait=False)  # queued behind the batch
            h.app.flow_control.suspend()  # a rebalance begins
            h.release.set()
            await asyncio.sleep(0.2)
            assert len(h.batches) == 1
            assert seen.came == [BIG]  # the stale event never came in to the agent...
            assert (BIG + b"stale", None) in seen.went  # ... but was acknowledged
            h.app.flow_control.resume()
            await agent.put(BIG, wait=False)
            await h.until(2)
            assert h.batches[1] == [BIG]

    run(body)
