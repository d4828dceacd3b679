"""In-process measurements of the anomaly engine: cost per sample, state size, profile.

Nothing here touches Kafka. Every function builds its own engine and simulated fleet.
"""

from __future__ import annotations

import cProfile
import dataclasses
import pstats
import time
from collections import defaultdict
from collections.abc import Iterable, Iterator, Sequence

from models.engine import FEATURES, AnomalyEngine, Assessment, EngineConfig, Sample
from streams.processor import MetricsProcessor, Source
from streams.simulator import Fleet
from streams.validation import Validator

VARIANTS: dict[str, dict[str, bool | int]] = {
    # Engine configurations compared; a field the engine no longer has is ignored.
    "all_models": {},
    # without the shape channel (models/shape.py), to show its marginal cost
    "all_models-shape": {"shape_history": 0},
    "local_only": {"use_halfspace": False, "use_isolation_forest": False},
    "local+halfspace": {"use_isolation_forest": False},
    "local+iforest": {"use_halfspace": False},
}


def config_for(variant: str) -> EngineConfig:
    known = {f.name for f in dataclasses.fields(EngineConfig)}
    return EngineConfig(**{k: v for k, v in VARIANTS[variant].items() if k in known})


def iter_fleet_ticks(
    vms: int, ticks: int, seed: int = 3, prefix: str = "vm"
) -> Iterator[list[Sample]]:
    """Samples per tick for a simulated fleet (one sample per VM per tick), tick by tick."""
    fleet = Fleet(vms, seed=seed, vms_per_host=100, day_seconds=600.0)
    for _tick, records in fleet.records(ticks, 1.7e9, 1.0, batch=False):
        yield [
            Sample(f"{prefix}-{key}", v["ts"], {name: v[name] for name in FEATURES})
            for key, v in records
        ]


def fleet_ticks(vms: int, ticks: int, seed: int = 3, prefix: str = "vm") -> list[list[Sample]]:
    """All of `iter_fleet_ticks` as a list."""
    return list(iter_fleet_ticks(vms, ticks, seed, prefix))


def feed(engine: AnomalyEngine, ticks: Iterable[list[Sample]], batch: int) -> int:
    n = 0
    for samples in ticks:
        for i in range(0, len(samples), batch):
            n += len(engine.process(samples[i : i + batch]))
    return n


def engine_costs(vms: int, warm_ticks: int, timed_ticks: int) -> dict:
    """µs per sample of `AnomalyEngine.process`, batches of 1 and 100, per variant, warmed up."""
    data = fleet_ticks(vms, warm_ticks + 2 * timed_ticks)
    warm = data[:warm_ticks]
    out: dict[str, dict] = {}
    for variant in VARIANTS:
        engine = AnomalyEngine(config_for(variant))
        feed(engine, warm, 100)
        row: dict[str, float] = {}
        for j, batch in enumerate((1, 100)):
            part = data[warm_ticks + j * timed_ticks : warm_ticks + (j + 1) * timed_ticks]
            began = time.perf_counter()
            n = feed(engine, part, batch)
            row[f"us_per_sample_batch{batch}"] = (time.perf_counter() - began) / n * 1e6
        row["channels"] = list(getattr(engine, "channels", ()))
        out[variant] = row
    all_models = out["all_models"]
    local = out["local_only"]
    components = {
        "local (per-VM models + calibration + decision)": local["us_per_sample_batch100"],
        "halfspace (fleet, marginal)": out["local+halfspace"]["us_per_sample_batch100"]
        - local["us_per_sample_batch100"],
        "iforest (fleet, marginal)": out["local+iforest"]["us_per_sample_batch100"]
        - local["us_per_sample_batch100"],
        "whole per-VM update": all_models["us_per_sample_batch100"],
        "shape channel (marginal)": all_models["us_per_sample_batch100"]
        - out["all_models-shape"]["us_per_sample_batch100"],
    }
    return {
        "vms": vms,
        "warm_ticks": warm_ticks,
        "variants": out,
        "components_ablation": components,
    }


def state_sizes(vms: int, ticks: int, variant: str = "all_models") -> dict:
    """Serialised bytes of model state per VM after `ticks` samples each."""
    engine = AnomalyEngine(config_for(variant))
    data = fleet_ticks(vms, ticks)
    feed(engine, data, 100)
    ids = [s.vm_id for s in data[0]]
    sizes = []
    for vm_id in ids:
        if hasattr(engine, "state_bytes"):
            sizes.append(int(engine.state_bytes(vm_id)))
        elif hasattr(engine, "dump_vm"):
            sizes.append(len(engine.dump_vm(vm_id)))
    if not sizes:
        return {"available": False}
    return {
        "available": True,
        "samples_per_vm": ticks,
        "mean_bytes": sum(sizes) / len(sizes),
        "max_bytes": max(sizes),
    }


# ---------------------------------------------------------------------------- profile
def _component(filename: str) -> str:
    """Which part of the code a profiled function belongs to."""
    f = filename.replace("\\", "/")
    if "/models/" in f and "site-packages" not in f:
        return "models/" + f.rsplit("/models/", 1)[1]
    if "/streams/" in f and "site-packages" not in f:
        return "streams/" + f.rsplit("/streams/", 1)[1]
    for lib in ("river", "numpy", "faust", "mode", "aiokafka", "json", "prometheus_client"):
        if f"/{lib}/" in f:
            return lib
    if f.startswith("~") or f.startswith("<"):
        return "builtins (C calls)"
    return "other python"


def profile_processor(vms: int, warm_ticks: int, timed_ticks: int, batch: bool) -> dict:
    """cProfile of `MetricsProcessor.process` (validation + engine + outputs) on raw records."""
    fleet = Fleet(vms, seed=5, vms_per_host=100, day_seconds=600.0)
    import json as _json

    raw: list[bytes] = []
    start = time.time() - (warm_ticks + timed_ticks)
    for _tick, records in fleet.records(warm_ticks + timed_ticks, start, 1.0, batch):
        raw.extend(_json.dumps(v, separators=(",", ":")).encode() for _k, v in records)
    per_tick = len(raw) // (warm_ticks + timed_ticks)
    processor = MetricsProcessor(engine=AnomalyEngine(EngineConfig()))
    source = Source("vm.metrics", 0, 0, b"k")
    for value in raw[: warm_ticks * per_tick]:
        processor.process(value, source)
    timed = raw[warm_ticks * per_tick :]
    before = processor.stats.samples
    began = time.perf_counter()
    for value in timed:
        for out in processor.process(value, source):
            out.encode()
    plain_s = time.perf_counter() - began
    n = processor.stats.samples - before
    # The profiled pass repeats the same work on the next stretch of the same fleet.
    more = []
    for _tick, records in fleet.records(timed_ticks, start + warm_ticks + timed_ticks, 1.0, batch):
        more.extend(_json.dumps(v, separators=(",", ":")).encode() for _k, v in records)
    profiler = cProfile.Profile()
    profiler.enable()
    for value in more:
        for out in processor.process(value, source):
            out.encode()
    profiler.disable()
    stats = pstats.Stats(profiler)
    by_component: dict[str, float] = defaultdict(float)
    functions = []
    total = 0.0
    for (filename, line, name), (_cc, _nc, tottime, _ct, _callers) in stats.stats.items():
        by_component[_component(filename)] += tottime
        total += tottime
        functions.append((tottime, f"{_component(filename)}:{name}:{line}"))
    functions.sort(reverse=True)
    return {
        "batch": batch,
        "samples": n,
        "us_per_sample_unprofiled": plain_s / n * 1e6,
        "share_by_component": {
            k: round(v / total, 4) for k, v in sorted(by_component.items(), key=lambda kv: -kv[1])
        },
        "top_functions_self_share": [(name, round(t / total, 4)) for t, name in functions[:15]],
    }


# ---------------------------------------------------------------------------- pipeline alone
class PassThroughEngine(AnomalyEngine):
    """The real engine with `process` replaced: every sample scores 0, nothing is learned."""

    def process(self, samples: Sequence[Sample]) -> list[Assessment]:
        return [Assessment(s.vm_id, s.ts, 0.0, 99.9, dict(s.values)) for s in samples]


def pipeline_without_models(records: list[bytes]) -> dict:
    """Validation + output serialisation of `MetricsProcessor`; the engine is a pass-through."""
    return _pipeline(records, PassThroughEngine(EngineConfig()))


def pipeline_with_models(records: list[bytes]) -> dict:
    """The same in-process path with the real engine (no Kafka, no Faust), from cold VMs."""
    return _pipeline(records, AnomalyEngine(EngineConfig()))


def _pipeline(records: list[bytes], engine: AnomalyEngine) -> dict:
    processor = MetricsProcessor(engine=engine, validator=Validator())
    source = Source("vm.metrics", 0, 0, b"k")
    began = time.perf_counter()
    for value in records:
        for out in processor.process(value, source):
            out.encode()
    seconds = time.perf_counter() - began
    return {
        "records_per_s": len(records) / seconds,
        "samples_per_s": processor.stats.samples / seconds,
        "us_per_sample": seconds / max(processor.stats.samples, 1) * 1e6,
    }
