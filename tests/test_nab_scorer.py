"""NAB-compatible scorer: hand-computed values on tiny synthetic series."""

from __future__ import annotations

import math

import numpy as np
import pytest

from bench.nab_scorer import (
    NEVER_FIRES,
    PROFILES,
    SeriesLabels,
    load_windows,
    normalised_score,
    optimize_threshold,
    probation_length,
    scaled_sigmoid,
    score_alerts,
    score_corpus,
    score_detections,
    score_file,
    sweep_thresholds,
)

STANDARD = PROFILES["standard"]
LOW_FP = PROFILES["reward_low_FP"]
LOW_FN = PROFILES["reward_low_FN"]


def s_of(p: float) -> float:
    """2 * sigmoid(-5p) - 1 written as tanh(-5p / 2), an independent form of the same curve."""
    return -1.0 if p > 3 else math.tanh(-2.5 * p)


def one_window() -> SeriesLabels:
    """100 rows (15 probation rows), one window on rows 40..49 (width 10)."""
    return SeriesLabels.from_rows("one", 100, [(40, 49)])


def detect(n: int, *rows: int) -> np.ndarray:
    detected = np.zeros(n, dtype=bool)
    detected[list(rows)] = True
    return detected


def test_probation_length() -> None:
    assert probation_length(100) == 15
    assert probation_length(4032) == 604
    assert probation_length(4730) == 709
    assert probation_length(5000) == 750
    assert probation_length(100_000) == 750


def test_scaled_sigmoid_shape() -> None:
    assert scaled_sigmoid(0.0) == pytest.approx(0.0)
    assert scaled_sigmoid(-1.0) == pytest.approx(math.tanh(2.5))
    assert scaled_sigmoid(2.9) == pytest.approx(math.tanh(-7.25))
    assert scaled_sigmoid(3.01) == -1.0


def test_detection_at_left_edge_earns_tp_weight() -> None:
    result = score_detections(one_window(), detect(100, 40), STANDARD)
    assert result.raw == pytest.approx(1.0)
    assert (result.true_positives, result.false_negatives, result.false_positives) == (1, 0, 0)


def test_detection_at_right_edge_earns_little() -> None:
    result = score_detections(one_window(), detect(100, 49), STANDARD)
    assert result.raw == pytest.approx(s_of(-0.1) / s_of(-1.0))
    assert result.raw == pytest.approx(0.24824, abs=1e-5)


def test_only_first_detection_in_a_window_counts() -> None:
    result = score_detections(one_window(), detect(100, 41, 45, 48), STANDARD)
    assert result.raw == pytest.approx(s_of(-0.9) / s_of(-1.0))
    assert result.true_positives == 1
    assert result.false_positives == 0
    assert result.detections == 3


def test_missed_window_costs_fn_weight() -> None:
    assert score_detections(one_window(), detect(100), STANDARD).raw == -1.0
    assert score_detections(one_window(), detect(100), LOW_FN).raw == -2.0


def test_false_positive_right_after_window_is_cheap() -> None:
    result = score_detections(one_window(), detect(100, 40, 50), STANDARD)
    expected_fp = 0.11 * s_of(1 / 9)
    assert result.raw == pytest.approx(1.0 + expected_fp)
    assert -0.03 < expected_fp < -0.029
    assert result.false_positives == 1


def test_false_positive_far_after_window_costs_full_fp_weight() -> None:
    # |90 - 49| / 9 > 3: the curve is clamped to -1.
    result = score_detections(one_window(), detect(100, 40, 90), LOW_FP)
    assert result.raw == pytest.approx(1.0 - 0.22)


def test_false_positive_before_any_window_costs_full_fp_weight() -> None:
    result = score_detections(one_window(), detect(100, 20, 40), STANDARD)
    assert result.raw == pytest.approx(1.0 - 0.11)


def test_probation_rows_are_ignored() -> None:
    result = score_detections(one_window(), detect(100, 0, 5, 14), STANDARD)
    assert result.raw == -1.0
    assert result.detections == 0
    assert score_detections(one_window(), detect(100, 15), STANDARD).false_positives == 1


def test_window_inside_probation_is_not_scored() -> None:
    labels = SeriesLabels.from_rows("early", 100, [(2, 6), (40, 49)])
    assert labels.scored_windows() == 1
    result = score_detections(labels, detect(100), STANDARD)
    assert (result.raw, result.false_negatives) == (-1.0, 1)
    # The preceding window still exists for a false positive after probation: p = 14 / 4 > 3.
    after = score_detections(labels, detect(100, 20), STANDARD)
    assert after.raw == pytest.approx(-1.0 - 0.11)
    near = SeriesLabels.from_rows("near", 100, [(5, 14), (40, 49)])
    assert score_detections(near, detect(100, 16), STANDARD).raw == pytest.approx(
        -1.0 + 0.11 * s_of(2 / 9)
    )


def test_threshold_is_inclusive() -> None:
    scores = np.zeros(100)
    scores[40] = 0.7
    assert score_file(one_window(), scores, 0.7, STANDARD).true_positives == 1
    assert score_file(one_window(), scores, 0.7000001, STANDARD).true_positives == 0


def test_windows_from_timestamps_map_to_rows() -> None:
    stamps = [f"2024-01-01 00:{minute:02d}:00" for minute in range(0, 60, 5)]
    labels = SeriesLabels.from_timestamps(
        "ts",
        stamps,
        [
            ("2024-01-01 00:10:00.000000", "2024-01-01 00:20:00.000000"),
            ("2024-01-01 00:41", "2024-01-01 00:49"),
        ],
    )
    assert labels.windows == ((2, 4), (9, 9))


def test_windows_must_not_overlap() -> None:
    with pytest.raises(ValueError, match="overlap"):
        SeriesLabels.from_rows("bad", 100, [(40, 49), (45, 60)])
    with pytest.raises(ValueError, match="outside"):
        SeriesLabels.from_rows("bad", 100, [(90, 100)])


def test_null_and_perfect_detectors_normalise_to_0_and_100() -> None:
    a = SeriesLabels.from_rows("a", 100, [(40, 49), (70, 79)])
    b = SeriesLabels.from_rows("b", 200, [(120, 139)])
    c = SeriesLabels.from_rows("c", 100, [])
    null_corpus = [(x, np.zeros(x.n_rows)) for x in (a, b, c)]
    perfect_corpus = []
    for labels in (a, b, c):
        scores = np.zeros(labels.n_rows)
        for left, _ in labels.windows:
            scores[left] = 1.0
        perfect_corpus.append((labels, scores))
    for name in PROFILES:
        assert score_corpus(null_corpus, 0.5, name).score == pytest.approx(0.0)
        assert score_corpus(perfect_corpus, 0.5, name).score == pytest.approx(100.0)
        assert optimize_threshold(perfect_corpus, name).score == pytest.approx(100.0)
        assert score_alerts(perfect_corpus, name).score == pytest.approx(100.0)
    standard = score_corpus(null_corpus, 0.5, "standard")
    assert (standard.null, standard.perfect) == (-3.0, 3.0)
    assert normalised_score(0.0, -3.0, 3.0) == 50.0


def test_optimized_threshold_trades_fp_against_windows() -> None:
    labels = one_window()
    scores = np.zeros(100)
    scores[40] = 0.6  # the window, at its left edge
    scores[[20, 21, 22]] = 0.9  # three FPs above it: worth -0.33 with fp 0.11, -0.66 with 0.22
    scores[60:72] = 0.5  # twelve FPs right below it
    best = optimize_threshold([(labels, scores)], "standard")
    assert best.threshold == 0.6
    assert best.raw == pytest.approx(1.0 - 0.33)
    # With fpWeight 0.22, raising the threshold to 0.6 still wins: 1 - 0.66 > -1.
    assert optimize_threshold([(labels, scores)], "reward_low_FP").threshold == 0.6
    scores[[23, 24, 25, 26, 27, 28, 29, 30, 31, 32]] = 0.95  # 13 FPs before it: 1 - 2.86 < -1
    never = optimize_threshold([(labels, scores)], "reward_low_FP")
    assert never.threshold == NEVER_FIRES
    assert never.score == pytest.approx(0.0)


def test_sweep_matches_brute_force_on_random_corpus() -> None:
    rng = np.random.default_rng(7)
    corpus = []
    for k, n in enumerate((120, 300, 80)):
        spans = [(50, 59), (90, 109)] if n >= 120 else [(30, 39)]
        scores = np.round(rng.random(n), 2)  # ties on purpose
        corpus.append((SeriesLabels.from_rows(f"f{k}", n, spans), scores))
    for name, profile in PROFILES.items():
        thresholds, raws = sweep_thresholds(corpus, profile)
        assert np.all(np.diff(thresholds) < 0)
        for threshold, raw in zip(thresholds, raws, strict=True):
            assert raw == pytest.approx(score_corpus(corpus, threshold, name).raw, abs=1e-9)
        candidates = np.unique(np.concatenate([s for _, s in corpus]))
        brute = max(score_corpus(corpus, t, name).raw for t in candidates)
        assert optimize_threshold(corpus, name).raw == pytest.approx(max(brute, raws[0]))


def test_load_windows(tmp_path) -> None:
    path = tmp_path / "windows.json"
    path.write_text(
        '{"x/a.csv": [["2024-01-01 00:10:00.000000", "2024-01-01 00:20:00"]], "b.csv": []}'
    )
    assert load_windows(path) == {
        "x/a.csv": [("2024-01-01 00:10:00.000000", "2024-01-01 00:20:00")],
        "b.csv": [],
    }


def test_scores_must_match_rows() -> None:
    with pytest.raises(ValueError, match="scores"):
        score_file(one_window(), np.zeros(99), 0.5, STANDARD)
    with pytest.raises(ValueError, match="finite"):
        score_file(one_window(), np.full(100, np.nan), 0.5, STANDARD)
