"""Broker-side measurements: raw-consumer limit, Faust no-op floor, real workers, latency."""

from __future__ import annotations

import asyncio
import bisect
import json
import math
import os
import shutil
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

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
from streams.settings import Settings
from streams.simulator import Fleet
from streams.topics import TopicSpec, load_topics

Record = tuple[bytes, bytes]
ROOT = Path(__file__).resolve().parents[1]  # bench modules run as subprocesses from here


# ---------------------------------------------------------------------------- data
@dataclass
class Dataset:
    """Pre-encoded `vm.metrics` records and how many samples they hold."""

    records: list[Record]
    samples: int
    batch: bool


def fleet_records(
    vms: int, ticks: int, batch: bool, vms_per_host: int = 100, seed: int = 7, step_s: float = 1.0
) -> Dataset:
    """`ticks` ticks of a simulated fleet, event times ending now (all in the past)."""
    fleet = Fleet(vms, seed=seed, vms_per_host=vms_per_host, day_seconds=600.0)
    start_ts = time.time() - ticks * step_s
    out: list[Record] = []
    samples = 0
    for _tick, records in fleet.records(ticks, start_ts, step_s, batch):
        for key, value in records:
            out.append((key.encode(), json.dumps(value, separators=(",", ":")).encode()))
            samples += len(value["samples"]) if batch else 1
    return Dataset(out, samples, batch)


# ---------------------------------------------------------------------------- deployment
@dataclass
class Deployment:
    """One isolated set of topics (own prefix) on the shared broker."""

    broker: EmbeddedBroker
    prefix: str
    topics: dict[str, TopicSpec]
    workdir: Path

    @classmethod
    def create(cls, broker: EmbeddedBroker, workdir: Path, name: str) -> Deployment:
        prefix = f"b{uuid.uuid4().hex[:6]}{name}."
        topics = load_topics(prefix=prefix)
        create_topics(broker.bootstrap, topics.values())
        return cls(broker, prefix, topics, workdir)

    @property
    def metrics_topic(self) -> str:
        return self.topics["metrics"].name

    def produce(self, records: Iterable[Record]) -> float:
        """Send every record to vm.metrics and wait for the acks; returns seconds taken."""
        from kafka import KafkaProducer

        producer = KafkaProducer(
            bootstrap_servers=self.broker.bootstrap,
            acks=1,
            linger_ms=5,
            batch_size=256 * 1024,
            max_request_size=4 * 1024 * 1024,
        )
        began = time.perf_counter()
        for key, value in records:
            producer.send(self.metrics_topic, key=key, value=value)
        producer.flush()
        producer.close()
        return time.perf_counter() - began


# ---------------------------------------------------------------------------- 1. limit
async def _raw_consume(bootstrap: str, topic: str, expected: int, timeout_s: float) -> dict:
    from aiokafka import AIOKafkaConsumer

    consumer = AIOKafkaConsumer(
        topic,
        bootstrap_servers=bootstrap,
        group_id=None,
        enable_auto_commit=False,
        auto_offset_reset="earliest",
        max_partition_fetch_bytes=8 * 1024 * 1024,
        fetch_max_bytes=64 * 1024 * 1024,
    )
    await consumer.start()
    records = samples = first_records = first_samples = 0
    first_at = None
    first_cpu = called_cpu = time.process_time()
    called_at = time.perf_counter()
    deadline = called_at + timeout_s
    try:
        while records < expected and time.perf_counter() < deadline:
            if not records:
                called_at, called_cpu = time.perf_counter(), time.process_time()
            batches = await consumer.getmany(timeout_ms=500, max_records=500)
            for messages in batches.values():
                for message in messages:
                    doc = json.loads(message.value)
                    samples += len(doc["samples"]) if "samples" in doc else 1
                    records += 1
            if first_at is None and records:
                # Timing starts after the first batch: connection and metadata set-up excluded.
                first_at, first_records, first_samples = time.perf_counter(), records, samples
                first_cpu = time.process_time()
        ended, ended_cpu = time.perf_counter(), time.process_time()
    finally:
        await consumer.stop()
    if first_records == records:
        # One batch held everything (tiny runs): time it from the call that returned it.
        first_at, first_records, first_samples, first_cpu = called_at, 0, 0, called_cpu
    seconds = max(ended - (first_at or ended), 1e-9)
    cpu_s = max(ended_cpu - first_cpu, 1e-9)
    return {
        "records": records,
        "samples": samples,
        "seconds": round(seconds, 4),
        "records_per_s": (records - first_records) / seconds,
        "samples_per_s": (samples - first_samples) / seconds,
        "cpu_share_of_a_core": cpu_s / seconds,
    }


def raw_consumer_limit(
    deployment: Deployment, dataset: Dataset, repeats: int = 3, timeout_s: float = 60.0
) -> dict:
    """A plain aiokafka getmany + json.loads loop over the topic: median of `repeats` reads."""
    runs = [
        asyncio.run(
            _raw_consume(
                deployment.broker.bootstrap,
                deployment.metrics_topic,
                len(dataset.records),
                timeout_s,
            )
        )
        for _ in range(repeats)
    ]
    return median_run(runs, "samples_per_s")


def median_run(runs: list[dict], key: str) -> dict:
    """The run with the median `key` (the upper one of an even count), with every run's
    figure in run order under `runs_<key>`."""
    ranked = sorted(runs, key=lambda r: r[key])
    return {**ranked[len(ranked) // 2], f"runs_{key}": [round(r[key]) for r in runs]}


# ---------------------------------------------------------------------------- 2. floor
def faust_noop_floor(
    deployment: Deployment, expected: int, timeout_s: float = 120.0, reader: str = "faust"
) -> dict:
    """A Faust agent that only counts, over the same single-sample topic, in a subprocess.

    `reader` "faust" iterates Faust's stream (the issue's floor); "worker" reads as the worker
    does (eager delivery, `take_ready` batches)."""
    tag = uuid.uuid4().hex[:6]
    out = deployment.workdir / f"noop-{tag}.json"
    log = deployment.workdir / f"noop-{tag}.log"
    env = {
        **os.environ,
        "BENCH_NOOP_BROKER": deployment.broker.url,
        "BENCH_NOOP_TOPIC": deployment.metrics_topic,
        "BENCH_NOOP_PARTITIONS": str(deployment.topics["metrics"].partitions),
        "BENCH_NOOP_APP_ID": f"novacron-bench-noop-{tag}",
        "BENCH_NOOP_EXPECT": str(expected),
        "BENCH_NOOP_OUT": str(out),
        "BENCH_NOOP_DATADIR": str(deployment.workdir / f"noop-data-{tag}"),
        "BENCH_NOOP_GC_GEN0_THRESHOLD": str(Settings.from_env().gc_gen0_threshold),
        "BENCH_NOOP_EVENT_LOOP": Settings.from_env().event_loop,
        "BENCH_NOOP_READER": reader,
    }
    command = [
        sys.executable,
        "-m",
        "faust",
        "-A",
        "bench._noop_app",
        "worker",
        "-l",
        "warn",
        "--web-port",
        str(free_port()),
        "--web-host",
        "127.0.0.1",
    ]
    with open(log, "ab") as fh:
        process = subprocess.Popen(
            command,
            env=env,
            cwd=ROOT,
            stdout=fh,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    began = time.monotonic()
    try:
        while not out.exists():
            if process.poll() is not None:
                raise RuntimeError(f"faust no-op worker exited: {log.read_text()[-2000:]}")
            if time.monotonic() - began > timeout_s:
                raise RuntimeError(f"faust no-op worker too slow: {log.read_text()[-2000:]}")
            time.sleep(0.1)
        time.sleep(0.05)
        result = json.loads(out.read_text())
    finally:
        stop_process(process, timeout_s=3.0)
    seconds = max(result["done_at"] - result["first_at"], 1e-9)
    return {
        "records": result["count"],
        "seconds": round(seconds, 3),
        "records_per_s": (result["count"] - result.get("first_count", 1)) / seconds,
    }


# ---------------------------------------------------------------------------- 3. workers
def _worker_env(deployment: Deployment, app_id: str, port: int, extra: dict[str, str]) -> dict:
    return {
        "NOVACRON_BROKER": deployment.broker.url,
        "NOVACRON_APP_ID": app_id,
        "NOVACRON_TOPIC_PREFIX": deployment.prefix,
        "NOVACRON_WEB_PORT": str(port),
        "NOVACRON_DATA_DIR": str(deployment.workdir / f"data-{app_id}"),
        "NOVACRON_LOG_LEVEL": "warn",
        **QUICK_GROUP_SETTINGS,
        **PER_SAMPLE_BAR,
        **extra,
    }


def _committed_lag(bootstrap: str, group: str, topic: str, partitions: int) -> int | None:
    """Records of `topic` not yet covered by the group's committed offsets (None: unknown)."""
    from kafka import KafkaAdminClient, KafkaConsumer, TopicPartition

    try:
        admin = KafkaAdminClient(bootstrap_servers=bootstrap, request_timeout_ms=3000)
        consumer = KafkaConsumer(bootstrap_servers=bootstrap, group_id=None)
        try:
            parts = [TopicPartition(topic, p) for p in range(partitions)]
            ends = consumer.end_offsets(parts)
            committed = admin.list_group_offsets({group: parts}).get(group, {})
        finally:
            consumer.close()
            admin.close()
        done = {tp: meta.offset for tp, meta in committed.items() if meta.offset >= 0}
        return sum(max(0, ends[tp] - done.get(tp, 0)) for tp in parts)
    except Exception:  # noqa: BLE001 - a broker without OffsetFetch answers: not reported
        return None


def cpu_seconds(pid: int) -> float | None:
    """User + system CPU time of a process so far (Linux /proc), None if unreadable."""
    try:
        with open(f"/proc/{pid}/stat") as fh:
            fields = fh.read().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
    except (OSError, ValueError, IndexError):
        return None


def find_py_spy() -> str | None:
    beside = Path(sys.executable).parent / "py-spy"
    return str(beside) if beside.exists() else shutil.which("py-spy")


def run_worker(
    deployment: Deployment,
    expected_samples: int,
    name: str,
    extra_env: dict[str, str] | None = None,
    timeout_s: float = 600.0,
    profile_s: float = 0.0,
    wait_commit: bool = True,
) -> dict:
    """Start a real worker on a pre-filled topic; time it until /stats counts every sample.

    `samples_per_s` is the rate over the second half of the samples (VMs past warm-up);
    `samples_per_s_overall` from the first poll after readiness to the end.
    With `profile_s` > 0 and py-spy available, the worker is sampled for that many seconds.
    """
    app_id = f"novacron-bench-{name}-{uuid.uuid4().hex[:6]}"
    port = free_port()
    log = deployment.workdir / f"worker-{app_id}.log"
    process = start_worker(_worker_env(deployment, app_id, port, extra_env or {}), log)
    base = f"http://127.0.0.1:{port}"
    spy = None
    profile_path = deployment.workdir / f"profile-{name}.txt"
    try:
        ready_s = wait_ready(base, process)
        spy_bin = find_py_spy() if profile_s > 0 else None
        if spy_bin:
            spy = subprocess.Popen(
                [
                    spy_bin,
                    "record",
                    "--pid",
                    str(process.pid),
                    "--duration",
                    str(max(1, round(profile_s))),
                    "--nonblocking",
                    "--format",
                    "raw",
                    "--rate",
                    "200",
                    "-o",
                    str(profile_path),
                ],
                stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL,
            )
        series: list[tuple[float, int]] = []
        cpu: list[float | None] = []
        deadline = time.monotonic() + timeout_s
        samples = 0
        while samples < expected_samples:
            if process.poll() is not None:
                raise RuntimeError(f"worker exited: {log.read_text()[-2000:]}")
            if time.monotonic() > deadline:
                raise RuntimeError(f"worker processed {samples} of {expected_samples} samples")
            stats = _get_json(f"{base}/stats", timeout=5.0) or {}
            samples = int(stats.get("samples", samples))
            series.append((time.monotonic(), samples))
            cpu.append(cpu_seconds(process.pid))
            time.sleep(0.2)
        done_at = time.monotonic()
        committed_after_s = None
        lag = None
        topic = deployment.topics["metrics"]
        while wait_commit and time.monotonic() - done_at < 15.0:
            lag = _committed_lag(deployment.broker.bootstrap, app_id, topic.name, topic.partitions)
            if lag is None or lag <= 0:
                break
            time.sleep(0.25)
        if lag is not None and lag <= 0:
            committed_after_s = round(time.monotonic() - series[0][0], 3)
        if spy is not None:
            try:
                spy.wait(timeout=profile_s + 30)
            except subprocess.TimeoutExpired:
                spy.kill()
        stats = _get_json(f"{base}/stats", timeout=5.0) or {}
    finally:
        if spy is not None and spy.poll() is None:
            spy.kill()
        stop_process(process, timeout_s=3.0)
    t0, s0 = series[0]
    t1, s1 = series[-1]
    i_half, half = next((i, p) for i, p in enumerate(series) if p[1] >= expected_samples / 2)
    # CPU the worker got over the second half: on a shared machine it may get less than a
    # core, and samples per CPU-second is the figure that does not depend on that.
    cpu_half = cpu[-1] - cpu[i_half] if cpu[-1] is not None and cpu[i_half] is not None else None
    if half[0] >= t1 or t0 >= t1:
        # Everything processed between two polls (tiny runs): count from readiness instead.
        t0, s0 = series[0][0] - 0.2, 0
        half = (t0, s0)
    return {
        "samples": s1,
        "records": sum((stats.get("records") or {}).values()),
        "ready_s": round(ready_s, 2),
        "seconds": round(t1 - t0, 3),
        "samples_per_s_overall": (s1 - s0) / max(t1 - t0, 1e-9),
        "samples_per_s": (s1 - half[1]) / max(t1 - half[0], 1e-9),
        "cpu_share_of_a_core": None if cpu_half is None else cpu_half / max(t1 - half[0], 1e-9),
        "samples_per_cpu_s": None if not cpu_half else (s1 - half[1]) / cpu_half,
        "committed_all_after_s": committed_after_s,
        "committed_lag_at_end": lag,
        "worker_alert_stats": stats.get("alerts"),
        "worker_forecasts": stats.get("forecasts"),
        "worker_actions": stats.get("actions"),
        "profile": str(profile_path) if spy is not None and profile_path.exists() else None,
    }


# ---------------------------------------------------------------------------- 4. latency
def _percentiles(values: list[float]) -> dict:
    import numpy as np

    if not values:
        return {"count": 0}
    arr = np.asarray(values) * 1000.0
    return {
        "count": len(values),
        "p50_ms": float(np.percentile(arr, 50)),
        "p95_ms": float(np.percentile(arr, 95)),
        "p99_ms": float(np.percentile(arr, 99)),
        "max_ms": float(arr.max()),
    }


def _spread(values: list[float]) -> dict:
    import numpy as np

    if not values:
        return {"count": 0}
    arr = np.asarray(values, dtype=float)
    return {
        "count": len(values),
        "p50": float(np.percentile(arr, 50)),
        "p95": float(np.percentile(arr, 95)),
        "max": float(arr.max()),
    }


class _Listener(threading.Thread):
    """Reads topics as records arrive: per record its topic id, the time it was received, the
    record's own timestamp (when its producer took it: a worker's output is stamped as it
    appends it to a batch) and its decoded value."""

    def __init__(self, deployment: Deployment, topic_ids: Iterable[str]) -> None:
        super().__init__(daemon=True)
        from kafka import KafkaConsumer

        self.names = {deployment.topics[t].name: t for t in topic_ids}
        self.consumer = KafkaConsumer(
            *self.names,
            bootstrap_servers=deployment.broker.bootstrap,
            group_id=None,
            auto_offset_reset="earliest",
            enable_auto_commit=False,
            fetch_max_wait_ms=5,
        )
        self.received: list[tuple[str, float, float, dict]] = []
        self.stop_flag = threading.Event()
        self.ready = threading.Event()  # partitions assigned and positioned: nothing is missed

    def start_reading(self, timeout_s: float = 30.0) -> None:
        """Start, and return once the consumer reads from the start of every partition (a
        record produced before that would otherwise wait for the first fetch's set-up)."""
        self.start()
        if not self.ready.wait(timeout_s):
            raise RuntimeError(f"the listener got no partitions of {sorted(self.names)}")

    def run(self) -> None:
        while not self.consumer.assignment() and not self.stop_flag.is_set():
            self.consumer.poll(timeout_ms=50)
        for partition in self.consumer.assignment():
            self.consumer.position(partition)  # blocks until the offset is known
        self.ready.set()
        while not self.stop_flag.is_set():
            polled = self.consumer.poll(timeout_ms=50)
            now = time.time()
            for messages in polled.values():
                for m in messages:
                    topic_id = self.names[m.topic]
                    self.received.append((topic_id, now, m.timestamp / 1000, json.loads(m.value)))
        self.consumer.close()


class _StatsMonitor(threading.Thread):
    """Polls a worker's /stats: (wall time, samples processed, event ts of the last sample)."""

    def __init__(self, base_url: str, every_s: float = 0.25) -> None:
        super().__init__(daemon=True)
        self.base_url = base_url
        self.every_s = every_s
        self.points: list[tuple[float, int, float | None]] = []
        self.stop_flag = threading.Event()

    def run(self) -> None:
        while not self.stop_flag.wait(self.every_s):
            stats = _get_json(f"{self.base_url}/stats", timeout=2.0) or {}
            if "samples" in stats:
                self.points.append((time.time(), stats["samples"], stats.get("last_sample_ts")))


@dataclass
class _Production:
    """What a paced producer sent: each sample's wall-clock send time, by (vm_id, ts) and per
    VM in event-time order, and (wall time, samples sent so far) after each tick."""

    sent_at: dict[tuple[str, float], float]
    sent_by_vm: dict[str, list[tuple[float, float]]]
    produced: list[tuple[float, int]]
    seconds: float
    lateness_s: float

    def note(self, vm_id: str, ts: float, at: float) -> None:
        """Record that the sample (vm_id, ts) was handed to the producer at wall time `at`."""
        self.sent_at[_sample_key(vm_id, ts)] = at
        self.sent_by_vm.setdefault(vm_id, []).append((ts, at))

    def sent_time(self, vm_id: object, ts: object) -> float | None:
        """When the sample a message names (its vm_id and event ts) was produced, if it was."""
        if not isinstance(ts, int | float):
            return None
        return self.sent_at.get(_sample_key(vm_id, ts))


def _sample_key(vm_id: object, ts: float) -> tuple[object, float]:
    # event times come back through JSON: rounded to the millisecond, they match
    return (vm_id, round(float(ts), 3))


def _produce_paced(
    deployment: Deployment, fleet: Fleet, ticks: int, tick_rate: float, batched: bool
) -> _Production:
    """Produce the fleet's records tick by tick at `tick_rate` ticks per second, each sample
    noted with the wall-clock time it was handed to the producer."""
    from kafka import KafkaProducer

    producer = KafkaProducer(bootstrap_servers=deployment.broker.bootstrap, acks=1, linger_ms=0)
    out = _Production({}, {}, [], 0.0, 0.0)
    step = 1.0 / tick_rate
    try:
        began = time.monotonic()
        for tick, records in fleet.records(ticks, time.time(), step, batch=batched):
            delay = began + tick * step - time.monotonic()
            if delay > 0:
                time.sleep(delay)
            else:
                out.lateness_s = max(out.lateness_s, -delay)
            for key, value in records:
                now = time.time()
                for sample in value["samples"] if batched else (value,):
                    out.note(sample["vm_id"], sample["ts"], now)
                producer.send(
                    deployment.metrics_topic,
                    key=key.encode(),
                    value=json.dumps(value, separators=(",", ":")).encode(),
                )
            out.produced.append((time.time(), (tick + 1) * len(fleet.vm_ids)))
        producer.flush()
        out.seconds = time.monotonic() - began
    finally:
        producer.close()
    return out


def produce_to_consumer_latency(
    deployment: Deployment, rate: float, vms: int, seconds: float, samples_per_record: int = 1
) -> dict:
    """The broker's own hop, with no worker: records produced for about `seconds` as
    `produce_to_alert_latency` produces them, read back by a plain consumer (fetch wait 5 ms)
    in the same process.

    It is what any pipeline on this machine and broker pays at least, once per hop, at this
    rate: the latency runs' counterpart of the raw-consumer limit.
    """
    batched = samples_per_record > 1
    ticks = max(1, round(seconds * rate / vms))
    fleet = Fleet(vms, seed=11, vms_per_host=samples_per_record if batched else 4)
    listener = _Listener(deployment, ("metrics",))
    listener.start_reading()
    try:
        sent = _produce_paced(deployment, fleet, ticks, rate / vms, batched)
        expected = ticks * (math.ceil(vms / samples_per_record) if batched else vms)
        deadline = time.monotonic() + 30.0
        while len(listener.received) < expected and time.monotonic() < deadline:
            time.sleep(0.05)
    finally:
        listener.stop_flag.set()
        listener.join(timeout=5)
    hop = []
    for _topic, received_at, _stamped, value in listener.received:
        first = (value.get("samples") or [{}])[0] if batched else value  # stands for the record
        at = sent.sent_time(first.get("vm_id"), first.get("ts"))
        if at is not None:
            hop.append(received_at - at)
    return {
        "target_rate_samples_per_s": rate,
        "samples_per_record": samples_per_record,
        "achieved_produce_rate": ticks * vms / max(sent.seconds, 1e-9),
        "ticks": ticks,
        "records_produced": expected,
        "produce_to_consumer": _percentiles(hop),
    }


def produce_to_alert_latency(
    deployment: Deployment,
    rate: float,
    vms: int,
    warmup_ticks: int,
    anomaly_ticks: int,
    tail_ticks: int,
    anomalies: int,
    steady_ticks: int = 0,
    forecast_window_s: float = 2.0,
    window_grace_s: float = 0.5,
    fetch_max_wait_ms: int | None = None,
    samples_per_record: int = 1,
) -> dict:
    """Fixed-rate records with injected anomalies through one real worker.

    With `samples_per_record` 1 each record is one sample; above 1 each record carries that many
    VMs' samples of one tick (a host's batch), all stamped with the record's produce time.

    The latency of an alert is counted from the wall-clock time its sample (same vm_id and ts)
    was handed to the producer, up to two ends:
    - `produce_to_alert`: the alert record's timestamp, the time the worker handed it to its
      producer;
    - `produce_to_alert_received`: the time the listener here received it, which adds the
      broker's hop out and the listener's own fetch.
    A forecast is issued when a VM's sample with event time >= window end + grace closes the
    window; its latency is counted from the produce time of that sample, to the same two ends.
    The worker's forecast window is shortened to `forecast_window_s` so that windows close
    within the run. With `fetch_max_wait_ms` the worker runs with NOVACRON_FETCH_MAX_WAIT_MS at
    that value (None: Faust's own 1500 ms).

    The listener reads the output topics only: reading `vm.metrics` too doubled the broker's
    fetch work (`produce_to_consumer_latency` measures that hop in a run of its own).

    The anomalies start one after another, evenly spread over `steady_ticks` after the warm-up
    (all at the end of the warm-up when it is 0), each on another VM, so that the percentiles
    describe a worker in its steady state rather than its first seconds. For the same reason
    only messages about samples produced after the warm-up are counted; the alerts the
    fleet raised on its own during the warm-up are reported apart.
    """
    app_id = f"novacron-bench-latency-{uuid.uuid4().hex[:6]}"
    port = free_port()
    log = deployment.workdir / f"worker-{app_id}.log"
    windows = {
        "NOVACRON_FORECAST_WINDOW_S": str(forecast_window_s),
        "NOVACRON_WINDOW_GRACE_S": str(window_grace_s),
    }
    env = _worker_env(deployment, app_id, port, windows)
    # None: Faust's own 1500 ms, as the worker behaved before NOVACRON_FETCH_MAX_WAIT_MS
    env["NOVACRON_FETCH_MAX_WAIT_MS"] = str(fetch_max_wait_ms or 1500)
    process = start_worker(env, log)
    listener = _Listener(deployment, ("anomalies", "forecasts"))
    ticks = warmup_ticks + steady_ticks + anomaly_ticks + tail_ticks
    batched = samples_per_record > 1
    fleet = Fleet(
        vms, seed=11, vms_per_host=samples_per_record if batched else 4, day_seconds=600.0
    )
    kinds = ("cpu_spike", "io_bottleneck", "network_saturation", "memory_leak")
    for i in range(anomalies):
        first = warmup_ticks + (i * steady_ticks) // max(anomalies, 1)
        fleet.inject((i * 7) % vms, kinds[i % len(kinds)], first, anomaly_ticks)
    base = f"http://127.0.0.1:{port}"
    monitor = _StatsMonitor(base)
    try:
        wait_ready(base, process)
        listener.start_reading()
        monitor.start()
        sent = _produce_paced(deployment, fleet, ticks, rate / vms, batched)
        expected = ticks * vms
        deadline = time.monotonic() + 60.0
        while time.monotonic() < deadline:
            if (_get_json(f"{base}/stats") or {}).get("samples", 0) >= expected:
                break
            time.sleep(0.2)
        time.sleep(1.0)
    finally:
        monitor.stop_flag.set()
        listener.stop_flag.set()
        listener.join(timeout=5)
        stop_process(process, timeout_s=3.0)
    # the wall time the first steady tick began (0.0: no warm-up)
    steady_from = (
        sent.produced[warmup_ticks - 1][0] if 0 < warmup_ticks <= len(sent.produced) else 0.0
    )
    alert_emitted: list[float] = []
    alert_received: list[float] = []
    open_emitted: list[float] = []
    alerts_in_warmup = 0
    first_forecast: dict[tuple[str, float], tuple[float, float]] = {}
    injected = {fleet.vm_ids[inj.vm] for inj in fleet.injections}
    open_on_injected = 0
    for topic_id, received_at, emitted_at, value in listener.received:
        vm_id = value.get("vm_id")
        if topic_id == "forecasts":
            issued = value.get("issued_at")
            if vm_id in sent.sent_by_vm and isinstance(issued, int | float):
                key = (vm_id, float(issued))
                first_forecast[key] = min(
                    (emitted_at, received_at), first_forecast.get(key, (emitted_at, received_at))
                )
            continue
        at = sent.sent_time(vm_id, value.get("ts"))
        if at is None or value.get("status") == "resolved":
            continue
        if at < steady_from:
            alerts_in_warmup += 1
            continue
        alert_emitted.append(emitted_at - at)
        alert_received.append(received_at - at)
        if value.get("status") == "open":
            open_emitted.append(emitted_at - at)
            open_on_injected += vm_id in injected
    forecast_emitted: list[float] = []
    forecast_received: list[float] = []
    for (vm_id, issued), (emitted_at, received_at) in first_forecast.items():
        by_ts = sent.sent_by_vm[vm_id]
        i = bisect.bisect_left([ts for ts, _ in by_ts], issued + window_grace_s - 1e-6)
        if i < len(by_ts) and by_ts[i][1] >= steady_from:
            forecast_emitted.append(emitted_at - by_ts[i][1])
            forecast_received.append(received_at - by_ts[i][1])
    # Worker backlog while producing: samples produced but not yet counted, and how far behind
    # the wall clock the last processed sample's event time was (event time = produce time).
    backlog: list[float] = []
    behind: list[float] = []
    j = 0
    produced = sent.produced
    end_of_production = produced[-1][0] if produced else 0.0
    for at, done, last_ts in monitor.points:
        if at > end_of_production:
            break
        while j + 1 < len(produced) and produced[j + 1][0] <= at:
            j += 1
        if produced and produced[j][0] <= at:
            backlog.append(max(0, produced[j][1] - done))
        if last_ts is not None:
            behind.append(at - float(last_ts))
    return {
        "worker_backlog_samples_while_producing": _spread(backlog),
        "worker_behind_wall_clock_s_while_producing": _spread(behind),
        "target_rate_samples_per_s": rate,
        "samples_per_record": samples_per_record,
        "consumer_fetch_max_wait_ms": fetch_max_wait_ms or 1500,
        "achieved_produce_rate": ticks * vms / max(sent.seconds, 1e-9),
        "max_producer_lateness_s": round(sent.lateness_s, 4),
        "vms": vms,
        "ticks": ticks,
        "seconds_producing": round(sent.seconds, 1),
        "injected_anomalies": anomalies,
        "alerts_received": sum(1 for t, *_ in listener.received if t == "anomalies"),
        "forecast_messages_received": sum(1 for t, *_ in listener.received if t == "forecasts"),
        "forecast_window_s": forecast_window_s,
        "window_grace_s": window_grace_s,
        "open_alerts_on_injected_vms": open_on_injected,
        "warmup_ticks": warmup_ticks,
        "alerts_during_warmup_not_counted": alerts_in_warmup,
        "produce_to_alert": _percentiles(alert_emitted),
        "produce_to_alert_received": _percentiles(alert_received),
        "produce_to_open_alert": _percentiles(open_emitted),
        "produce_to_forecast": _percentiles(forecast_emitted),
        "produce_to_forecast_received": _percentiles(forecast_received),
    }
