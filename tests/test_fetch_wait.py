"""The worker bounds the consumer fetch wait that Faust fixes at 1500 ms."""

from __future__ import annotations

import aiokafka
import pytest

from streams.fetch_wait import limit_fetch_wait


async def test_consumers_built_after_the_limit_wait_at_most_that_long() -> None:
    try:
        limit_fetch_wait(100)
        faust_like = aiokafka.AIOKafkaConsumer(
            bootstrap_servers="127.0.0.1:1", fetch_max_wait_ms=1500
        )
        shorter = aiokafka.AIOKafkaConsumer(bootstrap_servers="127.0.0.1:1", fetch_max_wait_ms=20)
        assert faust_like._fetch_max_wait_ms == 100
        assert shorter._fetch_max_wait_ms == 20
        limit_fetch_wait(100)  # applying it twice does not stack wrappers
        assert (
            aiokafka.AIOKafkaConsumer(
                bootstrap_servers="127.0.0.1:1", fetch_max_wait_ms=1500
            )._fetch_max_wait_ms
            == 100
        )
    finally:
        limit_fetch_wait(10**9)  # as good as unlimited again for the rest of the session
    with pytest.raises(ValueError):
        limit_fetch_wait(0)
