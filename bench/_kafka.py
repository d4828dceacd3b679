"""Broker-side measurements: raw-consumer limit, Faust no-op floor, real workers, latency."""

from __future__ import annotations

import asyncio
import bisect
import json
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
def faust_noop_floor(deployment: Deployment, expected: int, timeout_s: float = 120.0) -> dict:
    """A Faust agent that only counts, over the same single-sample topic, in a subprocess."""
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
        "records_per_s": (result["count"] - 1) / seconds,
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


class _OutputListener(threading.Thread):
    """Reads the output topics and vm.metrics itself as records arrive, with receive times."""

    def __init__(self, deployment: Deployment) -> None:
        super().__init__(daemon=True)
        from kafka import KafkaConsumer

        self.names = {deployment.topics[t].name: t for t in ("metrics", "anomalies", "forecasts")}
        self.consumer = KafkaConsumer(
            *self.names,
            bootstrap_servers=deployment.broker.bootstrap,
            group_id=None,
            auto_offset_reset="earliest",
            enable_auto_commit=False,
            fetch_max_wait_ms=5,
        )
        self.received: list[tuple[str, float, dict]] = []
        self.stop_flag = threading.Event()

    def run(self) -> None:
        while not self.stop_flag.is_set():
            polled = self.consumer.poll(timeout_ms=50)
            now = time.time()
            for messages in polled.values():
                for m in messages:
                    self.received.append((self.names[m.topic], now, json.loads(m.value)))
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

    Latency of an alert = the listener's receive time minus the wall-clock time its sample
    (same vm_id and ts) was handed to the producer. A forecast is issued when a VM's sample
    with event time >= window end + grace closes the window; its latency is counted from the
    produce time of that sample. The worker's forecast window is shortened to
    `forecast_window_s` so that windows close within the run. With `fetch_max_wait_ms` the
    worker runs with NOVACRON_FETCH_MAX_WAIT_MS at that value (None: Faust's own 1500 ms).

    The anomalies start one after another, evenly spread over `steady_ticks` after the warm-up
    (all at the end of the warm-up when it is 0), each on another VM, so that the percentiles
    describe a worker in its steady state rather than its first seconds.
    """
    from kafka import KafkaProducer

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
    listener = _OutputListener(deployment)
    producer = KafkaProducer(bootstrap_servers=deployment.broker.bootstrap, acks=1, linger_ms=0)
    ticks = warmup_ticks + steady_ticks + anomaly_ticks + tail_ticks
    tick_rate = rate / vms
    step = 1.0 / tick_rate
    batched = samples_per_record > 1
    fleet = Fleet(
        vms, seed=11, vms_per_host=samples_per_record if batched else 4, day_seconds=600.0
    )
    kinds = ("cpu_spike", "io_bottleneck", "network_saturation", "memory_leak")
    for i in range(anomalies):
        first = warmup_ticks + (i * steady_ticks) // max(anomalies, 1)
        fleet.inject((i * 7) % vms, kinds[i % len(kinds)], first, anomaly_ticks)
    sent_at: dict[tuple[str, float], float] = {}
    sent_by_vm: dict[str, list[tuple[float, float]]] = {}
    base = f"http://127.0.0.1:{port}"
    monitor = _StatsMonitor(base)
    produced: list[tuple[float, int]] = []
    try:
        wait_ready(base, process)
        listener.start()
        monitor.start()
        start_ts = time.time()
        began = time.monotonic()
        lateness = 0.0
        for tick, records in fleet.records(ticks, start_ts, step, batch=batched):
            delay = began + tick * step - time.monotonic()
            if delay > 0:
                time.sleep(delay)
            else:
                lateness = max(lateness, -delay)
            for key, value in records:
                now = time.time()
                for sample in value["samples"] if batched else (value,):
                    sent_at[(sample["vm_id"], round(sample["ts"], 3))] = now
                    sent_by_vm.setdefault(sample["vm_id"], []).append((sample["ts"], now))
                producer.send(
                    deployment.metrics_topic,
                    key=key.encode(),
                    value=json.dumps(value, separators=(",", ":")).encode(),
                )
            produced.append((time.time(), (tick + 1) * vms))
        producer.flush()
        produced_s = time.monotonic() - began
        expected = ticks * vms
        deadline = time.monotonic() + 60.0
        while time.monotonic() < deadline:
            if (_get_json(f"{base}/stats") or {}).get("samples", 0) >= expected:
                break
            time.sleep(0.2)
        time.sleep(1.0)
    finally:
        producer.close()
        monitor.stop_flag.set()
        listener.stop_flag.set()
        listener.join(timeout=5)
        stop_process(process, timeout_s=3.0)
    alert_latency: list[float] = []
    open_latency: list[float] = []
    first_forecast: dict[tuple[str, float], float] = {}
    injected = {fleet.vm_ids[inj.vm] for inj in fleet.injections}
    open_on_injected = 0
    transport: list[float] = []
    for topic_id, received_at, value in listener.received:
        vm_id = value.get("vm_id")
        if topic_id == "metrics":
            if batched:  # the record's first sample stands for the record
                vm_id = (value.get("samples") or [{}])[0].get("vm_id")
            sent = sent_at.get((vm_id, round(float(value.get("ts", 0.0)), 3)))
            if sent is not None:
                transport.append(received_at - sent)
            continue
        if topic_id == "forecasts":
            issued = value.get("issued_at")
            if vm_id in sent_by_vm and isinstance(issued, int | float):
                key = (vm_id, float(issued))
                first_forecast[key] = min(received_at, first_forecast.get(key, received_at))
            continue
        ts = value.get("ts")
        if not isinstance(ts, int | float) or vm_id is None:
            continue
        sent = sent_at.get((vm_id, round(float(ts), 3)))
        if sent is None or value.get("status") == "resolved":
            continue
        alert_latency.append(received_at - sent)
        if value.get("status") == "open":
            open_latency.append(received_at - sent)
            open_on_injected += vm_id in injected
    forecast_latency = []
    for (vm_id, issued), received_at in first_forecast.items():
        sent = sent_by_vm[vm_id]
        i = bisect.bisect_left([ts for ts, _ in sent], issued + window_grace_s - 1e-6)
        if i < len(sent):
            forecast_latency.append(received_at - sent[i][1])
    # Worker backlog while producing: samples produced but not yet counted, and how far behind
    # the wall clock the last processed sample's event time was (event time = produce time).
    backlog: list[float] = []
    behind: list[float] = []
    j = 0
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
        "achieved_produce_rate": ticks * vms / max(produced_s, 1e-9),
        "max_producer_lateness_s": round(lateness, 4),
        "vms": vms,
        "ticks": ticks,
        "seconds_producing": round(produced_s, 1),
        "injected_anomalies": anomalies,
        "alerts_received": sum(1 for t, _, _ in listener.received if t == "anomalies"),
        "forecast_messages_received": sum(1 for t, _, _ in listener.received if t == "forecasts"),
        "forecast_window_s": forecast_window_s,
        "window_grace_s": window_grace_s,
        "open_alerts_on_injected_vms": open_on_injected,
        "produce_to_raw_consumer": _percentiles(transport),
        "produce_to_alert": _percentiles(alert_latency),
        "produce_to_open_alert": _percentiles(open_latency),
        "produce_to_forecast": _percentiles(forecast_latency),
    }
