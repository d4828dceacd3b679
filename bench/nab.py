"""NAB benchmark: replay every labelled series through the product's engine and score it.

Run from the repository root::

    python -m bench.nab [--data DIR] [--workers N] [--metric cpu_pct]

The data directory defaults to ``$NOVACRON_NAB_DIR`` or ``../shared/nab-dev`` next to the
repository. Each ``data/**/*.csv`` is replayed with ``streams.replay.replay_csv`` (the engine the
worker runs) into a temporary directory, then scored with ``bench.nab_scorer`` for every
profile: "optimized" (best single corpus-wide threshold on ``anomaly_score``) and "fixed" (the
product's own ``alert`` column). Trivial detectors (rolling z-score, expanding Gaussian,
random) are scored alongside as baselines, and the published per-file results of Numenta HTM
and ARTime (``bench.nab_published``) are normalised over the same files, so the development
subset has a like-for-like reference. Engine settings come from ``NOVACRON_ENGINE_*``, as for
the worker (``NOVACRON_ENGINE_SHAPE_HISTORY=0 make nab`` scores without the shape channel).
Results go to ``bench/results/nab.json``.
``run_nab`` is the reusable entry point for tuning.
"""

from __future__ import annotations

import argparse
import csv
import dataclasses
import json
import math
import os
import sys
import tempfile
import time
import zlib
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import numpy as np

from bench.nab_published import PUBLISHED_STANDARD_RAW, reference_raw
from bench.nab_scorer import (
    PROFILES,
    CorpusScore,
    SeriesLabels,
    load_windows,
    normalised_score,
    optimize_threshold,
    score_alerts,
)
from models.engine import EngineConfig
from streams.replay import DEFAULT_CHUNK, replay_csv
from streams.settings import engine_config_from_env

REPO_ROOT = Path(__file__).resolve().parents[1]
RESULTS_PATH = REPO_ROOT / "bench" / "results" / "nab.json"
PRODUCT = "novacron"
ZSCORE_WINDOW = 100

# Standard-profile scores on the full 58-file corpus, from the NAB scoreboard.
PUBLISHED_STANDARD = {
    "ARTime": 74.9,
    "Numenta HTM": 70.5,
    "CAD OSE": 69.9,
    "earthgecko Skyline": 58.2,
    "KNN CAD": 58.0,
    "Random Cut Forest": 51.7,
    "Twitter ADVec": 47.1,
    "Windowed Gaussian": 39.6,
    "random": 11.0,
    "null": 0.0,
}


def default_data_dir() -> Path:
    """``$NOVACRON_NAB_DIR`` or ``../shared/nab-dev`` relative to the repository root."""
    configured = os.environ.get("NOVACRON_NAB_DIR")
    return Path(configured) if configured else (REPO_ROOT.parent / "shared" / "nab-dev").resolve()


@dataclasses.dataclass
class _Series:
    name: str
    timestamps: list[str]
    values: np.ndarray
    scores: np.ndarray
    alerts: np.ndarray
    seconds: float


def _replay_one(job: tuple[str, str, str, str, EngineConfig | None, int]) -> _Series:
    name, source, out_dir, metric, config, chunk_size = job
    target = Path(out_dir) / (name.replace("/", "__"))
    summary = replay_csv(source, target, metric=metric, config=config, chunk_size=chunk_size)
    with target.open(newline="") as handle:
        rows = list(csv.DictReader(handle))
    return _Series(
        name=name,
        timestamps=[r["timestamp"] for r in rows],
        values=np.array([float(r["value"]) for r in rows]),
        scores=np.array([float(r["anomaly_score"]) for r in rows]),
        alerts=np.array([int(r["alert"]) for r in rows], dtype=float),
        seconds=summary.seconds,
    )


def _tail_score(deviation: float, std: float) -> float:
    """``erf(|z| / sqrt 2)``: 0 at the mean, towards 1 far out; any change of a constant is 1."""
    if std > 0:
        return math.erf(abs(deviation) / std / math.sqrt(2.0))
    return 0.0 if deviation == 0 else 1.0


def rolling_zscore_scores(values: np.ndarray, window: int = ZSCORE_WINDOW) -> np.ndarray:
    """Baseline: Gaussian tail score of each value against the previous ``window`` values.

    Causal (a value is not part of its own reference); 0 until two values were seen.
    """
    scores = np.zeros(values.size)
    for i in range(2, min(window, values.size)):
        history = values[:i]
        scores[i] = _tail_score(values[i] - history.mean(), history.std())
    if values.size > window:
        history = np.lib.stride_tricks.sliding_window_view(values[:-1], window)
        means, stds = history.mean(axis=1), history.std(axis=1)
        for i, mean, std in zip(range(window, values.size), means, stds, strict=True):
            scores[i] = _tail_score(values[i] - mean, std)
    return scores


def expanding_gaussian_scores(values: np.ndarray) -> np.ndarray:
    """Baseline: Gaussian tail score against every earlier value (running mean and variance).

    Close to NAB's "Windowed Gaussian", whose 6400-row window spans whole files here.
    """
    scores = np.zeros(values.size)
    mean, m2 = 0.0, 0.0
    for seen, value in enumerate(values.tolist()):
        if seen >= 2:
            scores[seen] = _tail_score(value - mean, math.sqrt(m2 / seen))
        delta = value - mean
        mean += delta / (seen + 1)
        m2 += delta * (value - mean)
    return scores


def random_scores(name: str, n_rows: int) -> np.ndarray:
    """Baseline: uniform random scores, seeded by the file name (reproducible)."""
    return np.random.default_rng(zlib.crc32(name.encode())).random(n_rows)


def run_nab(
    data_dir: str | Path | None = None,
    config: EngineConfig | None = None,
    workers: int = 2,
    metric: str = "cpu_pct",
    baselines: bool = True,
    chunk_size: int = DEFAULT_CHUNK,
) -> dict:
    """Replay and score the whole data directory; returns the results as a JSON-ready dict."""
    root = Path(data_dir) if data_dir is not None else default_data_dir()
    windows = load_windows(root / "windows.json")
    files = sorted(p.relative_to(root / "data").as_posix() for p in (root / "data").rglob("*.csv"))
    if not files:
        raise FileNotFoundError(f"no CSV files under {root / 'data'}")
    unlabelled = [name for name in files if name not in windows]
    if unlabelled:
        raise ValueError(f"files missing from windows.json: {', '.join(unlabelled)}")

    started = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="nab-replay-") as out_dir:
        jobs = [
            (name, str(root / "data" / name), out_dir, metric, config, chunk_size) for name in files
        ]
        if workers > 1:
            with ProcessPoolExecutor(max_workers=workers) as pool:
                series = list(pool.map(_replay_one, jobs))
        else:
            series = [_replay_one(job) for job in jobs]
    wall = time.perf_counter() - started

    labels = {
        s.name: SeriesLabels.from_timestamps(s.name, s.timestamps, windows[s.name]) for s in series
    }
    detectors: dict[str, dict[str, np.ndarray]] = {PRODUCT: {s.name: s.scores for s in series}}
    if baselines:
        detectors[f"rolling_zscore_{ZSCORE_WINDOW}"] = {
            s.name: rolling_zscore_scores(s.values) for s in series
        }
        detectors["expanding_gaussian"] = {
            s.name: expanding_gaussian_scores(s.values) for s in series
        }
        detectors["random"] = {s.name: random_scores(s.name, s.values.size) for s in series}

    results: dict[str, dict] = {}
    for detector, scores in detectors.items():
        corpus = [(labels[s.name], scores[s.name]) for s in series]
        results[detector] = {
            "optimized": {p: _summary(optimize_threshold(corpus, p)) for p in PROFILES}
        }
    product_alerts = [(labels[s.name], s.alerts) for s in series]
    results[PRODUCT]["fixed"] = {p: _summary(score_alerts(product_alerts, p)) for p in PROFILES}

    standard_opt = optimize_threshold([(labels[s.name], s.scores) for s in series], "standard")
    standard_fixed = score_alerts(product_alerts, "standard")
    references = {
        detector: raws
        for detector in PUBLISHED_STANDARD_RAW
        if (raws := reference_raw(detector, (s.name for s in series))) is not None
    }
    rows = sum(s.values.size for s in series)
    engine_seconds = sum(s.seconds for s in series)
    return {
        "data_dir": str(root),
        "metric": metric,
        "engine_config": _config_dict(config if config is not None else EngineConfig()),
        "files": len(series),
        "rows": rows,
        "windows": sum(len(lab.windows) for lab in labels.values()),
        "engine_seconds": engine_seconds,
        "us_per_row": 1e6 * engine_seconds / rows,
        "wall_seconds": wall,
        "workers": workers,
        "chunk_size": chunk_size,
        "detectors": results,
        "per_file": {
            s.name: {
                "rows": int(s.values.size),
                "windows": len(labels[s.name].windows),
                "alerts": int(s.alerts.sum()),
                "fixed": dataclasses.asdict(standard_fixed.files[s.name]),
                "optimized_standard": dataclasses.asdict(standard_opt.files[s.name]),
                "reference_raw": {detector: raws[s.name] for detector, raws in references.items()},
            }
            for s in series
        },
        # the same files as scored by published detectors (those with a figure for every file)
        "references_same_files": [
            {
                "detector": detector,
                "profile": "standard",
                "raw": sum(raws.values()),
                "score": normalised_score(
                    sum(raws.values()), standard_opt.null, standard_opt.perfect
                ),
            }
            for detector, raws in references.items()
        ],
        "published_standard_full_corpus": PUBLISHED_STANDARD,
    }


def _config_dict(config: EngineConfig) -> dict:
    if dataclasses.is_dataclass(config):
        return dataclasses.asdict(config)
    return {k: v for k, v in vars(config).items() if not k.startswith("_")}


def _summary(result: CorpusScore) -> dict:
    totals = {
        key: sum(getattr(f, key) for f in result.files.values())
        for key in ("true_positives", "false_negatives", "false_positives", "detections")
    }
    return {
        "score": result.score,
        "threshold": result.threshold,
        "raw": result.raw,
        "null": result.null,
        "perfect": result.perfect,
        **totals,
    }


def format_report(results: dict) -> str:
    """Human-readable tables of a ``run_nab`` result."""
    lines = [
        f"NAB data: {results['data_dir']}  ({results['files']} files, {results['rows']} rows, "
        f"{results['windows']} windows, metric {results['metric']})",
        f"engine: {results['us_per_row']:.1f} us/row ({results['engine_seconds']:.1f} s in "
        f"engine.process, {results['wall_seconds']:.1f} s wall with {results['workers']} workers, "
        f"chunks of {results['chunk_size']})",
        "",
        f"{'detector':<22}{'profile':<15}{'optimized':>10}{'threshold':>20}"
        f"{'TP':>5}{'FN':>5}{'FP':>7}{'fixed':>10}",
    ]
    for detector, scores in results["detectors"].items():
        for profile in PROFILES:
            opt = scores["optimized"][profile]
            fixed = scores.get("fixed", {}).get(profile)
            fixed_text = f"{fixed['score']:10.2f}" if fixed else f"{'-':>10}"
            lines.append(
                f"{detector:<22}{profile:<15}{opt['score']:10.2f}{opt['threshold']!r:>20}"
                f"{opt['true_positives']:5d}{opt['false_negatives']:5d}"
                f"{opt['false_positives']:7d}{fixed_text}"
            )
    references = results.get("references_same_files", [])
    if references:
        lines.append("")
    for ref in references:
        lines.append(
            f"{ref['detector']} on the same files ({ref['profile']}, its published per-file "
            f"results): {ref['score']:.2f} (raw {ref['raw']:.3f})"
        )
    names = [ref["detector"] for ref in references]
    short = [name.split()[-1] for name in names]  # "Numenta HTM" -> "HTM"
    legend = f"; {', '.join(short)} = published raw scores" if names else ""
    lines += [
        "",
        f"per file ({PRODUCT}, standard profile): fixed = own alerts; opt = optimized threshold"
        + legend,
        f"{'file':<58}{'rows':>6}{'win':>4}{'alerts':>7}{'fixTP':>6}{'fixFP':>6}"
        f"{'optTP':>6}{'optFP':>6}{'opt raw':>9}" + "".join(f"{name:>9}" for name in short),
    ]
    for name, row in results["per_file"].items():
        fixed, opt = row["fixed"], row["optimized_standard"]
        lines.append(
            f"{name:<58}{row['rows']:6d}{row['windows']:4d}{row['alerts']:7d}"
            f"{fixed['true_positives']:6d}{fixed['false_positives']:6d}"
            f"{opt['true_positives']:6d}{opt['false_positives']:6d}{opt['raw']:9.3f}"
            + "".join(f"{row['reference_raw'][name]:9.3f}" for name in names)
        )
    published = ", ".join(f"{k} {v}" for k, v in results["published_standard_full_corpus"].items())
    lines += ["", f"published standard scores (full 58-file corpus): {published}"]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--data", type=Path, default=None, help="NAB directory (windows.json, data/)"
    )
    parser.add_argument("--workers", type=int, default=2, help="parallel replay processes")
    parser.add_argument("--metric", default="cpu_pct", help="feature the NAB value is fed as")
    parser.add_argument("--chunk", type=int, default=DEFAULT_CHUNK, help="samples per process()")
    parser.add_argument("--output", type=Path, default=RESULTS_PATH, help="JSON results path")
    args = parser.parse_args(argv)
    results = run_nab(
        args.data,
        config=engine_config_from_env(),  # NOVACRON_ENGINE_*, as the worker and replay read them
        workers=args.workers,
        metric=args.metric,
        chunk_size=args.chunk,
    )
    print(format_report(results))
    args.output.parent.mkdir(parents=True, exist_ok=True)
    args.output.write_text(json.dumps(results, indent=2) + "\n")
    print(f"\nwrote {args.output}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
