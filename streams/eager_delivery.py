"""Hand each fetched record to the agents without starting four tasks for it.

Faust's consumer delivers every fetched record through
`Service.wait_first(deliver(record), suspend_flow.wait())`. A delivery can have to wait (the
agent's queue is full, the producer's buffer is, or a rebalance suspended flow control), and a
waiting delivery must give way as soon as a rebalance suspends the flow. `wait_first` races the
two with a task for each, two more tasks for the consumer's stop and crash events and an
`asyncio.wait`, then cancels the losers: four tasks per record, although nearly every delivery
finishes without waiting at all. On these machines that was about a fifth of the per-record
cost of a Faust agent that does nothing (docs/benchmarks.md, "Faust's per-record path").

`EagerDelivery` runs the delivery at once, in the fetching task, up to its first wait. A
delivery that finishes there is done, with no task and no turn of the event loop, so a whole
fetch reaches the agent's queue before the agent runs, and `take_ready` takes it in one pass
(`streams/batching.py`). A delivery that has to wait (the agent's queue is full, say) is
carried on in a task and raced against the flow's suspension exactly as Faust races it; that
wait is where the agent gets its turn. Handing a whole fetch over once lost records in a
takeover, to a race in Faust's recovery that `streams/recovery_flow.py` closes
(docs/benchmarks.md, "A recovery race that drops fetched records").
"""

from __future__ import annotations

import asyncio
import types
from collections.abc import Coroutine, Generator
from typing import Any

import faust
from mode.services import WaitArgT, WaitResults
from mode.utils.times import Seconds


@types.coroutine
def _carry_on(coro: Coroutine, awaited: Any) -> Generator[Any, Any, Any]:
    """Drive `coro` on from the wait at which it yielded `awaited`, as `yield from` would."""
    while True:
        try:
            sent = yield awaited
        except GeneratorExit:
            coro.close()
            raise
        except BaseException as exc:  # noqa: BLE001 - a cancellation or error thrown into the task
            try:
                awaited = coro.throw(exc)
            except StopIteration as finished:
                return finished.value
        else:
            try:
                awaited = coro.send(sent)
            except StopIteration as finished:
                return finished.value


async def _rest_of(coro: Coroutine, awaited: Any) -> Any:
    return await _carry_on(coro, awaited)


def start_eagerly(coro: Coroutine) -> tuple[bool, Any]:
    """Run `coro` up to its first wait.

    Returns (True, its result) when it finished without waiting, else (False, a coroutine
    that finishes it). An exception raised before the first wait propagates from here.
    """
    try:
        awaited = coro.send(None)
    except StopIteration as finished:
        return True, finished.value
    return False, _rest_of(coro, awaited)


class EagerDelivery:
    """A `mode.Service` mix-in whose `wait_first` runs its first coroutine eagerly."""

    async def wait_first(self, *coros: WaitArgT, timeout: Seconds | None = None) -> WaitResults:
        first = coros[0] if coros else None
        if asyncio.iscoroutine(first) and not (self.should_stop or self.crashed):
            finished, outcome = start_eagerly(first)
            if finished:
                for other in coros[1:]:
                    if asyncio.iscoroutine(other):
                        other.close()  # the rivals were never started
                return WaitResults([first], [outcome], False)
            coros = (outcome, *coros[1:])
        return await super().wait_first(*coros, timeout=timeout)  # type: ignore[misc]


def deliver_eagerly(app: faust.App) -> None:
    """Build `app`'s consumer with `EagerDelivery` (call before the worker starts)."""
    transport = app.transport
    base = transport.Consumer
    if not issubclass(base, EagerDelivery):
        transport.Consumer = type(f"Eager{base.__name__}", (EagerDelivery, base), {})
