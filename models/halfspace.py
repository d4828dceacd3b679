"""River's `HalfSpaceTrees`, learned and scored a batch at a time with its masses in arrays.

River learns and scores one dict at a time, walking every tree in Python (8 trees of height 6
are ~60 node visits per sample). Here River builds the trees (the same random features and
split points as its own `learn_one` would), and the node masses then live in heap-ordered
arrays, one row per tree: a batch is routed level by level in numpy, learning adds the visits
of every node at once, and a window pivot copies one array into the other. Learning and scores
equal River's `learn_one` / `score_one` bit for bit: masses are integers, so every partial sum
is exact in float64 whatever the order of addition.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from river import anomaly
from river.tree.padded import PaddedBranch

_MIN_BATCH = 4  # below this many rows numpy's per-call cost exceeds a walk in Python


class BatchedHalfSpaceTrees:
    """A River `HalfSpaceTrees` that learns and scores rows of a matrix.

    `features` names the matrix columns, in the order of the keys the trees split on. The
    first learned row builds the trees through River's `learn_one`; from then on the masses
    are this object's arrays (River's nodes keep that first row's masses only).
    """

    def __init__(self, hst: anomaly.HalfSpaceTrees, features: Sequence[str]) -> None:
        self.hst = hst
        self.features = tuple(features)
        self.first_window = True  # no window completed yet: every score is 0
        self.counter = 0  # rows learned in the current window
        self._feature = np.zeros((0, 0), dtype=np.intp)  # split feature per tree and node
        self._threshold = np.zeros((0, 0))
        self._l_mass = np.zeros((0, 0))  # visits in the current window
        self._r_mass = np.zeros((0, 0))  # visits in the last complete window (what scores read)
        self._splits: list[tuple[list[int], list[float]]] = []  # per tree, for walks in Python
        self._r_list: list[list[float]] | None = None  # _r_mass as lists, until the next pivot

    @property
    def window_size(self) -> int:
        return self.hst.window_size

    def learn_many(self, X: np.ndarray) -> None:
        """Learn the rows of `X` in order, pivoting the window every `window_size` rows."""
        if len(X) == 0:
            return
        if not self.hst.trees:
            self.hst.learn_one(dict(zip(self.features, X[0].tolist(), strict=True)))
            self._flatten()
            self.counter, self.first_window = self.hst.counter, self.hst._first_window
            X = X[1:]
        while len(X):
            take = min(len(X), self.window_size - self.counter)
            self._visit(X[:take])
            X = X[take:]
            self._count(take)

    def _count(self, rows: int) -> None:
        """Count rows learned into the window, pivoting it once full."""
        self.counter += rows
        if self.counter == self.window_size:
            self._r_mass = self._l_mass
            self._r_list = None
            self._l_mass = np.zeros_like(self._r_mass)
            self.counter = 0
            self.first_window = False

    def _flatten(self) -> None:
        """The trees' splits and masses as arrays in heap order (children of i: 2i+1, 2i+2)."""
        trees = self.hst.trees
        column = {name: i for i, name in enumerate(self.features)}
        n_nodes = 2 ** (self.hst.height + 1) - 1
        feature = np.zeros((len(trees), n_nodes), dtype=np.intp)
        threshold = np.zeros((len(trees), n_nodes))
        l_mass = np.zeros((len(trees), n_nodes))
        r_mass = np.zeros((len(trees), n_nodes))
        for t, root in enumerate(trees):
            level = [root]
            index = 0
            while level:
                following = []
                for node in level:
                    l_mass[t, index], r_mass[t, index] = node.l_mass, node.r_mass
                    if isinstance(node, PaddedBranch):
                        feature[t, index] = column[node.feature]
                        threshold[t, index] = node.threshold
                        following.extend(node.children)
                    index += 1
                level = following
        self._feature, self._threshold = feature, threshold
        self._l_mass, self._r_mass = l_mass, r_mass
        self._splits = list(zip(feature.tolist(), threshold.tolist(), strict=True))
        self._r_list = None

    def _walk(self, x: list[float]) -> list[list[int]]:
        """Per tree, the nodes one row visits from the root to a leaf (a few rows: no numpy)."""
        height = self.hst.height
        paths = []
        for feature, threshold in self._splits:
            node = 0
            path = [0]
            for _ in range(height):
                node = 2 * node + (1 if x[feature[node]] < threshold[node] else 2)
                path.append(node)
            paths.append(path)
        return paths

    def _paths(self, X: np.ndarray) -> list[np.ndarray]:
        """Per depth 0..height, the node each row reaches in each tree (trees x rows), as
        indices into the flattened mass arrays (tree * nodes per tree + node)."""
        n_trees, n_nodes = self._feature.shape
        values = np.ascontiguousarray(X).ravel()
        row_start = (np.arange(len(X)) * X.shape[1])[None, :]
        tree_start = (np.arange(n_trees) * n_nodes)[:, None]
        feature, threshold = self._feature.ravel(), self._threshold.ravel()
        node = np.zeros((n_trees, len(X)), dtype=np.intp)
        flat = node + tree_start
        paths = [flat]
        for _ in range(self.hst.height):
            left = values.take(row_start + feature.take(flat)) < threshold.take(flat)
            node = 2 * node + 2 - left
            flat = node + tree_start
            paths.append(flat)
        return paths

    def _visit(self, X: np.ndarray) -> None:
        """Add one visit to every node on each row's path, in every tree."""
        n_trees, n_nodes = self._l_mass.shape
        if len(X) < _MIN_BATCH:
            visited = [
                t * n_nodes + node
                for x in X.tolist()
                for t, path in enumerate(self._walk(x))
                for node in path
            ]
        else:
            visited = np.concatenate([flat.ravel() for flat in self._paths(X)])
        self._add_visits(visited)

    def _add_visits(self, visited: np.ndarray | list[int]) -> None:
        """One visit to each node given (flat indices; a node may repeat)."""
        n_trees, n_nodes = self._l_mass.shape
        self._l_mass += np.bincount(visited, minlength=n_trees * n_nodes).reshape(n_trees, n_nodes)

    def score_learn_many(self, X: np.ndarray, every: int = 1, start: int = 0) -> np.ndarray:
        """`score_many(X)`, then `learn_many(X[start::every])`, routing each row once: the
        trees' splits never change after the first row, only their masses."""
        if self.first_window or len(X) < _MIN_BATCH:
            scores = self.score_many(X)
            self.learn_many(X[start::every])
            return scores
        paths = self._paths(X)
        scores = self._scores(paths, len(X))
        learnt = [flat[:, start::every] for flat in paths]
        done, n = 0, learnt[0].shape[1]
        while done < n:  # the window pivots as in `learn_many`
            take = min(n - done, self.window_size - self.counter)
            part = [flat[:, done : done + take].ravel() for flat in learnt]
            self._add_visits(np.concatenate(part))
            done += take
            self._count(take)
        return scores

    def score_many(self, X: np.ndarray) -> np.ndarray:
        """`HalfSpaceTrees.score_one` of every row of `X` (0 before the first window is full)."""
        m = len(X)
        if self.first_window or m == 0:
            return np.zeros(m)
        if m < _MIN_BATCH:
            size_limit = self._size_limit
            return np.array([self._score_one(x, size_limit) for x in X.tolist()])
        return self._scores(self._paths(X), m)

    @property
    def _size_limit(self) -> float:
        """River's mass below which a path's score stops adding up."""
        return 0.1 * self.hst.window_size

    def _scores(self, paths: list[np.ndarray], m: int) -> np.ndarray:
        """`score_many` of the `m` rows whose `_paths` these are (past the first window)."""
        size_limit = self._size_limit
        r_mass = self._r_mass.ravel()
        score = np.zeros((len(self._r_mass), m))
        alive = np.ones((len(self._r_mass), m), dtype=bool)
        weight = 1.0
        for flat in paths:  # a path stops below the first node under size_limit
            r = r_mass.take(flat)
            score += np.where(alive, r * weight, 0.0)
            alive &= r >= size_limit
            weight *= 2.0
        return 1.0 - score.sum(axis=0) / self.hst._max_score

    def _score_one(self, x: list[float], size_limit: float) -> float:
        if self._r_list is None:
            self._r_list = self._r_mass.tolist()
        score = 0.0
        for r_mass, path in zip(self._r_list, self._walk(x), strict=True):
            weight = 1.0
            for node in path:
                score += r_mass[node] * weight
                if r_mass[node] < size_limit:
                    break
                weight *= 2.0
        return 1.0 - score / self.hst._max_score
