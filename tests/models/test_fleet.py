"""Fleet forests: small batches are scored at once and learned in chunks, nothing is lost."""

import numpy as np

from models.fleet import FleetForests
from models.isolation_forest import IncrementalIsolationForest

FEATURES = ("cpu_pct", "mem_pct", "disk_read_bps")
PARAMS = dict(n_trees=8, window_size=128, seed=1)


def _fleet(chunk: int) -> FleetForests:
    return FleetForests(
        FEATURES,
        seed=PARAMS["seed"],
        use_halfspace=False,
        iforest_trees=PARAMS["n_trees"],
        iforest_window=PARAMS["window_size"],
        iforest_learn_chunk=chunk,
    )


def _rows(n: int, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).normal(size=(n, len(FEATURES)))


def test_single_rows_are_scored_at_once_and_learned_in_chunks():
    rows = _rows(300)
    fleet = _fleet(chunk=8)
    reference = IncrementalIsolationForest(**PARAMS)
    scores = []
    for i, row in enumerate(rows):
        got = fleet.score_and_learn(row[None, :])["iforest"]
        np.testing.assert_array_equal(got, reference.score_many(row[None, :]))
        scores.append(got[0])
        if (i + 1) % 8 == 0:
            reference.learn_many(rows[i - 7 : i + 1])
    assert fleet.iforest._n_learned == 296  # the last 4 rows wait for the next ones
    assert fleet._iforest_pending_rows == 4
    # the first chunk scores as the empty forest (0.5); later ones as what was learned
    assert scores[:8] == [0.5] * 8 and len(set(scores[8:])) > 100


def test_a_batch_of_a_chunk_or_more_is_one_fused_update_when_nothing_waits():
    rows = _rows(100, seed=2)
    fleet = _fleet(chunk=32)
    reference = IncrementalIsolationForest(**PARAMS)
    for part in (rows[:40], rows[40:]):
        got = fleet.score_and_learn(part)["iforest"]
        np.testing.assert_array_equal(got, reference.score_learn_many(part))
    assert fleet.iforest._n_learned == 100 and fleet._iforest_pending_rows == 0


def test_mixed_batches_lose_no_row_and_skipped_rows_are_not_learned():
    rows = _rows(200, seed=3)
    fleet = _fleet(chunk=16)
    sizes = [3, 5, 40, 1, 30, 2, 19, 60, 40]
    start = 0
    for size in sizes:
        part = rows[start : start + size]
        mask = np.arange(size) % 5 != 0  # every fifth row has too few metrics
        scores = fleet.score_and_learn(part, mask)["iforest"]
        assert np.isnan(scores[~mask]).all() and np.isfinite(scores[mask]).all()
        start += size
    kept = sum(int((np.arange(size) % 5 != 0).sum()) for size in sizes)
    assert fleet.iforest._n_learned + fleet._iforest_pending_rows == kept
    assert fleet._iforest_pending_rows < 16
