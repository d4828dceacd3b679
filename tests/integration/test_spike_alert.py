"""A simulated fleet with one injected CPU spike: an alert for that VM, no alert storm elsewhere."""

from __future__ import annotations

from collections import Counter

from streams.demo import _get_json
from streams.simulator import read_labels
from tests.integration.conftest import simulate

VMS, TICKS = 20, 400


def test_injected_spike_raises_one_incident_for_its_vm(deployment, start_worker_process) -> None:
    worker = start_worker_process()
    labels_path = deployment.workdir / "labels.jsonl"
    sent = simulate(
        deployment,
        "--vms",
        str(VMS),
        "--rate",
        "1",
        "--duration",
        str(TICKS),
        "--seed",
        "3",
        "--anomalies",
        "1",
        "--kinds",
        "cpu_spike",
        "--warmup",
        "250",
        "--anomaly-seconds",
        "10",
        "--day-seconds",
        "600",
        "--batch",
        "--fast",
        "--labels",
        str(labels_path),
    )
    assert sent["samples"] == VMS * TICKS
    worker.wait_samples(VMS * TICKS, timeout_s=180)
    (label,) = read_labels(str(labels_path))
    assert label.kind == "cpu_spike"
    # every VM learned each of its samples exactly once: none lost, none taken twice
    for i in range(VMS):
        detail = _get_json(f"{worker.base_url}/vms/vm-{i:05d}", timeout=5.0)
        assert detail["model"]["samples"] == TICKS, (i, detail["model"]["samples"])

    alerts = deployment.consume("anomalies", timeout_s=5)
    opened = [a for a in alerts if a["status"] == "open"]
    on_target = [
        a for a in alerts if a["vm_id"] == label.vm_id and label.start <= a["ts"] <= label.end + 30
    ]
    assert on_target, f"no alert for {label.vm_id} during its spike; alerts: {alerts[:10]}"
    first = min(on_target, key=lambda a: a["ts"])
    assert first["status"] == "open" and first["severity"] in ("high", "critical")
    assert first["kind"] == "cpu_spike"
    assert first["actual"]["cpu_pct"] >= 90
    assert abs(sum(first["attribution"].values()) - first["score"]) < 1e-6 * max(1, first["score"])
    assert first["routing_key"] == f"host-{int(label.vm_id.split('-')[1]) // 4:04d}"
    # one incident for the spike, not one alert per record
    target_incidents = {a["incident_id"] for a in on_target}
    assert len(target_incidents) == 1
    # no storm: the other 19 VMs open fewer incidents than there are VMs, none of them severe
    others = Counter(a["vm_id"] for a in opened if a["vm_id"] != label.vm_id)
    assert sum(others.values()) < VMS - 1, others
    assert not [
        a for a in opened if a["vm_id"] != label.vm_id and a["severity"] in ("high", "critical")
    ]
    # every message id is unique and deterministic per transition
    assert len({a["message_id"] for a in alerts}) == len(alerts)
