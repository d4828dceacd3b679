"""Crash recovery and scale-out on the real broker: kill -9 a worker mid-stream and carry on."""

from __future__ import annotations

import os
import signal
import time
from collections import defaultdict
from concurrent.futures import ThreadPoolExecutor

import pytest

from streams.capacity import FORECAST_METRICS
from streams.demo import _get_json
from streams.simulator import read_labels
from tests.integration.conftest import Worker, simulate

VMS, TICKS = 16, 400
STATE_TABLES = ("vm-model-state", "vm-forecast-state")
CHECKPOINT = {
    "NOVACRON_CHECKPOINT_EVERY": "20",
    "NOVACRON_FORECAST_WINDOW_S": "10",
    "NOVACRON_FORECAST_CHECKPOINT_EVERY": "2",
}
STORES = {
    "memory": {},
    # Faust's disk store. Its recovery consistency check is off here only because the embedded
    # broker under-reports a partition's end offset (see Settings.recovery_consistency_check).
    "rocksdb": {"NOVACRON_STORE": "rocksdb://", "NOVACRON_RECOVERY_CONSISTENCY_CHECK": "0"},
}


@pytest.fixture(params=list(STORES))
def worker_env(request) -> dict[str, str]:
    """The recovery tests' worker settings, once per table store."""
    return {**CHECKPOINT, **STORES[request.param]}


def _fleet(deployment, labels_path, seed: str = "5") -> dict:
    return simulate(
        deployment,
        "--vms",
        str(VMS),
        "--rate",
        "1",
        "--duration",
        str(TICKS),
        "--seed",
        seed,
        "--anomalies",
        "3",
        "--kinds",
        "cpu_spike,network_saturation",
        "--warmup",
        "220",
        "--anomaly-seconds",
        "12",
        "--day-seconds",
        "600",
        "--batch",
        "--fast",
        "--labels",
        str(labels_path),
    )


def _alerted(alerts: list[dict], labels) -> dict:
    return {
        label.vm_id: [
            a
            for a in alerts
            if a["vm_id"] == label.vm_id
            and a["status"] in ("open", "update")
            and label.start <= a["ts"] <= label.end + 30
        ]
        for label in labels
    }


def _missed(alerts: list[dict], labels, worker: Worker) -> dict[str, list]:
    """The labelled VMs with no alert, each with the scores `worker` gave it around its label
    (seconds from the label's start, score): what a failure needs to be understood."""
    out = {}
    for label in labels:
        if _alerted(alerts, [label])[label.vm_id]:
            continue
        series = (_get_json(f"{worker.base_url}/vms/{label.vm_id}", timeout=5) or {}).get(
            "series"
        ) or {"ts": [], "score": []}
        out[label.vm_id] = [
            (round(ts - label.start), round(score, 1))
            for ts, score in zip(series["ts"], series["score"], strict=True)
            if label.start - 5 <= ts <= label.end + 5
        ]
    return out


def _assert_duplicates_share_ids(alerts: list[dict]) -> None:
    """Redelivered transitions carry the same id; one id never names two transitions.

    Scores of a replayed transition may differ slightly (the fleet-level forests are not part
    of a VM's checkpoint), so identity is the transition: incident, status and event time.
    """
    transitions_of = defaultdict(set)
    ids_of = defaultdict(set)
    for a in alerts:
        transition = (a["vm_id"], a["incident_id"], a["status"], a["ts"])
        transitions_of[a["message_id"]].add(transition)
        ids_of[transition].add(a["message_id"])
    assert all(len(t) == 1 for t in transitions_of.values()), "an id names two transitions"
    assert all(len(i) == 1 for i in ids_of.values()), "a transition got two ids"


def test_kill_9_mid_stream_then_restart_loses_no_anomaly(
    deployment, start_worker_process, worker_env
) -> None:
    first = start_worker_process("a", worker_env)
    labels_path = deployment.workdir / "labels.jsonl"
    # the fleet publishes while the worker reads, so that the kill comes mid-stream however
    # fast the worker is (a worker reading a finished topic could be done before the kill)
    with ThreadPoolExecutor(1) as pool:
        publishing = pool.submit(_fleet, deployment, labels_path)
        at_kill = first.wait_samples(int(VMS * TICKS * 0.35), timeout_s=120)
        os.killpg(first.process.pid, signal.SIGKILL)
        publishing.result()
    assert at_kill["samples"] < VMS * TICKS, "the first worker finished before the kill"
    labels = read_labels(str(labels_path))
    first.process.wait(timeout=10)
    killed_at = first.stats() or {}
    assert killed_at == {}, "the first worker is gone"
    # what the crash left on the broker: a worker sends its checkpoints some time after it
    # counts the samples they cover, and a kill -9 loses whatever its producer still held
    # (model checkpoints come every 20 samples, forecasting ones every other 10 s window: at
    # the kill some VMs may have none of the latter yet)
    durable = {table: _changelog_keys(deployment, table) for table in STATE_TABLES}
    assert durable["vm-model-state"], "the first worker died before any checkpoint landed"
    _seal_changelogs(deployment)

    second = start_worker_process("b", worker_env)
    deadline = time.monotonic() + 180
    alerts: list[dict] = []
    while time.monotonic() < deadline:
        alerts = deployment.consume("anomalies", timeout_s=3)
        if all(_alerted(alerts, labels).values()):
            break
        time.sleep(1)
    missing = _missed(alerts, labels, second)
    assert not missing, f"anomalies not alerted after the crash (scores): {missing}"
    stats = second.stats()
    _assert_duplicates_share_ids(alerts)
    # every VM with a checkpoint on the broker starts from it
    assert stats["records"].get("vm_restored", 0) == len(durable["vm-model-state"])
    assert stats["records"].get("vm_forecasts_restored", 0) == len(durable["vm-forecast-state"])


def test_survivor_takes_over_a_killed_workers_partitions(
    deployment, start_worker_process, worker_env
) -> None:
    a = start_worker_process("a", worker_env)
    b = start_worker_process("b", worker_env)
    # wait for the two-member group to settle: each worker owns some partitions
    labels_path = deployment.workdir / "labels.jsonl"
    _fleet(deployment, labels_path, seed="9")
    labels = read_labels(str(labels_path))
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        sa, sb = a.stats().get("samples", 0), b.stats().get("samples", 0)
        if sa > 0 and sb > 0 and sa + sb >= VMS * TICKS * 0.3:
            break
        time.sleep(0.2)
    assert sa > 0 and sb > 0, f"both workers should share the work (a={sa}, b={sb})"
    os.killpg(b.process.pid, signal.SIGKILL)
    b.process.wait(timeout=10)
    killed = time.monotonic()
    _seal_changelogs(deployment)  # so that their ends read as Apache Kafka reports them
    before = a.stats()["samples"]
    # the survivor finishes the whole stream, its own partitions and the dead worker's (its
    # sample count alone says too little: it re-processes b's uncommitted records)
    metrics = deployment.topics["metrics"]
    a.wait_drained(metrics.name, metrics.partitions)
    took_over_s = time.monotonic() - killed
    print(
        f"survivor processed {a.stats()['samples'] - before} more samples; "
        f"all partitions drained {took_over_s:.1f} s after the kill"
    )
    alerts = deployment.consume("anomalies", timeout_s=3)
    missing = _missed(alerts, labels, a)
    assert not missing, f"anomalies not alerted after the takeover (scores): {missing}"
    _assert_duplicates_share_ids(alerts)


def _seal_changelogs(deployment) -> None:
    """Append a one-record tombstone batch to every partition of the app's table changelogs.

    The embedded broker answers ListOffsets "latest" with the base offset of a partition's last
    record batch + 1 (measured: short by the other records of that batch, for as long as no
    other batch follows), and Faust's recovery reads a changelog only that far. A restarted
    worker would then miss the newest checkpoints whenever they shared a batch, and restore
    an older state. A last batch of one record is answered exactly. Apache Kafka needs none
    of this.
    """
    from kafka import KafkaConsumer, KafkaProducer, TopicPartition

    consumer = KafkaConsumer(bootstrap_servers=deployment.broker.bootstrap)
    producer = KafkaProducer(bootstrap_servers=deployment.broker.bootstrap, acks="all")
    try:
        changelogs = [
            t
            for t in consumer.topics()
            if t.startswith(f"{deployment.app_id}-") and t.endswith("-changelog")
        ]
        assert changelogs, "the worker wrote no table changelog"
        for topic in changelogs:
            parts = [TopicPartition(topic, p) for p in consumer.partitions_for_topic(topic)]
            for tp, end in consumer.end_offsets(parts).items():
                if end:  # an empty partition's end is answered right
                    producer.send(topic, key=b'"test-seal"', value=None, partition=tp.partition)
            producer.flush()
    finally:
        producer.close()
        consumer.close()


def _changelog_keys(deployment, table: str) -> set[bytes]:
    """The keys a table's changelog holds a value for, read to its last record (not to the end
    the broker reports, which can fall short: see `_seal_changelogs`)."""
    from kafka import KafkaConsumer, TopicPartition

    topic = f"{deployment.app_id}-{table}-changelog"
    consumer = KafkaConsumer(bootstrap_servers=deployment.broker.bootstrap, group_id=None)
    latest: dict[bytes, bytes | None] = {}
    try:
        consumer.assign([TopicPartition(topic, p) for p in consumer.partitions_for_topic(topic)])
        consumer.seek_to_beginning()
        idle = 0
        while idle < 3:  # three empty polls in a row: nothing more to read
            batches = consumer.poll(timeout_ms=300)
            idle = 0 if batches else idle + 1
            for records in batches.values():
                latest.update((r.key, r.value) for r in records)
    finally:
        consumer.close()
    return {key for key, value in latest.items() if value is not None}


def test_a_restarted_worker_carries_each_vms_forecasters_on(
    deployment, start_worker_process, worker_env
) -> None:
    """A rolling restart: stop the worker, start a new one, and the stream goes on. The new
    worker restores every VM's forecasters, so their count of scored forecasts goes on from
    where it was instead of starting over (and no fresh warm-up holds the actions back)."""
    vms, part_s, window_s = 8, 200, 10
    start = time.time() - 2 * part_s

    def part(first_tick: float) -> None:
        simulate(
            deployment,
            *("--vms", str(vms), "--rate", "1", "--duration", str(part_s), "--seed", "3"),
            *("--anomalies", "0", "--start", str(first_tick), "--batch", "--fast"),
        )

    first = start_worker_process("a", worker_env)
    part(start)
    first.wait_samples(vms * part_s, timeout_s=120)
    os.killpg(first.process.pid, signal.SIGTERM)  # a clean stop commits its offsets
    first.process.wait(timeout=30)
    _seal_changelogs(deployment)

    second = start_worker_process("b", worker_env)
    part(start + part_s)
    second.wait_samples(vms * part_s, timeout_s=120)
    assert second.stats()["records"].get("vm_forecasts_restored", 0) == vms
    forecasts = deployment.consume("forecasts", timeout_s=3)
    after = [f for f in forecasts if f["issued_at"] > start + part_s + window_s]
    assert {(f["vm_id"], f["metric"]) for f in after} == {
        (f"vm-{i:05d}", m) for i in range(vms) for m in FORECAST_METRICS
    }
    windows_before = part_s // window_s
    young = [
        (f["vm_id"], f["metric"], f["accuracy"].get("n", 0))
        for f in after
        if f["accuracy"].get("n", 0) < windows_before // 2
    ]
    assert not young, f"forecasters started over (vm, metric, n): {young[:4]}"
