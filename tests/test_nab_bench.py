"""`make nab`'s runner on a small generated corpus: scores, and the published reference."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from bench.nab import format_report, run_nab
from bench.nab_published import PUBLISHED_STANDARD_RAW, reference_raw
from bench.nab_scorer import normalised_score
from tests.test_replay import START, STEP, write_nab

# Two file names NAB publishes results for; the contents are generated here.
KNOWN = ("artificialWithAnomaly/art_daily_jumpsup.csv", "realAWSCloudwatch/grok_asg_anomaly.csv")
ROWS = 800
SPIKE = 600


def _write_corpus(root: Path, names: tuple[str, ...]) -> None:
    """Noise around 10 with one spike to 60 on row SPIKE, labelled by a window around it."""
    windows = {}
    for k, name in enumerate(names):
        values = 10.0 + np.random.default_rng(k).normal(0.0, 1.0, ROWS)
        values[SPIKE] = 60.0
        path = root / "data" / name
        path.parent.mkdir(parents=True, exist_ok=True)
        write_nab(path, values)
        edges = (START + (SPIKE - 20) * STEP, START + (SPIKE + 20) * STEP)
        windows[name] = [[t.strftime("%Y-%m-%d %H:%M:%S") for t in edges]]
    (root / "windows.json").write_text(json.dumps(windows))


def test_published_tables_are_whole() -> None:
    """All 58 files for each detector, summing to the totals NAB publishes with them."""
    totals = {"Numenta HTM": 46.6345, "ARTime": 57.6608}
    for detector, table in PUBLISHED_STANDARD_RAW.items():
        assert len(table) == 58
        assert sum(table.values()) == pytest.approx(totals[detector], abs=1e-3)
        assert reference_raw(detector, [KNOWN[0], "realTweets/not_a_nab_file.csv"]) is None
        assert reference_raw(detector, []) is None


def test_runner_scores_the_corpus_and_the_references_on_the_same_files(tmp_path) -> None:
    _write_corpus(tmp_path, KNOWN)
    result = run_nab(tmp_path, workers=1, baselines=False)

    standard = result["detectors"]["novacron"]["optimized"]["standard"]
    assert result["files"] == 2 and result["windows"] == 2
    assert standard["true_positives"] == 2  # a 50-sigma spike is found in both files
    references = {ref["detector"]: ref for ref in result["references_same_files"]}
    assert set(references) == set(PUBLISHED_STANDARD_RAW)
    report = format_report(result)
    for detector, table in PUBLISHED_STANDARD_RAW.items():
        expected_raw = table[KNOWN[0]] + table[KNOWN[1]]
        assert references[detector]["raw"] == pytest.approx(expected_raw)
        # normalised with the same null (-2) and perfect (+2) as the product's score
        expected = normalised_score(expected_raw, -2.0, 2.0)
        assert references[detector]["score"] == pytest.approx(expected)
        assert result["per_file"][KNOWN[1]]["reference_raw"][detector] == table[KNOWN[1]]
        assert f"{detector} on the same files (standard, its published per-file results): " in (
            report
        )


def test_runner_leaves_the_references_out_when_a_file_is_not_nab(tmp_path) -> None:
    _write_corpus(tmp_path, (KNOWN[0], "own/generated_series.csv"))
    result = run_nab(tmp_path, workers=1, baselines=False)
    assert result["references_same_files"] == []
    assert result["per_file"][KNOWN[0]]["reference_raw"] == {}
    assert "on the same files" not in format_report(result)
