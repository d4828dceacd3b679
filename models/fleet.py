"""Fleet-level forests shared by all VMs, fed with per-VM-standardised features.

One River `HalfSpaceTrees` costs ~1 MB of heap and tens of milliseconds to build, so a forest
per VM cannot scale to 100k VMs. After per-VM standardisation every VM's normal behaviour looks
alike (each metric ~ zero-mean, unit-scale), so one forest learns the joint shape of "normal"
for the whole fleet — which metrics move together — and scores any VM against it. Inputs are
z-scores squashed into [0, 1] (HalfSpaceTrees' domain) with `0.5 + 0.5 * tanh(z / 4)`; a missing
metric sits at 0.5 ("typical").

The incremental Isolation Forest (`models.isolation_forest`) joins as a second forest when that
module is importable; it is scored and learned vectorised over a batch. It learns in chunks of
at least `iforest_learn_chunk` rows: a structural update costs about as much for one row as for
thirty (splits, collapses and a routing pass, a few hundred µs), so small batches, such as a
worker's batch of one single-sample record, are scored at once and learned with the next ones.
A row is then scored against a forest that has learned all but at most the last
`iforest_learn_chunk - 1` rows before it (31 out of a window of 1,024 in the engine).
"""

from __future__ import annotations

import importlib
import importlib.util

import numpy as np
from river import anomaly

from models.halfspace import BatchedHalfSpaceTrees


def squash(Z: np.ndarray) -> np.ndarray:
    """z-scores into HalfSpaceTrees' [0, 1] domain."""
    return 0.5 + 0.5 * np.tanh(Z * 0.25)


def _load_isolation_forest():
    try:
        if importlib.util.find_spec("models.isolation_forest") is None:
            return None
        module = importlib.import_module("models.isolation_forest")
        return getattr(module, "IncrementalIsolationForest", None)
    except Exception:  # a half-written or broken module must not take the engine down
        return None


class FleetForests:
    """Shared detectors over batches of squashed, standardised feature vectors.

    `X` holds z-scores (rows = samples, columns = `features`; 0 = typical).
    `score_and_learn(X)` returns one raw score array per ready forest (higher = more anomalous)
    using only what was learned before the batch, then learns it (HalfSpaceTrees learns every
    `learn_every`-th row, which keeps its cost per sample low).
    """

    def __init__(
        self,
        features: tuple[str, ...],
        seed: int = 0,
        use_halfspace: bool = True,
        hst_trees: int = 10,
        hst_height: int = 8,
        hst_window: int = 250,
        learn_every: int = 4,
        use_isolation_forest: bool = True,
        iforest_trees: int = 50,
        iforest_window: int = 256,
        iforest_learn_chunk: int = 32,
    ) -> None:
        self.features = features
        self.iforest_learn_chunk = max(1, iforest_learn_chunk)
        self._iforest_pending: list[np.ndarray] = []
        self.learn_every = max(1, learn_every)
        self._rows_seen = 0
        self.hst = (
            BatchedHalfSpaceTrees(
                anomaly.HalfSpaceTrees(
                    n_trees=hst_trees, height=hst_height, window_size=hst_window, seed=seed
                ),
                features,
            )
            if use_halfspace
            else None
        )
        self.iforest = None
        if use_isolation_forest:
            cls = _load_isolation_forest()
            if cls is not None:
                try:
                    self.iforest = cls(n_trees=iforest_trees, window_size=iforest_window, seed=seed)
                except Exception:
                    self.iforest = None

    @property
    def names(self) -> tuple[str, ...]:
        names = []
        if self.hst is not None:
            names.append("halfspace")
        if self.iforest is not None:
            names.append("iforest")
        return tuple(names)

    def score_and_learn(
        self, X: np.ndarray, rows: np.ndarray | None = None
    ) -> dict[str, np.ndarray]:
        """Score the batch with what came before it, then learn it (one forest routing pass).

        Only the rows selected by the boolean mask `rows` (all when None) are scored and
        learned; the others get NaN."""
        out = self._score_learn_halfspace(X, rows)
        if self.iforest is not None and len(X):
            if rows is None:
                out["iforest"] = self._score_learn_iforest(X)
            else:
                scores = np.full(len(X), np.nan)
                if rows.any():
                    scores[rows] = self._score_learn_iforest(X[rows])
                out["iforest"] = scores
        return out

    def _score_learn_iforest(self, X: np.ndarray) -> np.ndarray:
        """Isolation Forest scores of X's rows; X is learned now or with the next rows."""
        if not self._iforest_pending and len(X) >= self.iforest_learn_chunk:
            return np.asarray(self.iforest.score_learn_many(X), dtype=float)
        scores = np.asarray(self.iforest.score_many(X), dtype=float)
        self._iforest_pending.append(np.array(X, dtype=float))
        if self._iforest_pending_rows >= self.iforest_learn_chunk:
            self.iforest.learn_many(np.concatenate(self._iforest_pending))
            self._iforest_pending.clear()
        return scores

    @property
    def _iforest_pending_rows(self) -> int:
        """Rows scored but not yet learned by the Isolation Forest."""
        return sum(len(part) for part in self._iforest_pending)

    def _score_learn_halfspace(
        self, X: np.ndarray, rows: np.ndarray | None
    ) -> dict[str, np.ndarray]:
        """HalfSpaceTrees' scores of the selected rows (none until its first reference window
        is complete: it scores 0 until then), then it learns every `learn_every`-th of them."""
        if self.hst is None or len(X) == 0:
            return {}
        H = squash(X if rows is None else X[rows])
        start = (-self._rows_seen) % self.learn_every
        self._rows_seen += len(H)
        if self.hst.first_window:
            self.hst.learn_many(H[start :: self.learn_every])
            return {}
        scores = np.full(len(X), np.nan)
        scores[slice(None) if rows is None else rows] = self.hst.score_learn_many(
            H, self.learn_every, start
        )
        return {"halfspace": scores}
