"""Batch learning and scoring of River's HalfSpaceTrees equal River's own, across pivots."""

from __future__ import annotations

import numpy as np
import pytest
from river import anomaly

from models.halfspace import BatchedHalfSpaceTrees

FEATURES = ("a", "b", "c")


def _row(x: np.ndarray) -> dict[str, float]:
    return dict(zip(FEATURES, x.tolist(), strict=True))


@pytest.mark.parametrize("window", [1, 40])
def test_batches_learn_and_score_as_river_one_at_a_time_through_window_pivots(window: int):
    rng = np.random.default_rng(3)
    reference = anomaly.HalfSpaceTrees(n_trees=5, height=4, window_size=window, seed=7)
    batched = BatchedHalfSpaceTrees(
        anomaly.HalfSpaceTrees(n_trees=5, height=4, window_size=window, seed=7), FEATURES
    )
    if window > 1:
        assert batched.score_many(rng.random((4, 3))).tolist() == [0.0] * 4  # first window
    for step in range(14):  # 7 pivots, some in the middle of a batch; one-row batches too
        X = rng.random((1 if step % 5 == 0 else 2 if step % 4 == 0 else 25, 3))
        if step % 3 == 2:
            X[:2] = rng.random((min(2, len(X)), 3)) * 0.05 + 0.95  # a corner the trees rarely saw
        expected = [reference.score_one(_row(x)) for x in X]
        assert batched.score_many(X).tolist() == expected
        for x in X:
            reference.learn_one(_row(x))
        batched.learn_many(X)
        assert (batched.counter, batched.first_window) == (
            reference.counter,
            reference._first_window,
        )
    assert not batched.first_window
    probe = rng.random((50, 3))
    scores = batched.score_many(probe)
    assert scores.tolist() == [reference.score_one(_row(x)) for x in probe]
    assert np.ptp(scores) > 0  # scores are not constant


@pytest.mark.parametrize("every", [1, 4])
def test_scoring_and_learning_in_one_call_equals_the_two_calls(every: int):
    """One routing for both: the same scores and masses, pivots in the middle of a batch too."""
    rng = np.random.default_rng(4)

    def trees() -> BatchedHalfSpaceTrees:
        hst = anomaly.HalfSpaceTrees(n_trees=5, height=4, window_size=30, seed=2)
        return BatchedHalfSpaceTrees(hst, FEATURES)

    fused, apart = trees(), trees()
    for step in range(40):
        X = rng.random((1 + (step * 7) % 45, 3))
        start = step % every
        expected = apart.score_many(X)
        apart.learn_many(X[start::every])
        assert fused.score_learn_many(X, every, start).tolist() == expected.tolist()
        assert (fused.counter, fused.first_window) == (apart.counter, apart.first_window)
    assert not fused.first_window
    assert np.array_equal(fused._l_mass, apart._l_mass)
    assert np.array_equal(fused._r_mass, apart._r_mass)


def test_a_row_in_a_sparse_corner_scores_above_the_rows_the_trees_saw_most():
    rng = np.random.default_rng(5)
    scorer = BatchedHalfSpaceTrees(
        anomaly.HalfSpaceTrees(n_trees=10, height=6, window_size=100, seed=1), FEATURES
    )
    scorer.learn_many(0.5 + 0.05 * rng.standard_normal((400, 3)))
    typical, corner = scorer.score_many(np.array([[0.5, 0.5, 0.5], [0.95, 0.05, 0.95]]))
    assert corner > typical
