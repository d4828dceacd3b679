"""topics.yaml is the one source of truth: it loads, it is complete, and it is checked."""

from __future__ import annotations

from pathlib import Path

import pytest

from streams.topics import REQUIRED_IDS, TopicsFileError, load_topics
from streams.validation import RANGES

ROOT = Path(__file__).resolve().parent.parent


def test_repository_topics_file_declares_every_topic() -> None:
    specs = load_topics(ROOT / "topics.yaml")
    assert set(REQUIRED_IDS) <= set(specs)
    assert specs["metrics"].name == "vm.metrics" and specs["dlq"].name == "vm.metrics.dlq"
    for spec in specs.values():
        assert spec.partitions >= 1 and spec.retention_ms > 0 and spec.key and spec.schema
    assert specs["feedback"].partitions == specs["metrics"].partitions


def test_metric_schema_matches_validation_ranges() -> None:
    schema = load_topics(ROOT / "topics.yaml")["metrics"].schema
    props = schema["$defs"]["sample"]["properties"]
    for name, (low, high) in RANGES.items():
        assert (props[name]["minimum"], props[name]["maximum"]) == (low, high), name


def test_dlq_reasons_in_schema_cover_every_reason_the_code_gives() -> None:
    import re

    schema = load_topics(ROOT / "topics.yaml")["dlq"].schema
    declared = set(schema["properties"]["reason"]["enum"])
    code = (ROOT / "streams" / "validation.py").read_text() + (
        ROOT / "streams" / "processor.py"
    ).read_text()
    used = set(re.findall(r'_Invalid\(\s*"(\w+)"', code))
    used |= set(re.findall(r'_reject_feedback\(\s*raw, source, "(\w+)"', code))
    assert used and used <= declared


def test_prefix_applies_to_every_name() -> None:
    specs = load_topics(ROOT / "topics.yaml", prefix="x.")
    assert all(s.name.startswith("x.vm.") for s in specs.values())


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("topics: 3", "'topics' list"),
        ("topics:\n  - {id: metrics, name: a, role: input, partitions: 1}", "missing field"),
        (
            "topics:\n  - {id: metrics, name: a, role: bogus, partitions: 1, replication_factor: 1,"
            " retention_ms: 1, cleanup_policy: delete}",
            "role",
        ),
        (
            "topics:\n  - {id: metrics, name: a, role: input, partitions: 1, replication_factor: 1,"
            " retention_ms: 1, cleanup_policy: delete}",
            "missing topic ids",
        ),
    ],
)
def test_broken_files_fail_clearly(tmp_path: Path, text: str, message: str) -> None:
    path = tmp_path / "topics.yaml"
    path.write_text(text)
    with pytest.raises(TopicsFileError, match=message):
        load_topics(path)


def test_missing_file_fails_clearly(tmp_path: Path) -> None:
    with pytest.raises(TopicsFileError, match="cannot read"):
        load_topics(tmp_path / "nope.yaml")
