"""Resident memory of one process tracking many VMs; run in a fresh process per measurement.

`python -m bench._scale pool --vms G --ticks T --pool FILE --out JSON`
    feeds G VMs T samples each from scratch (past warm-up), measures RSS, and saves every VM's
    `dump_vm` bytes to FILE.
`python -m bench._scale planner --vms N --ticks W --out JSON [--planner-pool FILE]`
    feeds the capacity planner W closed one-minute windows of N VMs (four interval forecasters,
    usage history and scaling state per VM, as in the worker), measures RSS, and times writing
    every VM's forecasting checkpoint (base64 text, as the table stores it) and restoring it
    into a new planner; with --planner-pool also saves those checkpoints to FILE.
`python -m bench._scale size --vms N --pool FILE --out JSON [--timings] [--planner-pool FILE]`
    restores N VMs by cycling through the pool's warmed states (`load_vm` under new ids), feeds
    every VM one more sample, and measures RSS; with --timings also times creating and restoring
    those VMs and dumping their state. With --planner-pool the same process also restores each
    VM's forecasting state from that pool and feeds it one more closed window (forecasts
    published into a recent history, views and scaling decisions made): the whole worker's
    models, measured rather than projected.
Engine settings come from NOVACRON_ENGINE_*, as in the worker. Each run sets the garbage
collector's young-generation threshold as the worker does (with Python's default, collections
take a third of the planner's time per window) and times one full garbage collection over what
it holds (a pause of the whole worker), with what was imported frozen out first, as the worker
does.
"""

from __future__ import annotations

import argparse
import base64
import gc
import json
import pickle
import time

from bench._models import feed, fleet_ticks, iter_fleet_ticks
from models.engine import FEATURES, AnomalyEngine, Sample
from streams.cli import collect_young_every, map_large_blocks
from streams.settings import Settings, engine_config_from_env


def rss_bytes() -> int:
    with open("/proc/self/status") as fh:
        for line in fh:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
    raise RuntimeError("no VmRSS in /proc/self/status")


def full_collection() -> dict:
    """How long one full garbage collection takes, and over how many tracked objects: a pause
    of the whole worker. What was imported is frozen out first, as the worker does."""
    began = time.perf_counter()
    gc.collect()
    return {
        "full_gc_ms": (time.perf_counter() - began) * 1e3,
        "gc_tracked_objects": len(gc.get_objects()),
    }


def _baseline(engine: AnomalyEngine) -> int:
    """RSS with the engine built and its fleet models allocated by a first small batch."""
    feed(engine, fleet_ticks(8, 2, seed=99, prefix="base"), 100)
    gc.collect()
    return rss_bytes()


def make_pool(vms: int, ticks: int, pool_path: str) -> dict:
    engine = AnomalyEngine(engine_config_from_env())
    base = _baseline(engine)
    began = time.perf_counter()
    # Generated tick by tick: only one tick of input samples is alive at any time.
    feed(engine, iter_fleet_ticks(vms, ticks), 100)
    feed_s = time.perf_counter() - began
    gc.collect()
    rss = rss_bytes()
    ids = [f"vm-vm-{i:05d}" for i in range(vms)]
    dumps = [engine.dump_vm(vm_id) for vm_id in ids]
    with open(pool_path, "wb") as fh:
        pickle.dump(dumps, fh)
    return {
        "vms": vms,
        "samples_per_vm": ticks,
        "how": "fed from scratch",
        "feed_us_per_sample": feed_s / (vms * ticks) * 1e6,
        "rss_bytes": rss,
        "baseline_rss_bytes": base,
        "bytes_per_vm": (rss - base) / vms,
    }


def _one_more_sample(ids: list[str], ts: float) -> list[Sample]:
    values = dict.fromkeys(FEATURES, 1.0)
    values.update(cpu_pct=30.0, mem_pct=40.0)
    return [Sample(vm_id, ts, values) for vm_id in ids]


def _restore_forecasting(ids: list[str], pool_path: str) -> tuple[object, object, float]:
    """A capacity planner and recent history holding forecasting state for every VM of `ids`
    (cycled through the pool's checkpoints under new ids), each VM then fed its next window;
    returns them (to keep them alive) and the seconds taken."""
    from streams.capacity import CapacityPlanner
    from streams.history import RecentHistory

    with open(pool_path, "rb") as fh:
        pool = pickle.load(fh)
    states, w = pool["states"], pool["windows"]  # the window after the pool's last
    planner, history = CapacityPlanner(), RecentHistory()
    began = time.perf_counter()
    for first in range(0, len(ids), PLANNER_BATCH):
        batch = []
        for i in range(first, min(first + PLANNER_BATCH, len(ids))):
            planner.load_vm(ids[i], states[i % len(states)])
            closed = _closed_window(i, w)
            batch.append((closed.vm_id, None, [closed]))
        for _window, forecasts, _actions in planner.on_windows(batch):
            for message in forecasts:
                history.published("forecasts", message["vm_id"], message)
    return planner, history, time.perf_counter() - began


def size(vms: int, pool_path: str, timings: bool, planner_pool: str | None = None) -> dict:
    with open(pool_path, "rb") as fh:
        pool: list[bytes] = pickle.load(fh)
    engine = AnomalyEngine(engine_config_from_env())
    base = _baseline(engine)
    ids = [f"vm-{i:07d}" for i in range(vms)]
    began = time.perf_counter()
    for i, vm_id in enumerate(ids):
        engine.load_vm(vm_id, pool[i % len(pool)])
    restore_s = time.perf_counter() - began
    del pool
    samples = _one_more_sample(ids, 1.7e9 + 1e5)
    began = time.perf_counter()
    for i in range(0, vms, 100):
        engine.process(samples[i : i + 100])
    process_s = time.perf_counter() - began
    del samples
    forecasting: tuple[object, object, float] | None = None
    if planner_pool:
        forecasting = _restore_forecasting(ids, planner_pool)
    gc.collect()
    rss = rss_bytes()
    out = {
        "vms": vms,
        "how": "warmed states restored with load_vm, then one more sample each"
        + (", and forecasting states, then one more closed window each" if forecasting else ""),
        "rss_bytes": rss,
        "baseline_rss_bytes": base,
        "bytes_per_vm": (rss - base) / vms,
        "tracked_vms": engine.tracked_vms(),
        **full_collection(),
    }
    if forecasting is not None:
        planner, history, forecasting_s = forecasting
        out.update(
            with_forecasting=True,
            forecasting_vms=sum(map(planner.knows, ids)),  # type: ignore[attr-defined]
            vms_with_published_forecasts=len(history.forecast_figures),  # type: ignore[attr-defined]
            forecasting_restore_and_window_s=forecasting_s,
        )
    if timings:
        began = time.perf_counter()
        dumps = [engine.dump_vm(vm_id) for vm_id in ids]
        dump_s = time.perf_counter() - began
        fresh = AnomalyEngine(engine_config_from_env())
        first = _one_more_sample([f"new-{i:07d}" for i in range(vms)], 1.7e9)
        began = time.perf_counter()
        for i in range(0, vms, 100):
            fresh.process(first[i : i + 100])
        create_s = time.perf_counter() - began
        out.update(
            restore_s=restore_s,
            restore_us_per_vm=restore_s / vms * 1e6,
            dump_s=dump_s,
            dump_us_per_vm=dump_s / vms * 1e6,
            mean_dump_bytes=sum(map(len, dumps)) / vms,
            create_s=create_s,
            create_note="first sample of each new VM through process() in batches of 100",
            one_sample_each_restored_s=process_s,
        )
    return out


PLANNER_BATCH = 100  # windows per call, as a batch of records closes them in a worker
PLANNER_START = 1.7e9  # end of the first window the planner runs feed


def _closed_window(i: int, w: int):  # -> streams.windows.ClosedWindow
    """Window `w` of VM `i` in the planner runs: one minute of a daily rhythm."""
    import math

    from streams.windows import ClosedWindow, WindowStats

    day = math.sin(2 * math.pi * w / 1440)
    wobble = ((i * 7919 + w * 104729) % 1000) / 1000.0
    load = 1.0 + 0.3 * day + 0.1 * wobble
    means = {
        "cpu_pct": 30.0 * load,
        "mem_pct": 40.0 + 2.0 * wobble,
        "net_in_bps": 2e6 * load,
        "net_out_bps": 1.2e6 * load,
    }
    stats = {m: WindowStats(1, v, v) for m, v in means.items()}
    vm_id = f"vm-{i:07d}"
    return ClosedWindow(vm_id, f"host-{i // 8:06d}", 60.0, PLANNER_START + 60.0 * w, stats)


def planner(vms: int, windows: int, pool_path: str | None = None) -> dict:
    """RSS of a capacity planner that has learned `windows` closed windows of each of `vms` VMs."""
    from streams.capacity import CapacityPlanner
    from streams.history import RecentHistory
    from streams.windows import ClosedWindow

    planner = CapacityPlanner()
    history = RecentHistory()  # keeps each VM's latest forecast figures, as in the worker

    def feed(batch: list[tuple[str, None, list[ClosedWindow]]]) -> None:
        for _window, forecasts, _actions in planner.on_windows(batch):
            for message in forecasts:
                history.published("forecasts", message["vm_id"], message)

    gc.collect()
    base = rss_bytes()
    began = time.perf_counter()
    batch: list[tuple[str, None, list[ClosedWindow]]] = []
    for w in range(windows):
        for i in range(vms):
            closed = _closed_window(i, w)
            batch.append((closed.vm_id, None, [closed]))
            if len(batch) == PLANNER_BATCH:  # the windows a batch of records closes, together
                feed(batch)
                batch = []
    feed(batch)
    feed_s = time.perf_counter() - began
    gc.collect()
    rss = rss_bytes()
    periods = [m["period"] for i in range(vms) for m in planner.current_forecasts(f"vm-{i:07d}")]
    forecasts, seasonal = len(periods), sum(p is not None for p in periods)
    # the forecasting checkpoints a worker writes and a worker taking over restores
    ids = [f"vm-{i:07d}" for i in range(vms)]
    began = time.perf_counter()
    states = [base64.b64encode(planner.dump_vm(vm_id)).decode() for vm_id in ids]
    dump_s = time.perf_counter() - began
    restored = CapacityPlanner()
    began = time.perf_counter()
    for vm_id, state in zip(ids, states, strict=True):
        restored.load_vm(vm_id, base64.b64decode(state))
    restore_s = time.perf_counter() - began
    if pool_path:
        with open(pool_path, "wb") as fh:
            pickle.dump({"states": [base64.b64decode(s) for s in states], "windows": windows}, fh)
    return {
        "vms": vms,
        "windows_per_vm": windows,
        "how": "capacity planner fed closed one-minute windows of a daily rhythm, "
        f"{PLANNER_BATCH} per call, its forecasts published into a recent history as in the "
        "worker",
        "seasonal_share": seasonal / max(1, forecasts),
        "us_per_window": feed_s / (vms * windows) * 1e6,
        "rss_bytes": rss,
        "baseline_rss_bytes": base,
        "bytes_per_vm": (rss - base) / vms,
        "state_bytes_per_vm": sum(map(len, states)) / vms,
        "state_dump_us_per_vm": dump_s / vms * 1e6,
        "state_restore_us_per_vm": restore_s / vms * 1e6,
        **full_collection(),
    }


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m bench._scale")
    parser.add_argument("mode", choices=("pool", "size", "planner"))
    parser.add_argument("--vms", type=int, required=True)
    parser.add_argument("--ticks", type=int, default=90)
    parser.add_argument("--pool")
    parser.add_argument("--out", required=True)
    parser.add_argument("--timings", action="store_true")
    parser.add_argument("--planner-pool")
    args = parser.parse_args()
    settings = Settings.from_env()
    collect_young_every(settings.gc_gen0_threshold)  # as in the worker
    map_large_blocks(settings.mmap_threshold)
    gc.freeze()  # the worker freezes what it imported at start (see full_collection)
    if args.mode == "planner":
        result = planner(args.vms, args.ticks, args.planner_pool)
    elif args.mode == "pool":
        result = make_pool(args.vms, args.ticks, args.pool)
    else:
        result = size(args.vms, args.pool, args.timings, args.planner_pool)
    with open(args.out, "w") as fh:
        json.dump(result, fh)


if __name__ == "__main__":
    main()
