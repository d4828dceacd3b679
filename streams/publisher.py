"""Publish the outputs of a batch of records with one Kafka record batch per topic partition.

Faust's `Topic.send` pays tens of microseconds per message (a pending message and its future,
sensor calls, a delivery callback), and a worker whose VMs report once a minute publishes four
forecasts for every sample. The outputs of a batch of records are instead appended to one
record batch per partition and handed to the producer Faust runs:

- a message goes to the partition the producer's partitioner gives its key, as it would when
  sent alone, and the messages of a partition keep their order;
- Faust flushes that producer before it commits offsets, so delivery stays at-least-once;
- Faust's per-topic send sensors do not see these messages: `novacron_published_total`
  counts them.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Mapping, Sequence

import faust
from aiokafka import AIOKafkaProducer
from aiokafka.producer.message_accumulator import BatchBuilder

from streams.processor import Output
from streams.telemetry import PUBLISHED

log = logging.getLogger(__name__)

# Largest record batch built here: well under Kafka's default 1 MB message limit, and large
# enough that a batch of records' forecasts fills one batch per partition.
BATCH_BYTES = 512 * 1024


class Publisher:
    """Hands outputs to the Faust app's producer, batched per topic partition."""

    def __init__(self, app: faust.App, topic_names: Mapping[str, str]) -> None:
        self._app = app
        self._names = dict(topic_names)  # topic id (topics.yaml) -> Kafka topic name
        self._known: set[str] = set()  # topics whose partitions the producer has looked up

    async def publish(self, outputs: Sequence[Output]) -> dict[str, list[asyncio.Future]]:
        """Send the outputs, in order per partition; per topic id, the delivery futures of
        the batches that hold its messages."""
        kafka = self._kafka()
        building: dict[tuple[str, int], list] = {}  # (topic id, partition) -> [batch, count]
        deliveries: dict[str, list[asyncio.Future]] = {}
        for out in outputs:
            topic = self._names[out.topic_id]
            if topic not in self._known:
                await kafka.partitions_for(topic)  # the partitioner needs the topic's metadata
                self._known.add(topic)
            key, value = out.encode()
            partition = self._app.producer.key_partition(topic, key).partition
            slot = building.get((out.topic_id, partition))
            if slot is None:
                slot = building[out.topic_id, partition] = [kafka.create_batch(), 0]
            if slot[0].append(key=key, value=value, timestamp=None) is None:  # full: send it
                await self._send(kafka, out.topic_id, partition, *slot, deliveries)
                slot[:] = [kafka.create_batch(), 0]
                slot[0].append(key=key, value=value, timestamp=None)  # a first record fits
            slot[1] += 1
        for (topic_id, partition), (batch, count) in building.items():
            await self._send(kafka, topic_id, partition, batch, count, deliveries)
        return deliveries

    def _kafka(self) -> AIOKafkaProducer:
        # Faust's aiokafka producer: Faust offers no public accessor, and its commit flushes it
        return self._app.producer._ensure_producer()

    async def _send(
        self,
        kafka: AIOKafkaProducer,
        topic_id: str,
        partition: int,
        batch: BatchBuilder,
        count: int,
        deliveries: dict[str, list[asyncio.Future]],
    ) -> None:
        topic = self._names[topic_id]
        delivery = await kafka.send_batch(batch, topic, partition=partition)
        delivery.add_done_callback(lambda done: _report(done, topic, partition, count))
        deliveries.setdefault(topic_id, []).append(delivery)
        PUBLISHED.labels(topic=topic_id).inc(count)


def _report(delivery: asyncio.Future, topic: str, partition: int, count: int) -> None:
    """Log a batch the producer could not deliver (after its own retries)."""
    if delivery.cancelled():
        return
    error = delivery.exception()
    if error is not None:
        log.error("could not publish %d messages to %s[%d]: %r", count, topic, partition, error)
