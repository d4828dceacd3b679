"""Benchmark IncrementalIsolationForest: µs per sample, memory, and a long bounded-memory stream.

Run: python -m bench.bench_isolation_forest [--points 1000000] [--dims 6]
"""

from __future__ import annotations

import argparse
import time

import numpy as np

from models.isolation_forest import IncrementalIsolationForest


def _stream(rng: np.random.Generator, n: int, dims: int) -> np.ndarray:
    """z-score-like fleet data: a slowly drifting mean plus noise."""
    drift = np.cumsum(rng.normal(0, 0.002, size=(n, dims)), axis=0)
    return drift + rng.normal(size=(n, dims))


def time_batches(batch: int, n_points: int, dims: int, clock, **params) -> dict[str, float]:
    """Steady-state µs/sample of learn_many, score_many and both, window already full."""
    rng = np.random.default_rng(0)
    forest = IncrementalIsolationForest(seed=0, **params)
    forest.learn_many(_stream(rng, forest.window_size * 2, dims))
    X = _stream(rng, n_points, dims)
    learn = score = 0.0
    for i in range(0, n_points, batch):
        chunk = X[i : i + batch]
        t0 = clock()
        forest.score_many(chunk)
        t1 = clock()
        forest.learn_many(chunk)
        t2 = clock()
        score += t1 - t0
        learn += t2 - t1
    return {
        "learn_us": learn / n_points * 1e6,
        "score_us": score / n_points * 1e6,
        "total_us": (learn + score) / n_points * 1e6,
    }


def long_stream(n_points: int, dims: int, **params) -> None:
    """Feed n_points and print node count and bytes as the stream goes on."""
    rng = np.random.default_rng(1)
    forest = IncrementalIsolationForest(seed=1, **params)
    fed = 0
    t0 = time.perf_counter()
    checkpoints = sorted({20_000, n_points // 4, n_points // 2, n_points})
    for stop in checkpoints:
        while fed < stop:
            n = min(1000, stop - fed)
            forest.learn_many(_stream(rng, n, dims))
            fed += n
        print(
            f"  after {fed:>9,} points: nodes in use {forest.n_nodes:>6,}, "
            f"arrays {forest.nbytes:>9,} B, pickled {len(_pickled(forest)):>9,} B"
        )
    print(f"  ({(time.perf_counter() - t0):.1f} s for {n_points:,} points)")


def _pickled(forest: IncrementalIsolationForest) -> bytes:
    import pickle

    return pickle.dumps(forest)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--points", type=int, default=1_000_000, help="long-stream length")
    parser.add_argument("--dims", type=int, default=6)
    parser.add_argument("--timing-points", type=int, default=20_000)
    parser.add_argument("--eta", type=int, default=None, help="max_leaf_samples override")
    parser.add_argument("--growth", type=float, default=None, help="split_growth override")
    args = parser.parse_args()
    params = {}
    if args.eta is not None:
        params["max_leaf_samples"] = args.eta
    if args.growth is not None:
        params["split_growth"] = args.growth

    forest = IncrementalIsolationForest(**params)
    print(repr(forest).replace("\n", " "))
    print(
        f"node capacity {forest.n_trees * forest._nodes_per_tree:,} "
        f"({forest._nodes_per_tree} per tree)"
    )
    print(f"µs per sample, window full, {args.dims} features (CPU time of this process | wall):")
    for batch in (1, 10, 100, 1000):
        n = min(args.timing_points, 2_000) if batch == 1 else args.timing_points
        cpu = time_batches(batch, n, args.dims, time.process_time, **params)
        wall = time_batches(batch, n, args.dims, time.perf_counter, **params)
        print(
            f"  batch {batch:>5}: learn_many {cpu['learn_us']:6.1f} | {wall['learn_us']:6.1f}"
            f"  score_many {cpu['score_us']:6.1f} | {wall['score_us']:6.1f}"
            f"  total {cpu['total_us']:6.1f} | {wall['total_us']:6.1f}"
        )
    print(f"long stream of {args.points:,} points:")
    long_stream(args.points, args.dims, **params)


if __name__ == "__main__":
    main()
