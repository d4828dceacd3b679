"""`novacron demo`: embedded broker, topics, a worker and a simulated fleet, with live progress."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections import Counter
from pathlib import Path

from streams.admin import create_topics
from streams.broker import EmbeddedBroker, free_port
from streams.topics import load_topics

QUICK_GROUP_SETTINGS = {
    # The embedded broker completes a group join in max(1 s, session timeout / 2): with these a
    # worker is consuming ~3 s after start instead of ~32 s with Faust's defaults.
    "NOVACRON_SESSION_TIMEOUT_S": "2",
    "NOVACRON_HEARTBEAT_INTERVAL_S": "0.5",
}
DEMO_PACE = {
    # The demo's simulated day lasts 10 minutes, so forecasts work on 10-second windows and
    # scaling trusts its bands after 3 minutes instead of 36 one-minute windows, and the alert
    # bar holds for a VM sampled every 2 s (five minutes of that day) instead of 300 s.
    "NOVACRON_ENGINE_THRESHOLD_INTERVAL": "2",
    "NOVACRON_FORECAST_WINDOW_S": "10",
    "NOVACRON_WINDOW_GRACE_S": "2",
    "NOVACRON_SCALING_ACT_AFTER_WINDOWS": "18",
}

# The integration tests' and benchmarks' simulated fleets sample every second or faster: they
# keep the base bar per sample, as they were written and measured with, rather than one 300
# times rarer for their wall-clock cadence.
PER_SAMPLE_BAR = {"NOVACRON_ENGINE_THRESHOLD_INTERVAL": "0"}


def _get_json(url: str, timeout: float = 1.0) -> dict | None:
    try:
        with urllib.request.urlopen(url, timeout=timeout) as response:  # noqa: S310 - loopback
            return json.loads(response.read())
    except (OSError, ValueError):
        return None


def wait_ready(base_url: str, process: subprocess.Popen, timeout_s: float = 90.0) -> float:
    """Seconds until the worker's /ready answers 200; raises if it dies or times out."""
    began = time.monotonic()
    while time.monotonic() - began < timeout_s:
        if process.poll() is not None:
            raise RuntimeError(f"worker exited with code {process.returncode}")
        if (_get_json(f"{base_url}/ready") or {}).get("ready"):
            return time.monotonic() - began
        time.sleep(0.2)
    raise RuntimeError(f"worker not ready after {timeout_s} s")


def start_worker(env: dict[str, str], log_path: Path) -> subprocess.Popen:
    log = open(log_path, "ab")  # noqa: SIM115 - owned by the child for its lifetime
    return subprocess.Popen(
        [sys.executable, "-m", "streams.cli", "worker"],
        env={**os.environ, **env},
        stdout=log,
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )


def stop_process(process: subprocess.Popen | None, timeout_s: float = 10.0) -> None:
    """SIGTERM the process group, SIGKILL it if it lingers."""
    if process is None or process.poll() is not None:
        return
    try:
        os.killpg(process.pid, signal.SIGTERM)
        process.wait(timeout=timeout_s)
    except subprocess.TimeoutExpired:
        os.killpg(process.pid, signal.SIGKILL)
        process.wait(timeout=5)
    except ProcessLookupError:
        pass


def run_demo(duration_s: float | None, vms: int, rate: float, batch: bool, seed: int) -> int:
    """Run everything until `duration_s` passes (or Ctrl-C), then print a summary."""
    from kafka import KafkaConsumer

    workdir = Path(tempfile.mkdtemp(prefix="novacron-demo-"))
    broker = EmbeddedBroker(log_path=workdir / "broker.log")
    worker = simulator = None
    interrupted = False
    totals: Counter = Counter()
    stats: dict = {}
    previous_signal = signal.signal(signal.SIGTERM, signal.default_int_handler)
    try:
        print(f"demo: starting the embedded broker (logs in {workdir})", flush=True)
        broker.start()
        specs = load_topics()
        create_topics(broker.bootstrap, specs.values())
        print(
            f"demo: broker on {broker.bootstrap}; topics from topics.yaml: "
            f"{', '.join(s.name for s in specs.values())}",
            flush=True,
        )
        web_port = free_port()
        base_url = f"http://127.0.0.1:{web_port}"
        env = {
            "NOVACRON_BROKER": broker.url,
            "NOVACRON_WEB_PORT": str(web_port),
            "NOVACRON_DATA_DIR": str(workdir / "worker-data"),
            "NOVACRON_LOG_LEVEL": "warn",
            **QUICK_GROUP_SETTINGS,
            **DEMO_PACE,
        }
        worker = start_worker(env, workdir / "worker.log")
        ready_s = wait_ready(base_url, worker)
        print(f"demo: worker ready in {ready_s:.1f} s", flush=True)
        print(
            f"demo: dashboard and views: {base_url}/  {base_url}/stats  {base_url}/metrics",
            flush=True,
        )
        run_s = duration_s if duration_s else 600.0
        labels = workdir / "labels.jsonl"
        simulator = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "streams.cli",
                "simulate",
                "--bootstrap",
                broker.bootstrap,
                "--vms",
                str(vms),
                "--rate",
                str(rate),
                "--duration",
                str(run_s),
                "--seed",
                str(seed),
                "--labels",
                str(labels),
                "--anomalies",
                str(max(1, vms // 8)),
                "--warmup",
                str(min(run_s * 0.4, 60.0)),
                *(["--batch"] if batch else []),
            ],
            stdout=subprocess.DEVNULL,
            stderr=open(workdir / "simulator.log", "ab"),  # noqa: SIM115
            start_new_session=True,
        )
        print(
            f"demo: simulating {vms} VMs at {rate:g} samples/s each"
            f"{' (batched per host)' if batch else ''}; ground truth in {labels}",
            flush=True,
        )
        outputs = {specs[t].name: t for t in ("anomalies", "forecasts", "actions", "dlq")}
        print(f"demo: output topics: {', '.join(outputs)}; Ctrl-C stops", flush=True)
        consumer = KafkaConsumer(
            *outputs,
            bootstrap_servers=broker.bootstrap,
            auto_offset_reset="earliest",
            consumer_timeout_ms=500,
        )
        began = time.monotonic()
        last_print, last_samples = began, 0
        while True:
            for message in consumer:
                topic_id = outputs[message.topic]
                totals[topic_id] += 1
                if topic_id == "anomalies":
                    alert = json.loads(message.value)
                    totals[f"{alert['status']}:{alert.get('severity')}"] += 1
                    if alert["status"] == "open":
                        # severities part at 99.99, 99.999 and 99.9999: show the nines
                        print(
                            f"  alert  {alert['vm_id']} {alert.get('severity')} "
                            f"{alert.get('kind')} score={alert['score']:.7g}",
                            flush=True,
                        )
            now = time.monotonic()
            if now - last_print >= 2.0:
                stats = _get_json(f"{base_url}/stats") or stats
                samples = stats.get("samples", 0)
                print(
                    f"[{now - began:5.0f}s] {(samples - last_samples) / (now - last_print):7.0f}"
                    f" samples/s | {samples} samples | incidents opened {totals['open:low']}"
                    f" low {totals['open:medium']} medium {totals['open:high']} high "
                    f"{totals['open:critical']} critical | forecasts {totals['forecasts']} | "
                    f"actions {totals['actions']} | dlq {totals['dlq']}",
                    flush=True,
                )
                last_print, last_samples = now, samples
            if simulator.poll() is not None:
                if duration_s:
                    break
                seed += 1  # endless demo: a fresh stretch of fleet life
                simulator = subprocess.Popen(
                    simulator.args[:9] + [str(seed)] + simulator.args[10:],
                    stdout=subprocess.DEVNULL,
                    start_new_session=True,
                )
            if worker.poll() is not None:
                print(
                    f"demo: worker exited with code {worker.returncode}; see "
                    f"{workdir / 'worker.log'}",
                    flush=True,
                )
                return 1
        time.sleep(3.0)
        for _ in consumer:
            pass
        consumer.close()
    except KeyboardInterrupt:
        interrupted = True
        print("\ndemo: stopping", flush=True)
    finally:
        signal.signal(signal.SIGTERM, previous_signal)
        stop_process(simulator)
        stop_process(worker)
        broker.stop()
    stats = stats or {}
    print(
        f"demo summary: {stats.get('samples', 0)} samples processed, "
        f"{totals['anomalies']} anomaly messages ({totals['open:critical'] + totals['open:high']}"
        f" high/critical incidents), {totals['forecasts']} forecasts, {totals['actions']} "
        f"actions, {totals['dlq']} dead letters; logs in {workdir}",
        flush=True,
    )
    return 0 if not interrupted or duration_s is None else 130
