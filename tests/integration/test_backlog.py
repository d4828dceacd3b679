"""A backlog of a million records drains with bounded memory, and the lag is visible meanwhile."""

from __future__ import annotations

import os
import threading
import time

from tests.integration.conftest import simulate

# 1,000,000 single-sample records (800 VMs x 1,250 ticks), keyed by vm_id: the per-record path,
# the most expensive one. NOVACRON_BACKLOG_TICKS changes the size.
VMS = 800
TICKS = int(os.environ.get("NOVACRON_BACKLOG_TICKS", "1250"))


def _rss_mib(pid: int) -> float:
    with open(f"/proc/{pid}/status") as fh:
        for line in fh:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    raise AssertionError("no VmRSS")


def test_backlog_drains_with_bounded_memory_and_visible_lag(
    deployment, start_worker_process
) -> None:
    total = VMS * TICKS
    simulate(
        deployment,
        "--vms",
        str(VMS),
        "--rate",
        "1",
        "--duration",
        str(TICKS),
        "--seed",
        "8",
        "--anomalies",
        "0",
        "--fast",
        "--start",
        str(time.time() - TICKS),
    )
    worker = start_worker_process(extra_env={"NOVACRON_HISTORY_SERIES_VMS": "200"})
    samples: list[tuple[int, float, int]] = []  # (samples processed, RSS MiB, total lag)
    done = threading.Event()

    def watch() -> None:
        while not done.is_set():
            stats = worker.stats()
            if stats:
                lag = stats.get("consumer_lag", {}).get("total") or 0
                samples.append((stats["samples"], _rss_mib(worker.process.pid), lag))
            time.sleep(1.0)

    watcher = threading.Thread(target=watch, daemon=True)
    watcher.start()
    began = time.monotonic()
    try:
        final = worker.wait_samples(total, timeout_s=900)
    finally:
        done.set()
        watcher.join(timeout=5)
    seconds = time.monotonic() - began
    assert final["samples"] == total
    assert any(lag > 0 for _, _, lag in samples), "lag was never visible while draining"
    final_lag = worker.stats()["consumer_lag"]["total"]
    assert final_lag == 0
    # bounded: once every VM is known, memory stops growing with the samples processed
    warm = [rss for n, rss, _ in samples if n >= total * 0.25]
    assert warm, "the watcher saw the drain"
    peak = max(rss for _, rss, _ in samples)
    assert max(warm) <= warm[0] * 1.25 + 50, (warm[0], max(warm))
    print(
        f"backlog: {total} samples in {seconds:.0f} s ({total / seconds:.0f} samples/s), "
        f"peak RSS {peak:.0f} MiB, RSS at 25 % {warm[0]:.0f} MiB, max lag "
        f"{max(lag for _, _, lag in samples)} records"
    )
