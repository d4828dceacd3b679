"""Batch scoring for River's `HalfSpaceTrees`: its reference masses as arrays, walked in numpy.

River scores one dict at a time, walking every tree in Python (8 trees of height 6 are ~60
node visits per sample). Between two window pivots the masses a score reads (`r_mass`) do not
change, so the trees can be flattened once per pivot into heap-ordered arrays and a whole batch
walked level by level. The result equals `HalfSpaceTrees.score_one` bit for bit: masses are
integers, so every partial sum is exact in float64 whatever the order of addition.

Learning stays River's own (`learn_one`); `HalfSpaceBatchScorer` only reads the trees.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from river import anomaly
from river.tree.padded import PaddedBranch

_MIN_BATCH = 4


class HalfSpaceBatchScorer:
    """A River `HalfSpaceTrees` that learns one row at a time and scores a batch at once.

    `features` names the matrix columns, in the order of the keys the trees learn. `learn_one`
    is River's; `score_many(X)` flattens the trees again only after the forest pivoted its
    window (every `window_size` learned rows).
    """

    def __init__(self, hst: anomaly.HalfSpaceTrees, features: Sequence[str]) -> None:
        self.hst = hst
        self.features = tuple(features)
        self._column = {name: i for i, name in enumerate(self.features)}
        self._stale = True
        self._feature = np.zeros((0, 0), dtype=np.intp)
        self._threshold = np.zeros((0, 0))
        self._r_mass = np.zeros((0, 0))

    def learn_one(self, x: dict[str, float]) -> None:
        self.hst.learn_one(x)
        if self.hst.counter == 0:  # the window pivoted: r_mass changed
            self._stale = True

    def _compile(self) -> None:
        trees = self.hst.trees
        n_nodes = 2 ** (self.hst.height + 1) - 1
        feature = np.zeros((len(trees), n_nodes), dtype=np.intp)
        threshold = np.zeros((len(trees), n_nodes))
        r_mass = np.zeros((len(trees), n_nodes))
        for t, root in enumerate(trees):
            level = [root]
            index = 0
            while level:
                following = []
                for node in level:
                    r_mass[t, index] = node.r_mass
                    if isinstance(node, PaddedBranch):
                        feature[t, index] = self._column[node.feature]
                        threshold[t, index] = node.threshold
                        following.extend(node.children)
                    index += 1
                level = following
        self._feature, self._threshold, self._r_mass = feature, threshold, r_mass
        self._stale = False

    def score_many(self, X: np.ndarray) -> np.ndarray:
        """`HalfSpaceTrees.score_one` of every row of `X` (0 before the first window is full)."""
        hst = self.hst
        m = len(X)
        if hst._first_window or m == 0:
            return np.zeros(m)
        if m < _MIN_BATCH:  # numpy's per-call cost exceeds River's own walk for a few rows
            names = self.features
            return np.array([hst.score_one(dict(zip(names, x, strict=True))) for x in X.tolist()])
        if self._stale:
            self._compile()
        n_trees = len(hst.trees)
        size_limit = 0.1 * hst.window_size
        tree = np.arange(n_trees)[:, None]
        rows = np.arange(m)[None, :]
        node = np.zeros((n_trees, m), dtype=np.intp)
        alive = np.ones((n_trees, m), dtype=bool)
        score = np.zeros((n_trees, m))
        weight = 1.0
        for _ in range(hst.height):
            r = self._r_mass[tree, node]
            score += np.where(alive, r * weight, 0.0)
            alive &= r >= size_limit
            value = X[rows, self._feature[tree, node]]
            node = 2 * node + np.where(value < self._threshold[tree, node], 1, 2)
            weight *= 2.0
        score += np.where(alive, self._r_mass[tree, node] * weight, 0.0)
        return 1.0 - score.sum(axis=0) / hst._max_score
