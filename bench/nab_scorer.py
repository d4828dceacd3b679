"""Score per-row anomaly scores against labelled windows the way the Numenta Anomaly Benchmark does.

Rules (NAB v1.1):

- The first ``min(floor(0.15 * n_rows), 750)`` rows of a file (probation) are not scored.
- A detection is a scored row whose anomaly score is ``>= threshold``.
- In a window ``[left, right]`` of ``width = right - left + 1`` rows only the first detection
  counts; on row ``i`` it is worth ``tp * S(p) / S(-1)`` with ``p = -(right - i + 1) / width``
  and ``S(p) = 2 * sigmoid(-5 p) - 1`` (``S(p) = -1`` for ``p > 3``). A window without a
  detection is worth ``-fn``.
- A detection outside every window is worth ``fp * S(p)`` with
  ``p = |i - prev_right| / (prev_width - 1)`` measured from the preceding window, or ``-fp``
  when no window precedes it.
- Corpus score = sum of file scores, normalised to ``100 * (raw - null) / (perfect - null)``.
- "Optimized" = the single corpus-wide threshold that maximises the raw corpus score.

Choices where the rules leave a detail open (each matches NAB v1.1's runner on its corpus):

- Window timestamps map to rows as: left = first row at or after the window start, right = last
  row at or before the window end (NAB requires exact matches; they agree whenever the
  timestamps match).
- Probation rows still define windows and the "preceding window" of a false positive; only
  their detections are ignored. A window lying wholly inside probation is neither detected nor
  missed (it is absent from the null score) but, as in NAB, still counts in ``perfect``.
- ``perfect = tp * number_of_windows`` (every window detected at its left edge);
  ``null`` is the score of a detector that never fires.
- A false positive after a one-row window (``prev_width - 1 == 0``) is worth ``-fp``.
- The clamp applies for ``p > 3`` (NAB's code clamps at ``p >= 3``; the two differ by 6e-7 * fp
  on rows exactly three widths past a window).
- Scores are summed in float64; the sweep's running sums can differ from a direct re-score by
  ~1e-8, so the reported raw score is recomputed directly at the chosen threshold.
- The threshold search is exact: every distinct score in the corpus is a candidate, evaluated
  in one sorted sweep (O(n log n)). Among thresholds with equal corpus score the highest wins.
  "Never fire" is reported as threshold 1.1 (NAB's starting value) when scores are in [0, 1].
"""

from __future__ import annotations

import bisect
import json
import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

import numpy as np

PROBATION_FRACTION = 0.15
PROBATION_MAX_ROWS = 750
NEVER_FIRES = 1.1


@dataclass(frozen=True)
class CostProfile:
    """Weights of a true positive, a missed window and a false-positive row."""

    tp_weight: float
    fn_weight: float
    fp_weight: float


PROFILES: dict[str, CostProfile] = {
    "standard": CostProfile(tp_weight=1.0, fn_weight=1.0, fp_weight=0.11),
    "reward_low_FP": CostProfile(tp_weight=1.0, fn_weight=1.0, fp_weight=0.22),
    "reward_low_FN": CostProfile(tp_weight=1.0, fn_weight=2.0, fp_weight=0.11),
}


def probation_length(n_rows: int) -> int:
    """Number of leading rows that are not scored."""
    return min(math.floor(PROBATION_FRACTION * n_rows), PROBATION_MAX_ROWS)


def scaled_sigmoid(position: float | np.ndarray) -> float | np.ndarray:
    """``2 * sigmoid(-5 p) - 1``, clamped to -1 beyond ``p = 3``; runs from ~0.987 to -1."""
    p = np.asarray(position, dtype=float)
    with np.errstate(over="ignore"):
        value = np.where(p > 3.0, -1.0, 2.0 / (1.0 + np.exp(5.0 * p)) - 1.0)
    return float(value) if value.ndim == 0 else value


_S_LEFT_EDGE = float(scaled_sigmoid(-1.0))


def parse_timestamp(text: str) -> float:
    """Epoch seconds of an ISO-8601 / NAB timestamp; naive times are taken as UTC."""
    moment = datetime.fromisoformat(text.strip())
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    return moment.timestamp()


@dataclass(frozen=True, eq=False)
class SeriesLabels:
    """One file's windows as row ranges, plus the unweighted value of a detection on each row.

    ``unit_value`` holds ``S(p) / S(-1)`` on window rows and ``S(p)`` (or -1) elsewhere;
    a profile multiplies it by ``tp`` or ``fp``. ``window_of_row`` is the window index or -1.
    """

    name: str
    n_rows: int
    probation: int
    windows: tuple[tuple[int, int], ...]
    window_of_row: np.ndarray
    unit_value: np.ndarray

    @classmethod
    def from_rows(cls, name: str, n_rows: int, windows: Iterable[tuple[int, int]]) -> SeriesLabels:
        """Build from inclusive ``(left, right)`` row ranges, sorted and non-overlapping."""
        spans = tuple((int(left), int(right)) for left, right in windows)
        previous_right = -1
        for left, right in spans:
            if not 0 <= left <= right < n_rows:
                raise ValueError(f"{name}: window {left}..{right} outside rows 0..{n_rows - 1}")
            if left <= previous_right:
                raise ValueError(f"{name}: windows overlap or are unsorted at row {left}")
            previous_right = right

        window_of_row = np.full(n_rows, -1, dtype=np.int64)
        unit_value = np.full(n_rows, -1.0)
        rows = np.arange(n_rows)
        cursor, prev_right, prev_width = 0, None, None
        for index, (left, right) in enumerate(spans):
            _fill_outside(unit_value, rows, cursor, left, prev_right, prev_width)
            width = right - left + 1
            position = -(right - rows[left : right + 1] + 1) / width
            unit_value[left : right + 1] = scaled_sigmoid(position) / _S_LEFT_EDGE
            window_of_row[left : right + 1] = index
            cursor, prev_right, prev_width = right + 1, right, width
        _fill_outside(unit_value, rows, cursor, n_rows, prev_right, prev_width)
        return cls(name, n_rows, probation_length(n_rows), spans, window_of_row, unit_value)

    @classmethod
    def from_timestamps(
        cls, name: str, timestamps: Sequence[str], windows: Iterable[Sequence[str]]
    ) -> SeriesLabels:
        """Build from a file's timestamp column and ``[start, end]`` timestamp pairs."""
        moments = [parse_timestamp(t) for t in timestamps]
        if any(b < a for a, b in zip(moments, moments[1:], strict=False)):
            raise ValueError(f"{name}: timestamps are not in order")
        spans = []
        for start, end in windows:
            left = bisect.bisect_left(moments, parse_timestamp(start))
            right = bisect.bisect_right(moments, parse_timestamp(end)) - 1
            if left > right:
                raise ValueError(f"{name}: window {start} .. {end} contains no row")
            spans.append((left, right))
        return cls.from_rows(name, len(moments), spans)

    def scored_windows(self) -> int:
        """Windows with at least one row after probation (the ones that can be missed)."""
        return sum(1 for _, right in self.windows if right >= self.probation)


def _fill_outside(
    unit_value: np.ndarray,
    rows: np.ndarray,
    start: int,
    stop: int,
    prev_right: int | None,
    prev_width: int | None,
) -> None:
    if start >= stop:
        return
    if prev_right is None or prev_width is None or prev_width <= 1:
        unit_value[start:stop] = -1.0
        return
    position = np.abs(rows[start:stop] - prev_right) / (prev_width - 1)
    unit_value[start:stop] = scaled_sigmoid(position)


def load_windows(path: str | Path) -> dict[str, list[tuple[str, str]]]:
    """Read a NAB ``windows.json``: relative file name -> list of ``[start, end]`` timestamps."""
    raw = json.loads(Path(path).read_text())
    return {name: [(str(a), str(b)) for a, b in spans] for name, spans in raw.items()}


def load_label_points(path: str | Path) -> dict[str, list[str]]:
    """Read a NAB ``labels.json``: relative file name -> the labelled anomaly timestamps."""
    raw = json.loads(Path(path).read_text())
    return {name: [str(t) for t in points] for name, points in raw.items()}


@dataclass(frozen=True)
class FileScore:
    """One file's raw score and detection counts at one threshold."""

    raw: float
    true_positives: int
    false_negatives: int
    false_positives: int
    detections: int


@dataclass(frozen=True)
class CorpusScore:
    """A corpus scored under one profile at one threshold."""

    profile: str
    threshold: float
    raw: float
    null: float
    perfect: float
    score: float
    files: dict[str, FileScore]


def score_detections(labels: SeriesLabels, detected: np.ndarray, profile: CostProfile) -> FileScore:
    """Score a boolean detection per row (probation rows are ignored)."""
    detected = np.asarray(detected, dtype=bool)
    if detected.shape != (labels.n_rows,):
        raise ValueError(f"{labels.name}: {detected.shape[0]} values for {labels.n_rows} rows")
    detected = detected.copy()
    detected[: labels.probation] = False
    false_positive = detected & (labels.window_of_row < 0)
    raw = profile.fp_weight * float(labels.unit_value[false_positive].sum())
    tp = fn = 0
    for left, right in labels.windows:
        first_scored = max(left, labels.probation)
        if first_scored > right:
            continue
        hits = np.flatnonzero(detected[first_scored : right + 1])
        if hits.size:
            raw += profile.tp_weight * float(labels.unit_value[first_scored + hits[0]])
            tp += 1
        else:
            raw -= profile.fn_weight
            fn += 1
    return FileScore(raw, tp, fn, int(false_positive.sum()), int(detected.sum()))


def score_file(
    labels: SeriesLabels, scores: np.ndarray, threshold: float, profile: CostProfile
) -> FileScore:
    """Score per-row anomaly scores: a detection is ``score >= threshold``."""
    return score_detections(labels, _as_scores(labels, scores) >= threshold, profile)


def null_score(corpus: Iterable[SeriesLabels], profile: CostProfile) -> float:
    """Raw score of a detector that never fires."""
    return -profile.fn_weight * sum(labels.scored_windows() for labels in corpus)


def perfect_score(corpus: Iterable[SeriesLabels], profile: CostProfile) -> float:
    """Raw score of a detector that fires on every window's left edge and nowhere else."""
    return profile.tp_weight * sum(len(labels.windows) for labels in corpus)


def normalised_score(raw: float, null: float, perfect: float) -> float:
    """``100 * (raw - null) / (perfect - null)``: 0 for the null detector, 100 for perfect."""
    if perfect == null:
        raise ValueError("the corpus has no labelled window: the score is undefined")
    return 100.0 * (raw - null) / (perfect - null)


def score_corpus(
    corpus: Sequence[tuple[SeriesLabels, np.ndarray]], threshold: float, profile_name: str
) -> CorpusScore:
    """Score every file at one threshold and normalise the sum."""
    profile = PROFILES[profile_name]
    files = {
        labels.name: score_file(labels, scores, threshold, profile) for labels, scores in corpus
    }
    return _corpus_score(corpus, profile_name, threshold, files)


def score_alerts(
    corpus: Sequence[tuple[SeriesLabels, np.ndarray]], profile_name: str
) -> CorpusScore:
    """The "fixed" score: each row's 0/1 alert is the detection (threshold 1)."""
    return score_corpus(corpus, 1.0, profile_name)


def sweep_thresholds(
    corpus: Sequence[tuple[SeriesLabels, np.ndarray]], profile: CostProfile
) -> tuple[np.ndarray, np.ndarray]:
    """Raw corpus score at every distinct threshold, highest threshold first.

    The first entry is the detector that never fires. Rows are visited by descending score; a
    false-positive row adds its value once, a window's value is the best (earliest) detection
    seen so far in it, replacing the ``-fn`` it started with.
    """
    parts_score, parts_value, parts_window = [], [], []
    window_offset = 0
    base = 0.0
    for labels, scores in corpus:
        start = labels.probation
        window = labels.window_of_row[start:]
        unit = labels.unit_value[start:]
        inside = window >= 0
        parts_score.append(_as_scores(labels, scores)[start:])
        parts_value.append(np.where(inside, profile.tp_weight * unit, profile.fp_weight * unit))
        parts_window.append(np.where(inside, window + window_offset, -1))
        window_offset += len(labels.windows)
        base -= profile.fn_weight * labels.scored_windows()

    if not parts_score or sum(p.size for p in parts_score) == 0:
        return np.array([NEVER_FIRES]), np.array([base])
    score = np.concatenate(parts_score)
    value = np.concatenate(parts_value)
    window = np.concatenate(parts_window)

    order = np.argsort(-score, kind="stable")
    score, value, window = score[order], value[order], window[order]
    delta = np.where(window < 0, value, 0.0)
    in_window = np.flatnonzero(window >= 0)
    if in_window.size:
        grouped = in_window[np.argsort(window[in_window], kind="stable")]
        boundaries = np.flatnonzero(np.diff(window[grouped])) + 1
        for rows in np.split(grouped, boundaries):
            best = np.maximum.accumulate(value[rows])
            delta[rows] = np.diff(best, prepend=-profile.fn_weight)
    running = base + np.cumsum(delta)
    last_of_tie = np.flatnonzero(np.append(score[1:] != score[:-1], True))
    never = max(NEVER_FIRES, float(np.nextafter(score[0], np.inf)))
    thresholds = np.concatenate(([never], score[last_of_tie]))
    raws = np.concatenate(([base], running[last_of_tie]))
    return thresholds, raws


def optimize_threshold(
    corpus: Sequence[tuple[SeriesLabels, np.ndarray]], profile_name: str
) -> CorpusScore:
    """The "optimized" score: the one threshold that maximises the corpus score."""
    thresholds, raws = sweep_thresholds(corpus, PROFILES[profile_name])
    best = int(np.argmax(raws))
    return score_corpus(corpus, float(thresholds[best]), profile_name)


def _corpus_score(
    corpus: Sequence[tuple[SeriesLabels, np.ndarray]],
    profile_name: str,
    threshold: float,
    files: dict[str, FileScore],
) -> CorpusScore:
    profile = PROFILES[profile_name]
    labels = [item[0] for item in corpus]
    null = null_score(labels, profile)
    perfect = perfect_score(labels, profile)
    raw = sum(f.raw for f in files.values())
    score = normalised_score(raw, null, perfect)
    return CorpusScore(profile_name, threshold, raw, null, perfect, score, files)


def _as_scores(labels: SeriesLabels, scores: np.ndarray) -> np.ndarray:
    values = np.asarray(scores, dtype=float)
    if values.shape != (labels.n_rows,):
        raise ValueError(f"{labels.name}: {values.size} scores for {labels.n_rows} rows")
    if not np.all(np.isfinite(values)):
        raise ValueError(f"{labels.name}: anomaly scores must be finite")
    return values
