"""Eager delivery: a fetched record's delivery runs in the fetching task unless it must wait."""

from __future__ import annotations

import asyncio
import uuid

import faust
import pytest
from mode import Service

from streams.eager_delivery import EagerDelivery, deliver_eagerly, start_eagerly


async def test_a_coroutine_that_never_waits_finishes_where_it_is_started() -> None:
    async def quick() -> int:
        return 42

    assert start_eagerly(quick()) == (True, 42)


async def test_a_coroutine_that_waits_is_finished_by_the_one_returned() -> None:
    steps: list[str] = []
    value = asyncio.get_running_loop().create_future()

    async def slow() -> int:
        steps.append("before")
        got = await value
        steps.append("after")
        await asyncio.sleep(0)  # a bare yield to the loop, too
        return got + 1

    finished, rest = start_eagerly(slow())
    assert not finished and steps == ["before"]
    task = asyncio.ensure_future(rest)
    await asyncio.sleep(0.01)
    assert not task.done() and steps == ["before"]  # still waiting for its future
    value.set_result(1)
    assert await task == 2
    assert steps == ["before", "after"]


async def test_cancelling_the_rest_cancels_the_coroutine_where_it_waits() -> None:
    cleaned: list[bool] = []

    async def blocked() -> None:
        try:
            await asyncio.Event().wait()
        finally:
            cleaned.append(True)

    _, rest = start_eagerly(blocked())
    task = asyncio.ensure_future(rest)
    await asyncio.sleep(0.01)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert cleaned == [True]


async def test_errors_before_and_after_the_first_wait_propagate() -> None:
    async def fails_at_once() -> None:
        raise KeyError("at once")

    async def fails_later() -> None:
        await asyncio.sleep(0)
        raise KeyError("later")

    with pytest.raises(KeyError, match="at once"):
        start_eagerly(fails_at_once())
    finished, rest = start_eagerly(fails_later())
    assert not finished
    with pytest.raises(KeyError, match="later"):
        await rest


class Consumerish(EagerDelivery, Service):
    """A service that delivers as the worker's consumer does."""


async def test_a_delivery_that_does_not_wait_makes_no_task() -> None:
    loop = asyncio.get_running_loop()
    made: list[object] = []

    def counting_factory(loop: asyncio.AbstractEventLoop, coro: object) -> asyncio.Task:
        made.append(coro)
        return asyncio.Task(coro, loop=loop)

    async def deliver() -> str:
        return "delivered"

    service = Consumerish()
    suspend = asyncio.Event()
    rival = suspend.wait()
    loop.set_task_factory(counting_factory)
    try:
        results = await service.wait_first(deliver(), rival)
    finally:
        loop.set_task_factory(None)
    assert results.results == ["delivered"] and not results.stopped
    assert made == []
    assert rival.cr_frame is None  # closed without being started: no "never awaited" warning


async def test_a_delivery_that_does_not_wait_returns_without_a_turn_of_the_loop() -> None:
    ran: list[bool] = []

    async def deliver() -> str:
        asyncio.get_running_loop().call_soon(ran.append, True)  # e.g. the agent's wake-up
        return "delivered"

    results = await Consumerish().wait_first(deliver(), asyncio.Event().wait())
    assert results.results == ["delivered"]
    assert ran == []  # the fetcher goes on to the next record first
    await asyncio.sleep(0)
    assert ran == [True]


async def test_a_delivery_that_waits_gives_way_when_the_flow_is_suspended() -> None:
    cleaned: list[bool] = []
    queue_has_room = asyncio.Event()  # never set: the agent's queue stays full

    async def deliver() -> None:
        try:
            await queue_has_room.wait()
        finally:
            cleaned.append(True)

    service = Consumerish()
    suspend = asyncio.Event()
    waiting = asyncio.ensure_future(service.wait_first(deliver(), suspend.wait()))
    await asyncio.sleep(0.02)
    assert not waiting.done()
    suspend.set()  # a rebalance begins
    results = await asyncio.wait_for(waiting, 5)
    assert results.results == [True] and not results.stopped
    await asyncio.sleep(0)
    assert cleaned == [True]  # the delivery was cancelled where it waited


async def test_a_delivery_that_waits_completes_once_it_can() -> None:
    room = asyncio.Event()

    async def deliver() -> str:
        await room.wait()
        return "delivered"

    service = Consumerish()
    waiting = asyncio.ensure_future(service.wait_first(deliver(), asyncio.Event().wait()))
    await asyncio.sleep(0.02)
    room.set()
    results = await asyncio.wait_for(waiting, 5)
    assert results.results == ["delivered"]


def test_the_app_builds_its_consumer_with_eager_delivery() -> None:
    app = faust.App(f"eager-{uuid.uuid4().hex[:8]}", web_enabled=False)
    plain = app.transport.Consumer
    deliver_eagerly(app)
    eager = app.transport.Consumer
    assert issubclass(eager, EagerDelivery) and issubclass(eager, plain)
    deliver_eagerly(app)  # twice: the same class, not a second layer
    assert app.transport.Consumer is eager
