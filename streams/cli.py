"""`novacron`: the command line of NovaCron Stream."""

from __future__ import annotations

import argparse
import gc
import json
import os
import sys
import time


def _bootstrap_default() -> str:
    from streams.settings import Settings

    return Settings.from_env().bootstrap


def collect_young_every(allocations: int) -> None:
    """Set the collector's young-generation threshold (0: no automatic collection), as the
    worker runs it (NOVACRON_GC_GEN0_THRESHOLD)."""
    _, gen1, gen2 = gc.get_threshold()
    gc.set_threshold(allocations, gen1, gen2)


def map_large_blocks(threshold: int) -> bool:
    """Have glibc map every block of at least `threshold` bytes for itself, as the worker
    does (NOVACRON_MMAP_THRESHOLD; 0 leaves glibc's default). True when it took effect.

    glibc's default threshold moves: once a mapped block of up to 32 MB is freed, blocks up to
    that size come from its heap, which keeps freed memory resident. The models' banks grow
    by doubling, so each growth frees the block before it there, and rows not handed out yet
    become resident. Mapped for themselves, a freed block goes back to the system and rows
    not written yet take no memory."""
    if threshold <= 0 or not sys.platform.startswith("linux"):
        return False
    import ctypes
    import ctypes.util

    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        # Fixing one threshold also fixes the other, the heap's trim threshold, at its 128 KiB
        # default: the heap's free top was handed back after every batch and faulted in again
        # by the next (1.3 page faults and 4-7 µs of system time per sample at batches of
        # 1,000). It is set to the most glibc's own rule would raise it to.
        return bool(libc.mallopt(_M_MMAP_THRESHOLD, threshold)) and bool(
            libc.mallopt(_M_TRIM_THRESHOLD, _TRIM_THRESHOLD)
        )
    except (OSError, AttributeError):  # not glibc (musl has no mallopt)
        return False


# mallopt's parameter numbers, from glibc's malloc.h
_M_TRIM_THRESHOLD = -1
_M_MMAP_THRESHOLD = -3
_TRIM_THRESHOLD = 64 << 20

EVENT_LOOPS = ("uvloop", "asyncio")


def use_event_loop(name: str) -> None:
    """Run the asyncio event loops created from now on with `name`'s implementation, as the
    worker does (NOVACRON_EVENT_LOOP): "uvloop" or "asyncio" (the standard library's)."""
    import asyncio

    if name not in EVENT_LOOPS:
        raise SystemExit(f"novacron: event loop {name!r} is not one of {', '.join(EVENT_LOOPS)}")
    if name == "asyncio":
        asyncio.set_event_loop_policy(None)  # the standard library's default
        return
    try:
        import uvloop
    except ImportError:
        raise SystemExit(
            "novacron: uvloop is not installed here; set NOVACRON_EVENT_LOOP=asyncio"
        ) from None
    asyncio.set_event_loop_policy(uvloop.EventLoopPolicy())


def cmd_worker(args: argparse.Namespace) -> int:
    """Create missing topics, then run the Faust worker in this process."""
    from streams.admin import create_topics
    from streams.settings import Settings
    from streams.topics import load_topics

    settings = Settings.from_env()
    specs = load_topics(settings.topics_file, prefix=settings.topic_prefix)
    _wait_for(lambda: create_topics(settings.bootstrap, specs.values()), settings.bootstrap)
    use_event_loop(settings.event_loop)  # before the app makes its loop
    from streams.app import app
    from streams.telemetry import GC_PAUSES

    collect_young_every(settings.gc_gen0_threshold)
    map_large_blocks(settings.mmap_threshold)
    GC_PAUSES.install()
    # Everything imported so far (Faust, numpy, River, the app's topics and tables) lives as
    # long as the process: kept out of full collections, it stops costing each one a pause.
    GC_PAUSES.freeze()
    sys.argv = ["novacron", "worker", "-l", settings.log_level]
    app.main()
    return 0


def _wait_for(action, bootstrap: str, timeout_s: float = 60.0):
    """Retry `action` until the broker answers (a worker may start before its broker)."""
    from kafka.errors import KafkaError

    deadline = time.monotonic() + timeout_s
    while True:
        try:
            return action()
        except (KafkaError, OSError) as exc:
            if time.monotonic() > deadline:
                raise SystemExit(f"novacron: broker {bootstrap} unreachable: {exc}") from exc
            time.sleep(1.0)


def cmd_topics(args: argparse.Namespace) -> int:
    from streams.admin import check_topics, create_topics
    from streams.topics import load_topics

    specs = load_topics(args.file, prefix=args.prefix)
    if args.action == "create":
        created = _wait_for(lambda: create_topics(args.bootstrap, specs.values()), args.bootstrap)
        for name in created:
            print(f"created {name}")
        print(f"{len(created)} created, {len(specs) - len(created)} already present")
        return 0
    drift = check_topics(args.bootstrap, specs.values())
    for d in drift:
        print(f"drift: {d}")
    print("topics match the file" if not drift else f"{len(drift)} difference(s)")
    return 1 if drift else 0


def cmd_simulate(args: argparse.Namespace) -> int:
    from streams.simulator import ANOMALY_KINDS, SimulationPlan, run_simulation
    from streams.topics import load_topics

    kinds = tuple(args.kinds.split(",")) if args.kinds else ANOMALY_KINDS
    plan = SimulationPlan(
        vms=args.vms,
        rate=args.rate,
        duration_s=args.duration,
        seed=args.seed,
        batch=args.batch,
        anomalies=args.anomalies,
        kinds=kinds,
        warmup_s=args.warmup,
        anomaly_s=args.anomaly_seconds,
        day_seconds=args.day_seconds,
        vms_per_host=args.vms_per_host,
        start_ts=args.start,
        realtime=not args.fast,
    )
    topic = load_topics(args.topics_file, prefix=args.prefix)["metrics"].name
    result = run_simulation(args.bootstrap, topic, plan, args.labels, progress=args.progress)
    print(json.dumps(result))
    return 0


def cmd_demo(args: argparse.Namespace) -> int:
    from streams.demo import run_demo

    return run_demo(
        duration_s=args.duration,
        vms=args.vms,
        rate=args.rate,
        batch=not args.single,
        seed=args.seed,
    )


def cmd_replay(args: argparse.Namespace) -> int:
    from streams.replay import replay_csv
    from streams.settings import engine_config_from_env

    # the engine settings a worker in this environment would run with (NOVACRON_ENGINE_*)
    s = replay_csv(args.input, args.output, metric=args.metric, config=engine_config_from_env())
    print(
        f"replayed {s.rows} rows ({s.input_format} format, {s.vms} VM(s), metric {s.metric}) "
        f"in {s.seconds:.2f} s: {s.alerts} alert(s); scores written to {s.output_path}"
    )
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="novacron", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)

    sub.add_parser(
        "worker", help="run a stream worker (settings from NOVACRON_* variables)"
    ).set_defaults(func=cmd_worker)

    topics = sub.add_parser("topics", help="create topics from topics.yaml, or check for drift")
    topics.add_argument("action", choices=["create", "check"])
    topics.add_argument(
        "--bootstrap", default=None, help="HOST:PORT (default from NOVACRON_BROKER)"
    )
    topics.add_argument("--file", default=None, help="topics file (default topics.yaml)")
    topics.add_argument("--prefix", default=os.environ.get("NOVACRON_TOPIC_PREFIX", ""))
    topics.set_defaults(func=cmd_topics)

    sim = sub.add_parser("simulate", help="publish a simulated VM fleet with labelled anomalies")
    sim.add_argument("--bootstrap", default=None)
    sim.add_argument("--vms", type=int, default=50)
    sim.add_argument("--rate", type=float, default=1.0, help="ticks per second (a sample per VM)")
    sim.add_argument("--duration", type=float, default=60.0, help="seconds of simulated time")
    sim.add_argument("--seed", type=int, default=0)
    sim.add_argument("--labels", default=None, help="write ground-truth labels (JSON lines) here")
    sim.add_argument("--batch", action="store_true", help="one record per host, keyed by host")
    sim.add_argument("--anomalies", type=int, default=3)
    sim.add_argument("--kinds", default=None, help="comma-separated anomaly kinds to inject")
    sim.add_argument("--warmup", type=float, default=None, help="seconds before any anomaly")
    sim.add_argument("--anomaly-seconds", type=float, default=None, help="length of an anomaly")
    sim.add_argument("--vms-per-host", type=int, default=4)
    sim.add_argument("--start", type=float, default=None, help="first tick's epoch (default now)")
    sim.add_argument("--day-seconds", type=float, default=600.0, help="period of the daily cycle")
    sim.add_argument("--fast", action="store_true", help="publish as fast as possible")
    sim.add_argument("--progress", action="store_true")
    sim.add_argument("--topics-file", default=None)
    sim.add_argument("--prefix", default=os.environ.get("NOVACRON_TOPIC_PREFIX", ""))
    sim.set_defaults(func=cmd_simulate)

    demo = sub.add_parser("demo", help="embedded broker + worker + simulator, with live progress")
    demo.add_argument("--duration", type=float, default=None, help="stop after S seconds")
    demo.add_argument("--vms", type=int, default=40)
    demo.add_argument("--rate", type=float, default=5.0, help="ticks per second")
    demo.add_argument(
        "--single", action="store_true", help="one record per sample instead of per host"
    )
    demo.add_argument("--seed", type=int, default=7)
    demo.set_defaults(func=cmd_demo)

    replay = sub.add_parser("replay", help="run the worker's models over a CSV, offline")
    replay.add_argument("--input", required=True)
    replay.add_argument("--output", required=True)
    replay.add_argument("--metric", default="cpu_pct")
    replay.set_defaults(func=cmd_replay)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if getattr(args, "bootstrap", "unset") is None:
        args.bootstrap = _bootstrap_default()
    return args.func(args) or 0


if __name__ == "__main__":
    sys.exit(main())
