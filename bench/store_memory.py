"""Worker resident memory with each Faust table store, after checkpointing a fleet's state.

`python -m bench.store_memory [--vms 2000] [--ticks 120] [--stores memory:// rocksdb://]`

Starts the embedded broker, fills `vm.metrics` with batched records of a simulated fleet, and
runs one worker per store over it with two-second forecast windows and a forecasting
checkpoint every 5 windows, so that every VM's model and forecasting state is written to the
tables many times. Prints each worker's resident memory once it has processed every sample,
and its ratio to the first store's, measured in the same run.
"""

from __future__ import annotations

import argparse
import tempfile
import time
import uuid
from pathlib import Path

from bench._kafka import Deployment, _worker_env, fleet_records
from streams.broker import EmbeddedBroker, free_port
from streams.demo import _get_json, start_worker, stop_process, wait_ready

SETTINGS = {
    "NOVACRON_FORECAST_WINDOW_S": "2",
    "NOVACRON_WINDOW_GRACE_S": "0.5",
    "NOVACRON_FORECAST_CHECKPOINT_EVERY": "5",
    # the embedded broker under-reports end offsets (see the README's delivery section)
    "NOVACRON_RECOVERY_CONSISTENCY_CHECK": "0",
}


def rss_bytes(pid: int) -> int:
    with open(f"/proc/{pid}/status") as fh:
        for line in fh:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
    raise RuntimeError(f"no VmRSS for process {pid}")


def measure(broker: EmbeddedBroker, workdir: Path, store: str, dataset, settle_s: float) -> dict:
    deployment = Deployment.create(broker, workdir, store.split(":")[0][:4])
    deployment.produce(dataset.records)
    port = free_port()
    app_id = f"novacron-bench-store-{uuid.uuid4().hex[:6]}"
    env = _worker_env(deployment, app_id, port, {**SETTINGS, "NOVACRON_STORE": store})
    process = start_worker(env, workdir / f"worker-{app_id}.log")
    base = f"http://127.0.0.1:{port}"
    try:
        wait_ready(base, process)
        began = time.monotonic()
        while (_get_json(f"{base}/stats", timeout=5.0) or {}).get("samples", 0) < dataset.samples:
            if process.poll() is not None:
                raise RuntimeError(f"worker with {store} exited")
            time.sleep(0.5)
        seconds = time.monotonic() - began
        time.sleep(settle_s)  # the last checkpoints of the batch are written
        rss = rss_bytes(process.pid)
    finally:
        stop_process(process, timeout_s=5.0)
    return {"store": store, "seconds": round(seconds, 1), "rss_mib": round(rss / 2**20)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--vms", type=int, default=2000)
    parser.add_argument("--ticks", type=int, default=120)
    parser.add_argument("--stores", nargs="+", default=["memory://", "rocksdb://"])
    args = parser.parse_args()
    workdir = Path(tempfile.mkdtemp(prefix="novacron-store-memory-"))
    dataset = fleet_records(args.vms, args.ticks, batch=True, step_s=1.0)
    with EmbeddedBroker(log_path=workdir / "broker.log") as broker:
        rows = [measure(broker, workdir, store, dataset, settle_s=3.0) for store in args.stores]
    base = rows[0]["rss_mib"]
    print(f"{args.vms} VMs x {args.ticks} s of batched records ({dataset.samples} samples)")
    for row in rows:
        print(
            f"{row['store']:12s} resident {row['rss_mib']:6d} MiB  ({row['rss_mib'] / base:.2f}x)"
            f"  processed in {row['seconds']} s"
        )


if __name__ == "__main__":
    main()
