"""`novacron worker` with the Kafka consumer's fetch wait set by `BENCH_FETCH_MAX_WAIT_MS`.

An experiment, not a deployment mode: Faust's aiokafka driver fixes `fetch_max_wait_ms` at
1500 ms, and against the embedded broker a consumer with that setting receives a new record
only ~380 ms after it was produced (a plain kafka-python consumer, or aiokafka at 100 ms, gets
it within ~15 ms). Running the same worker with a shorter wait shows what that costs in
produce-to-alert latency. Run as `python -m bench._fetch_wait_worker`.
"""

from __future__ import annotations

import functools
import os

import aiokafka


def _patch_fetch_wait(wait_ms: int) -> None:
    original = aiokafka.AIOKafkaConsumer.__init__

    @functools.wraps(original)
    def init(self: aiokafka.AIOKafkaConsumer, *args: object, **kwargs: object) -> None:
        kwargs["fetch_max_wait_ms"] = wait_ms
        original(self, *args, **kwargs)

    aiokafka.AIOKafkaConsumer.__init__ = init


def main() -> int:
    _patch_fetch_wait(int(os.environ.get("BENCH_FETCH_MAX_WAIT_MS", "100")))
    from streams.cli import main as novacron

    return novacron(["worker"])


if __name__ == "__main__":
    raise SystemExit(main())
