"""Bound the Kafka consumer's fetch wait, which Faust's aiokafka driver fixes at 1500 ms.

A fetch returns when `fetch_min_bytes` are available or the wait expires. Against brokers that
answer a fetch only at the wait's end when little data is there (the embedded broker does),
1.5 s puts most of a second between a sample's arrival and its alert at moderate load. Faust
offers no setting for it, so the worker narrows the default of every consumer it constructs.
"""

from __future__ import annotations

import functools

import aiokafka

_original_init = aiokafka.AIOKafkaConsumer.__init__


def limit_fetch_wait(max_wait_ms: int) -> None:
    """Make every AIOKafkaConsumer built from now on wait at most `max_wait_ms` per fetch."""
    if max_wait_ms < 1:
        raise ValueError("the fetch wait must be at least 1 ms")

    @functools.wraps(_original_init)
    def init(self: aiokafka.AIOKafkaConsumer, *args: object, **kwargs: object) -> None:
        kwargs["fetch_max_wait_ms"] = min(int(kwargs.get("fetch_max_wait_ms", 500)), max_wait_ms)
        _original_init(self, *args, **kwargs)

    aiokafka.AIOKafkaConsumer.__init__ = init
