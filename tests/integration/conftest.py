"""Integration fixtures: the real embedded broker, real worker processes, real topics."""

from __future__ import annotations

import json
import sys
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from kafka import KafkaConsumer, KafkaProducer
from kafka.consumer.fetcher import ConsumerRecord

from streams.admin import create_topics
from streams.broker import EmbeddedBroker, free_port
from streams.demo import (
    PER_SAMPLE_BAR,
    QUICK_GROUP_SETTINGS,
    _get_json,
    start_worker,
    stop_process,
    wait_ready,
)
from streams.topics import TopicSpec, load_topics

pytestmark = pytest.mark.integration


@pytest.fixture(scope="session")
def broker(tmp_path_factory: pytest.TempPathFactory) -> Iterator[EmbeddedBroker]:
    log = tmp_path_factory.mktemp("broker") / "broker.log"
    with EmbeddedBroker(log_path=log) as running:
        yield running


@dataclass
class Deployment:
    """One isolated deployment on the shared broker: its own topic prefix and app id."""

    broker: EmbeddedBroker
    prefix: str
    app_id: str
    topics: dict[str, TopicSpec]
    workdir: Path

    def env(self, web_port: int, name: str = "w") -> dict[str, str]:
        return {
            "NOVACRON_BROKER": self.broker.url,
            "NOVACRON_APP_ID": self.app_id,
            "NOVACRON_TOPIC_PREFIX": self.prefix,
            "NOVACRON_WEB_PORT": str(web_port),
            "NOVACRON_DATA_DIR": str(self.workdir / f"data-{name}"),
            "NOVACRON_LOG_LEVEL": "warn",
            **QUICK_GROUP_SETTINGS,
            **PER_SAMPLE_BAR,
        }

    def produce(self, records: list[tuple[str | None, bytes]], topic_id: str = "metrics") -> None:
        producer = KafkaProducer(bootstrap_servers=self.broker.bootstrap, acks="all")
        for key, value in records:
            producer.send(self.topics[topic_id].name, key=key and key.encode(), value=value)
        producer.flush()
        producer.close()

    def consume(
        self,
        topic_id: str,
        until: Callable[[list[dict]], bool] | None = None,
        timeout_s: float = 30.0,
    ) -> list[dict]:
        """Read a whole output topic from the start, as JSON, until `until(messages)` or timeout."""
        decoded = None if until is None else lambda records: until([_json(r) for r in records])
        return [_json(r) for r in self.consume_records(topic_id, decoded, timeout_s)]

    def consume_records(
        self,
        topic_id: str,
        until: Callable[[list[ConsumerRecord]], bool] | None = None,
        timeout_s: float = 30.0,
    ) -> list[ConsumerRecord]:
        """Read a whole topic from the start, records as the consumer gives them (partition,
        offset, key, value), until `until(records)` or timeout."""
        consumer = KafkaConsumer(
            self.topics[topic_id].name,
            bootstrap_servers=self.broker.bootstrap,
            auto_offset_reset="earliest",
            consumer_timeout_ms=1000,
            group_id=None,
            enable_auto_commit=False,
        )
        records: list[ConsumerRecord] = []
        deadline = time.monotonic() + timeout_s
        try:
            while time.monotonic() < deadline:
                records.extend(consumer)
                if until is not None and until(records):
                    break
                if until is None and time.monotonic() > deadline - timeout_s + 3:
                    break
        finally:
            consumer.close()
        return records


def _json(record: ConsumerRecord) -> dict:
    return json.loads(record.value)


@dataclass
class Worker:
    process: object
    base_url: str
    log: Path

    def stats(self) -> dict:
        return _get_json(f"{self.base_url}/stats", timeout=2.0) or {}

    def wait_samples(self, n: int, timeout_s: float = 60.0) -> dict:
        deadline = time.monotonic() + timeout_s
        stats: dict = {}
        while time.monotonic() < deadline:
            stats = self.stats()
            if stats.get("samples", 0) >= n:
                return stats
            time.sleep(0.25)
        raise AssertionError(
            f"worker processed {stats.get('samples')} of {n} samples; "
            f"log tail: {self.log.read_text()[-2000:]}"
        )

    def wait_drained(self, topic: str, partitions: int, timeout_s: float = 180.0) -> dict:
        """Until this worker owns all `partitions` of `topic` and has read each to its end."""
        deadline = time.monotonic() + timeout_s
        stats: dict = {}
        while time.monotonic() < deadline:
            stats = self.stats()
            rows = [
                r
                for r in stats.get("consumer_lag", {}).get("partitions", [])
                if r["topic"] == topic
            ]
            if len(rows) == partitions and all(r["lag"] == 0 for r in rows):
                return stats
            time.sleep(0.25)
        raise AssertionError(
            f"not drained: {stats.get('consumer_lag')}; log tail: {self.log.read_text()[-2000:]}"
        )


@pytest.fixture
def deployment(broker: EmbeddedBroker, tmp_path: Path) -> Deployment:
    tag = uuid.uuid4().hex[:8]
    topics = load_topics(prefix=f"t{tag}.")
    create_topics(broker.bootstrap, topics.values())
    return Deployment(broker, f"t{tag}.", f"novacron-test-{tag}", topics, tmp_path)


@pytest.fixture
def start_worker_process(deployment: Deployment) -> Iterator[Callable[..., Worker]]:
    started: list[Worker] = []

    def start(name: str = "w", extra_env: dict[str, str] | None = None) -> Worker:
        port = free_port()
        log = deployment.workdir / f"worker-{name}.log"
        process = start_worker({**deployment.env(port, name), **(extra_env or {})}, log)
        worker = Worker(process, f"http://127.0.0.1:{port}", log)
        started.append(worker)
        try:
            wait_ready(worker.base_url, process)
        except RuntimeError as exc:
            raise AssertionError(f"{exc}; log tail: {log.read_text()[-3000:]}") from exc
        return worker

    yield start
    for worker in started:
        stop_process(worker.process)


def simulate(deployment: Deployment, *args: str) -> dict:
    """Run `novacron simulate` as its user would, against the deployment's topics."""
    import subprocess

    out = subprocess.run(
        [
            sys.executable,
            "-m",
            "streams.cli",
            "simulate",
            "--bootstrap",
            deployment.broker.bootstrap,
            "--prefix",
            deployment.prefix,
            *args,
        ],
        capture_output=True,
        text=True,
        timeout=300,
        check=True,
    )
    return json.loads(out.stdout.strip().splitlines()[-1])
