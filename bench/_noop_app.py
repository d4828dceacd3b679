"""A Faust app whose only agent does nothing with its records: the floor of Faust's own cost.

Run by `bench.throughput` as `python -m faust -A bench._noop_app worker`; configured by
`BENCH_NOOP_*` variables. It runs the garbage collector and the event loop as the worker does
(`BENCH_NOOP_GC_GEN0_THRESHOLD`, `BENCH_NOOP_EVENT_LOOP`), so that the floor differs from the
worker by the work alone.

`BENCH_NOOP_READER` chooses how the agent reads: `faust` (the issue's floor: `async for` over
Faust's stream, with Faust's consumer) or `worker` (the worker's way: eager delivery and
`take_ready` batches, with the worker's batching settings), which is the floor of the worker's
own reading path. When the agent has seen `BENCH_NOOP_EXPECT` records it writes
{"count", "first_at", "first_count", "done_at"} as JSON to `BENCH_NOOP_OUT` (wall-clock seconds;
`first_count` records came in the first batch, at `first_at`).
"""

from __future__ import annotations

import json
import os
import time

import faust

from streams.batching import take_as_configured
from streams.cli import collect_young_every, use_event_loop
from streams.eager_delivery import deliver_eagerly
from streams.settings import Settings

_env = os.environ
collect_young_every(int(_env.get("BENCH_NOOP_GC_GEN0_THRESHOLD", "700")))
use_event_loop(_env.get("BENCH_NOOP_EVENT_LOOP", "asyncio"))
EXPECT = int(_env.get("BENCH_NOOP_EXPECT", "0"))
OUT = _env.get("BENCH_NOOP_OUT", "noop-result.json")
READER = _env.get("BENCH_NOOP_READER", "faust")
if READER not in ("faust", "worker"):
    raise ValueError(f"BENCH_NOOP_READER must be faust or worker, not {READER!r}")

app = faust.App(
    _env.get("BENCH_NOOP_APP_ID", "novacron-bench-noop"),
    broker=_env.get("BENCH_NOOP_BROKER", "kafka://127.0.0.1:9092"),
    store="memory://",
    datadir=_env.get("BENCH_NOOP_DATADIR", "noop-data"),
    web_host="127.0.0.1",
    web_bind="127.0.0.1",
    broker_session_timeout=2.0,
    broker_heartbeat_interval=0.5,
    broker_rebalance_timeout=4.0,
    consumer_auto_offset_reset="earliest",
    topic_partitions=int(_env.get("BENCH_NOOP_PARTITIONS", "8")),
    topic_replication_factor=1,
)
source = app.topic(
    _env.get("BENCH_NOOP_TOPIC", "vm.metrics"),
    partitions=int(_env.get("BENCH_NOOP_PARTITIONS", "8")),
    key_serializer="raw",
    value_serializer="raw",
)
progress = {"count": 0, "first_at": None, "first_count": 0}
if READER == "worker":
    deliver_eagerly(app)


def _count(records: int) -> None:
    if progress["first_at"] is None:
        progress["first_at"] = time.time()
        progress["first_count"] = records
    before = progress["count"]
    progress["count"] += records
    if before < EXPECT <= progress["count"]:
        result = {**progress, "done_at": time.time()}
        with open(OUT, "w") as fh:
            json.dump(result, fh)


@app.agent(source)
async def noop(stream: faust.StreamT) -> None:
    """Count records and nothing else."""
    if READER == "faust":
        async for _value in stream:
            _count(1)
        return
    async for events in take_as_configured(app, stream, Settings.from_env()):
        _count(len(events))
