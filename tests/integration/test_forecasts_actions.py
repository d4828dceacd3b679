"""Forecasts and scaling actions reach their topics from a real worker on the embedded broker."""

from __future__ import annotations

import json
from collections import defaultdict

from kafka import KafkaConsumer
from kafka.partitioner.default import murmur2

from streams.demo import _get_json
from streams.simulator import read_labels
from tests.integration.conftest import simulate

VMS, TICKS = 8, 600
FAST_WINDOWS = {
    "NOVACRON_FORECAST_WINDOW_S": "10",
    "NOVACRON_WINDOW_GRACE_S": "0",
    "NOVACRON_SCALING_ACT_AFTER_WINDOWS": "12",
}


def test_window_aggregates_are_stored_in_changelogged_tables(
    deployment, start_worker_process
) -> None:
    worker = start_worker_process(extra_env=FAST_WINDOWS)
    simulate(
        deployment,
        "--vms",
        "4",
        "--rate",
        "1",
        "--duration",
        "700",
        "--seed",
        "2",
        "--anomalies",
        "0",
        "--batch",
        "--fast",
    )
    worker.wait_samples(4 * 700, timeout_s=120)
    consumer = KafkaConsumer(
        f"{deployment.app_id}-vm-metrics-1m-changelog",
        bootstrap_servers=deployment.broker.bootstrap,
        auto_offset_reset="earliest",
        consumer_timeout_ms=3000,
    )
    windows = [(json.loads(m.key), json.loads(m.value)) for m in consumer]
    consumer.close()
    by_vm = defaultdict(list)
    for (vm_id, (start, _end)), value in windows:
        assert value["vm_id"] == vm_id and value["start"] == start and value["size_s"] == 60
        by_vm[vm_id].append(value)
    assert len(by_vm) == 4
    detail = _get_json(f"{worker.base_url}/vms/vm-00000")
    recent = detail["windows"]["60s"]
    assert recent and recent == sorted(recent, key=lambda w: -w["start"])
    assert recent[0]["metrics"]["cpu_pct"]["count"] == 60, "the view reads the table back"
    assert detail["windows"]["300s"][0]["metrics"]["cpu_pct"]["count"] == 300
    # the host's window sums its four VMs' means, read back from the host table
    host = _get_json(f"{worker.base_url}/hosts/host-0000")
    assert host["vms"] == [f"vm-{i:05d}" for i in range(4)]
    latest = host["windows"]["60s"][0]
    assert latest["vm_count"] == 4
    vm_means = latest["vms"]
    assert abs(latest["totals"]["cpu_pct"] - sum(m["cpu_pct"] for m in vm_means.values())) < 1e-9
    same_window = [w for w in recent if w["start"] == latest["start"]]
    assert (
        same_window
        and abs(vm_means["vm-00000"]["cpu_pct"] - same_window[0]["metrics"]["cpu_pct"]["mean"])
        < 1e-9
    )
    for values in by_vm.values():
        full = [v for v in values if v["metrics"]["cpu_pct"]["count"] == 60]
        assert len(full) >= 9, "each closed minute holds its 60 one-second samples"
        for v in full:
            cpu = v["metrics"]["cpu_pct"]
            assert 0 <= cpu["mean"] <= cpu["max"] <= 100


def test_forecasts_and_actions_are_published(deployment, start_worker_process) -> None:
    worker = start_worker_process(extra_env=FAST_WINDOWS)
    labels_path = deployment.workdir / "labels.jsonl"
    simulate(
        deployment,
        "--vms",
        str(VMS),
        "--rate",
        "1",
        "--duration",
        str(TICKS),
        "--seed",
        "4",
        "--anomalies",
        "1",
        "--kinds",
        "network_saturation",
        "--warmup",
        "300",
        "--anomaly-seconds",
        "200",
        "--batch",
        "--fast",
        "--labels",
        str(labels_path),
    )
    worker.wait_samples(VMS * TICKS, timeout_s=180)
    (label,) = read_labels(str(labels_path))

    records = deployment.consume_records("forecasts", timeout_s=5)
    _assert_keyed_and_ordered(records, deployment.topics["forecasts"].partitions)
    forecasts = [json.loads(r.value) for r in records]
    per_vm = defaultdict(set)
    for f in forecasts:
        per_vm[f["vm_id"]].add(f["metric"])
        assert len(f["points"]) == 12 and f["levels"] == ["80", "95"]
        for p in f["points"]:
            assert p["lower_95"] <= p["lower_80"] <= p["yhat"] <= p["upper_80"] <= p["upper_95"]
        assert {"mae", "smape", "mase"} <= set(f["accuracy"])
    latest = {(f["vm_id"], f["metric"]): f for f in forecasts}
    for f in latest.values():
        assert set(f["accuracy"]["coverage"]) == {"80", "95"}
    assert len(per_vm) == VMS
    assert all(m == {"cpu_pct", "mem_pct", "net_in_bps", "net_out_bps"} for m in per_vm.values())
    # a message per VM and metric per 10 s window, not per record
    assert len(forecasts) <= VMS * 4 * (TICKS // 10)
    assert len({f["message_id"] for f in forecasts}) == len(forecasts)

    actions = deployment.consume("actions", timeout_s=5)
    saturated = [
        a
        for a in actions
        if a["vm_id"] == label.vm_id
        and a["resource"] == "bandwidth"
        and a["action"] == "scale_up"
        and label.start <= a["issued_at"] <= label.end + 20
    ]
    assert saturated, f"no bandwidth scale-up for {label.vm_id}; actions: {actions}"
    action = saturated[0]
    assert action["mode"] == "recommend"
    assert action["target_allocation"] > action["current_allocation"]
    assert action["expires_at"] > action["issued_at"]
    assert action["reason"] and 0 <= action["confidence"] <= 1
    assert action["pattern"]["kind"] in ("periodic", "bursty", "steady", "trending")
    assert action["evidence"]["upper"], "the evidence carries the forecast upper bounds"
    assert len({a["action_id"] for a in actions}) == len(actions)


def _assert_keyed_and_ordered(records: list, partitions: int) -> None:
    """Each forecast sits on the partition Kafka's default partitioner gives its key (as any
    client sending it alone would), and a VM's forecasts of a metric follow each other in
    offset order: consumers keyed by VM see them in the order they were issued."""
    assert records
    issued: dict[tuple[str, str], list[tuple[int, float]]] = defaultdict(list)
    for r in records:
        assert r.partition == (murmur2(r.key) & 0x7FFFFFFF) % partitions, r.key
        f = json.loads(r.value)
        assert r.key.decode() == f["vm_id"]
        issued[f["vm_id"], f["metric"]].append((r.offset, f["issued_at"]))
    for sequence in issued.values():
        times = [t for _offset, t in sorted(sequence)]
        assert times == sorted(times) and len(set(times)) == len(times)
