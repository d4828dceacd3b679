"""Keep the records of the current rebalance generation when a recovery resumes the flow.

When a rebalance's table recovery is done, Faust's `Recovery.on_recovery_completed` resumes the
assigned partitions, seeks them to their committed offsets, and then resumes the flow, which
empties every queue it manages: the agents' and the table changelogs'. That is meant for
records fetched before the rebalance. But the consumer's flow is already running by then (the
same recovery resumed it earlier, to read the table changelogs, or at once when none needed
reading), so the fetcher reads the resumed partitions while the seek is under way, and hands
what it reads to the queues, stamped with the new generation. The resume throws those away
too. The consumer's position has moved past them and nothing seeks back: they are never
processed, their offsets are never acknowledged, and the partition's committed offset stops
there until the next rebalance.

A trace of a worker taking over a dead worker's partitions showed it: the survivor fetched a
partition's 800 records during a 270 ms seek, handled 401 of them, and the resume dropped the
other 399 (docs/benchmarks.md, "A recovery race that drops fetched records"). Faust's own
delivery, which lets the agent take records as they come, only makes it rarer: records wait in
the queue whenever the agent is busy with a batch. The worker's delivery hands a whole fetch to
the queue before the agent runs (`streams/eager_delivery.py`), so without this module it lost
records in every takeover tried.

`keep_current_generation_on_resume` makes the resume drop only what it is meant to drop: events
fetched in an earlier generation. Events of the current one stay queued; if the seek moved
their partition back, the records come again and are handled twice (delivery is at least once,
and the outputs are idempotent), which is better than never. A table changelog's events kept
this way are applied once: Faust's recovery skips the offsets it has already seen. A
revocation still empties the queues completely, as Faust does.
"""

from __future__ import annotations

import faust


def keep_current_generation_on_resume(app: faust.App) -> None:
    """Make `app`'s flow control keep current-generation events queued when it resumes."""
    flow = app.flow_control
    resume_and_empty = flow.resume

    def resume() -> None:
        generation = app.consumer_generation_id
        kept = [
            (queue, [item for item in queue._queue if _of_generation(item, generation)])
            for queue in flow._queues  # the queues the resume empties
        ]
        resume_and_empty()
        for queue, items in kept:
            queue._queue.extend(items)

    flow.resume = resume


def _of_generation(item: object, generation: int) -> bool:
    message = getattr(item, "message", None)
    return message is not None and getattr(message, "generation_id", None) == generation
