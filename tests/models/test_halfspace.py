"""Batch scoring of River's HalfSpaceTrees equals River's own score_one, across pivots."""

from __future__ import annotations

import numpy as np
from river import anomaly

from models.halfspace import HalfSpaceBatchScorer

FEATURES = ("a", "b", "c")


def _row(x: np.ndarray) -> dict[str, float]:
    return dict(zip(FEATURES, x.tolist(), strict=True))


def test_batch_scores_equal_river_score_one_through_several_window_pivots():
    rng = np.random.default_rng(3)
    reference = anomaly.HalfSpaceTrees(n_trees=5, height=4, window_size=40, seed=7)
    batched = HalfSpaceBatchScorer(
        anomaly.HalfSpaceTrees(n_trees=5, height=4, window_size=40, seed=7), FEATURES
    )
    assert batched.score_many(rng.random((4, 3))).tolist() == [0.0] * 4  # first window
    for step in range(14):  # 7 pivots, some in the middle of a batch; small batches too
        X = rng.random((25 if step % 4 else 2, 3))
        if step % 3 == 2:
            X[:2] = rng.random((2, 3)) * 0.05 + 0.95  # a corner the trees rarely saw
        expected = [reference.score_one(_row(x)) for x in X]
        assert batched.score_many(X).tolist() == expected
        for x in X:
            reference.learn_one(_row(x))
            batched.learn_one(_row(x))
    assert not batched.hst._first_window
    assert np.ptp(batched.score_many(rng.random((50, 3)))) > 0  # scores are not constant
