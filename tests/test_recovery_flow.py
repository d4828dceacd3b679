"""A recovery's flow resume keeps the records fetched in the current rebalance generation."""

from __future__ import annotations

import uuid

import faust
from faust.types import Message

from streams.recovery_flow import keep_current_generation_on_resume


def _app() -> faust.App:
    return faust.App(f"recovery-flow-{uuid.uuid4().hex[:8]}", web_enabled=False)


def _event(app: faust.App, offset: int, generation: int) -> faust.EventT:
    message = Message(
        "vm.metrics", 0, offset, 0.0, 0, None, b"vm-1", b"{}", None, generation_id=generation
    )
    return app.create_event(message.key, message.value, None, message)


def _queued(app: faust.App, generations: list[int]):  # noqa: ANN202 - a mode queue
    queue = app.FlowControlQueue(maxsize=100, clear_on_resume=True)  # as a channel makes its own
    for offset, generation in enumerate(generations):
        queue.put_nowait(_event(app, offset, generation))
    return queue


def test_the_resume_drops_only_events_of_earlier_generations() -> None:
    app = _app()
    keep_current_generation_on_resume(app)
    app.consumer_generation_id = 3
    queue = _queued(app, [2, 3, 2, 3, 3])
    app.flow_control.suspend()
    app.flow_control.resume()
    assert app.flow_control.is_active()
    kept = [queue.get_nowait().message.offset for _ in range(queue.qsize())]
    assert kept == [1, 3, 4]  # the current generation's, in their order


def test_without_it_faust_drops_every_queued_event_on_resume() -> None:
    # what the module guards against: the records of the current generation went too
    app = _app()
    app.consumer_generation_id = 3
    queue = _queued(app, [3, 3])
    app.flow_control.resume()
    assert queue.empty()


def test_a_revocation_still_empties_the_queues() -> None:
    app = _app()
    keep_current_generation_on_resume(app)
    app.consumer_generation_id = 3
    queue = _queued(app, [3, 3])
    app.flow_control.suspend()
    app.flow_control.clear()  # what Faust does when partitions are revoked
    assert queue.empty()


def test_the_worker_app_resumes_this_way() -> None:
    from streams.app import app

    assert app.flow_control.resume.__module__ == "streams.recovery_flow"
