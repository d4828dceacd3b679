"""A simulated VM fleet publishing to `vm.metrics`, with labelled injected anomalies.

Each tick every VM emits one sample. VMs sit on hosts (several per host), have their own
baselines, a shared daily cycle, noise, and metrics that move together (network and disk follow
CPU load). Anomalies are injected at seeded times and written as ground-truth labels.
"""

from __future__ import annotations

import json
import math
import time
from collections.abc import Iterator
from dataclasses import asdict, dataclass

import numpy as np

ANOMALY_KINDS = ("cpu_spike", "memory_leak", "io_bottleneck", "network_saturation", "level_shift")
LINK_BPS = 125e6  # a 1 Gbit/s link, in bytes/s


@dataclass(frozen=True)
class Label:
    """Ground truth: `vm_id` had an anomaly of `kind` during [start, end] (epoch seconds)."""

    vm_id: str
    kind: str
    start: float
    end: float


@dataclass(frozen=True)
class Injection:
    vm: int
    kind: str
    first_tick: int
    ticks: int


class Fleet:
    """Deterministic generator of fleet samples for a seed."""

    def __init__(
        self, vms: int, seed: int = 0, vms_per_host: int = 4, day_seconds: float = 86_400.0
    ) -> None:
        if vms < 1:
            raise ValueError("a fleet needs at least one VM")
        self.rng = np.random.default_rng(seed)
        self.vm_ids = [f"vm-{i:05d}" for i in range(vms)]
        self.hosts = [f"host-{i // vms_per_host:04d}" for i in range(vms)]
        self.day_seconds = day_seconds
        rng = self.rng
        self.cpu_base = rng.uniform(10, 45, vms)
        self.cpu_amp = rng.uniform(0.1, 0.5, vms) * self.cpu_base
        self.phase = rng.uniform(0, 2 * math.pi, vms) * 0.25
        self.mem_base = rng.uniform(25, 60, vms)
        self.net_scale = rng.uniform(0.5e6, 8e6, vms)
        self.disk_scale = rng.uniform(0.2e6, 4e6, vms)
        self.vcpus = rng.choice([2, 4, 8], vms)
        self.mem_mib = rng.choice([4096, 8192, 16384], vms)
        self.injections: list[Injection] = []

    def inject(self, vm: int, kind: str, first_tick: int, ticks: int) -> None:
        if kind not in ANOMALY_KINDS:
            raise ValueError(f"unknown anomaly kind {kind!r}; choose from {ANOMALY_KINDS}")
        self.injections.append(Injection(vm, kind, first_tick, ticks))

    def sample(self, tick: int, ts: float) -> dict[str, np.ndarray]:
        """All VMs' metrics at one tick, as arrays over VMs."""
        n = len(self.vm_ids)
        rng = self.rng
        day = 2 * math.pi * (ts % self.day_seconds) / self.day_seconds
        load = 1.0 + (self.cpu_amp / self.cpu_base) * np.sin(day + self.phase)
        load = load * (1.0 + rng.normal(0, 0.06, n))
        cpu = self.cpu_base * load
        mem = self.mem_base + rng.normal(0, 0.6, n)
        net_in = self.net_scale * load * (1 + rng.normal(0, 0.08, n))
        net_out = 0.6 * self.net_scale * load * (1 + rng.normal(0, 0.08, n))
        disk_r = self.disk_scale * (0.5 + 0.5 * load) * (1 + rng.normal(0, 0.1, n))
        disk_w = 0.7 * self.disk_scale * (0.5 + 0.5 * load) * (1 + rng.normal(0, 0.1, n))
        for inj in self.injections:
            k = tick - inj.first_tick
            if inj.kind == "level_shift" and k >= 0:
                cpu[inj.vm] += 30.0
                net_in[inj.vm] *= 1.8
                continue
            if not 0 <= k < inj.ticks:
                continue
            v = inj.vm
            if inj.kind == "cpu_spike":
                cpu[v] = rng.uniform(94, 100)
            elif inj.kind == "memory_leak":
                mem[v] = min(99.0, self.mem_base[v] + 40.0 * (k + 1) / inj.ticks)
            elif inj.kind == "io_bottleneck":
                disk_r[v] *= 8.0
                disk_w[v] *= 10.0
                cpu[v] += 15.0
            elif inj.kind == "network_saturation":
                net_in[v] = LINK_BPS * rng.uniform(0.95, 1.0)
                net_out[v] = LINK_BPS * rng.uniform(0.9, 1.0)
        return {
            "cpu_pct": np.clip(cpu, 0, 100),
            "mem_pct": np.clip(mem, 0, 100),
            "disk_read_bps": np.clip(disk_r, 0, None),
            "disk_write_bps": np.clip(disk_w, 0, None),
            "net_in_bps": np.clip(net_in, 0, LINK_BPS),
            "net_out_bps": np.clip(net_out, 0, LINK_BPS),
        }

    def records(
        self, ticks: int, start_ts: float, step_s: float, batch: bool
    ) -> Iterator[tuple[int, list[tuple[str, dict]]]]:
        """(tick, [(key, value)]) per tick: one record per VM, or one batch record per host."""
        for tick in range(ticks):
            ts = start_ts + tick * step_s
            m = self.sample(tick, ts)
            rows = [
                {
                    "vm_id": vm,
                    "host": host,
                    "ts": round(ts, 3),
                    **{name: round(float(values[i]), 3) for name, values in m.items()},
                    "vcpus": int(self.vcpus[i]),
                    "mem_mib": int(self.mem_mib[i]),
                    "net_mbps": LINK_BPS * 8 / 1e6,
                }
                for i, (vm, host) in enumerate(zip(self.vm_ids, self.hosts, strict=True))
            ]
            if not batch:
                yield tick, [(row["vm_id"], row) for row in rows]
                continue
            by_host: dict[str, list[dict]] = {}
            for row in rows:
                by_host.setdefault(row["host"], []).append(row)
            yield (
                tick,
                [
                    (host, {"host": host, "ts": round(ts, 3), "samples": samples})
                    for host, samples in by_host.items()
                ],
            )

    def labels(self, start_ts: float, step_s: float, total_ticks: int) -> list[Label]:
        out = []
        for inj in self.injections:
            last = total_ticks - 1 if inj.kind == "level_shift" else inj.first_tick + inj.ticks - 1
            out.append(
                Label(
                    self.vm_ids[inj.vm],
                    inj.kind,
                    round(start_ts + inj.first_tick * step_s, 3),
                    round(start_ts + last * step_s, 3),
                )
            )
        return out


def plan_anomalies(
    fleet: Fleet, count: int, kinds: tuple[str, ...], first_tick: int, total_ticks: int, ticks: int
) -> None:
    """Inject `count` anomalies on distinct VMs at seeded ticks after `first_tick`."""
    if count > len(fleet.vm_ids):
        raise ValueError(f"cannot inject {count} anomalies into {len(fleet.vm_ids)} VMs")
    if count and first_tick + ticks > total_ticks:
        raise ValueError("the run is too short for the anomalies after the warm-up")
    vms = fleet.rng.choice(len(fleet.vm_ids), size=count, replace=False)
    for i, vm in enumerate(vms):
        start = int(fleet.rng.integers(first_tick, total_ticks - ticks + 1))
        fleet.inject(int(vm), kinds[i % len(kinds)], start, ticks)


def write_labels(path: str, labels: list[Label]) -> None:
    with open(path, "w") as fh:
        for label in labels:
            fh.write(json.dumps(asdict(label)) + "\n")


def read_labels(path: str) -> list[Label]:
    with open(path) as fh:
        return [Label(**json.loads(line)) for line in fh if line.strip()]


@dataclass(frozen=True)
class SimulationPlan:
    vms: int
    rate: float
    duration_s: float
    seed: int = 0
    batch: bool = False
    anomalies: int = 1
    kinds: tuple[str, ...] = ANOMALY_KINDS
    warmup_s: float | None = None
    anomaly_s: float | None = None
    day_seconds: float = 600.0
    vms_per_host: int = 4
    start_ts: float | None = None
    realtime: bool = True

    @property
    def ticks(self) -> int:
        return max(1, int(round(self.duration_s * self.rate)))


def run_simulation(
    bootstrap: str,
    topic: str,
    plan: SimulationPlan,
    labels_path: str | None,
    progress: bool = False,
) -> dict:
    """Publish the plan's records with kafka-python; returns counts. Labels are written first."""
    from kafka import KafkaProducer

    step = 1.0 / plan.rate
    start_ts = time.time() if plan.start_ts is None else plan.start_ts
    fleet = Fleet(plan.vms, plan.seed, plan.vms_per_host, plan.day_seconds)
    warmup_ticks = int(
        (plan.warmup_s if plan.warmup_s is not None else plan.duration_s * 0.4) * plan.rate
    )
    anomaly_ticks = max(
        1,
        int(
            (plan.anomaly_s if plan.anomaly_s is not None else max(5.0, plan.duration_s * 0.1))
            * plan.rate
        ),
    )
    plan_anomalies(fleet, plan.anomalies, plan.kinds, warmup_ticks, plan.ticks, anomaly_ticks)
    if labels_path:
        write_labels(labels_path, fleet.labels(start_ts, step, plan.ticks))
    producer = KafkaProducer(
        bootstrap_servers=bootstrap,
        linger_ms=5,
        acks="all",
        key_serializer=str.encode,
        value_serializer=lambda v: json.dumps(v).encode(),
    )
    sent = samples = 0
    began = time.monotonic()
    try:
        for tick, records in fleet.records(plan.ticks, start_ts, step, plan.batch):
            if plan.realtime:
                delay = began + tick * step - time.monotonic()
                if delay > 0:
                    time.sleep(delay)
            for key, value in records:
                producer.send(topic, key=key, value=value)
                sent += 1
                samples += len(value["samples"]) if plan.batch else 1
            if progress and tick % max(1, int(plan.rate * 5)) == 0:
                print(f"simulate: tick {tick}/{plan.ticks}, {samples} samples sent", flush=True)
        producer.flush()
    finally:
        producer.close()
    return {
        "records": sent,
        "samples": samples,
        "ticks": plan.ticks,
        "seconds": round(time.monotonic() - began, 3),
    }
