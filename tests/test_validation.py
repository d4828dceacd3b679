"""The `vm.metrics` contract: what is accepted, the reason given for what is not, and how
records are counted by outcome."""

from __future__ import annotations

import json
import time

import pytest
from hypothesis import given
from hypothesis import strategies as st
from prometheus_client import REGISTRY

from models.engine import AnomalyEngine
from streams.processor import MetricsProcessor, Source
from streams.validation import Validator

NOW = 1_800_000_000.0
V = Validator(max_record_bytes=4096, max_batch_samples=3)


def parse(doc: object):
    return V.parse(json.dumps(doc).encode(), now=NOW)


def test_single_sample_with_optional_metrics_and_unknown_fields() -> None:
    parsed = parse({"vm_id": "vm-1", "host": "h", "ts": NOW, "cpu_pct": 12.5, "extra": [1]})
    assert parsed.rejections == []
    (valid,) = parsed.samples
    assert valid.sample.vm_id == "vm-1" and valid.sample.values == {"cpu_pct": 12.5}
    assert valid.host == "h"


def test_rfc3339_timestamps() -> None:
    parsed = parse({"vm_id": "a", "ts": "2027-01-15T08:00:00+00:00", "mem_pct": 1})
    assert parsed.samples[0].sample.ts == 1_800_000_000.0
    assert (
        parse({"vm_id": "a", "ts": "2027-01-15T08:00:00", "mem_pct": 1}).rejections[0].reason
        == "bad_timestamp"
    )


@pytest.mark.parametrize(
    ("doc", "reason"),
    [
        ({"ts": NOW, "cpu_pct": 1}, "missing_field"),
        ({"vm_id": "a", "cpu_pct": 1}, "missing_field"),
        ({"vm_id": 7, "ts": NOW, "cpu_pct": 1}, "bad_type"),
        ({"vm_id": "", "ts": NOW, "cpu_pct": 1}, "out_of_range"),
        ({"vm_id": "a" * 200, "ts": NOW, "cpu_pct": 1}, "out_of_range"),
        ({"vm_id": "a", "ts": NOW, "cpu_pct": True}, "bad_type"),
        ({"vm_id": "a", "ts": NOW, "cpu_pct": "3"}, "bad_type"),
        ({"vm_id": "a", "ts": NOW, "cpu_pct": 100.01}, "out_of_range"),
        ({"vm_id": "a", "ts": NOW, "net_in_bps": -1}, "out_of_range"),
        ({"vm_id": "a", "ts": NOW, "net_in_bps": 10**400}, "out_of_range"),
        ({"vm_id": "a", "ts": NOW}, "no_metrics"),
        ({"vm_id": "a", "ts": 5, "cpu_pct": 1}, "bad_timestamp"),
        ({"vm_id": "a", "ts": NOW + 2 * 86_400, "cpu_pct": 1}, "bad_timestamp"),
        ({"vm_id": "a", "ts": [1], "cpu_pct": 1}, "bad_timestamp"),
        ({"samples": []}, "empty_batch"),
        ({"samples": {"vm_id": "a"}}, "bad_type"),
        ({"samples": [{"vm_id": "a", "ts": NOW, "cpu_pct": 1}] * 4}, "batch_too_large"),
        ([1, 2], "not_object"),
    ],
)
def test_rejections_name_their_reason(doc: object, reason: str) -> None:
    parsed = parse(doc)
    assert parsed.samples == []
    assert [r.reason for r in parsed.rejections] == [reason]
    assert parsed.rejections[0].detail


@pytest.mark.parametrize(
    ("raw", "reason"),
    [
        (b"", "not_json"),
        (b"{", "not_json"),
        (b"\xff", "not_utf8"),
        (b'{"vm_id": "a", "ts": 1800000000, "cpu_pct": NaN}', "not_finite"),
        (b'{"vm_id": "a", "ts": 1800000000, "cpu_pct": Infinity}', "not_finite"),
        (b'{"vm_id": "a", "ts": 1800000000, "cpu_pct": 1e999}', "not_finite"),
        (b'{"pad": "' + b"x" * 5000 + b'"}', "oversized"),
        # beyond 64 bits: out of range whichever parser reads it
        (b'{"vm_id": "a", "ts": 1800000000, "cpu_pct": 100000000000000000000000}', "out_of_range"),
        # valid JSON the fast parser declines: the standard library reads it, then the contract
        (b'{"vm_id": "\\ud800", "ts": 1800000000, "cpu_pct": 5.0}', "out_of_range"),
    ],
)
def test_raw_rejections(raw: bytes, reason: str) -> None:
    assert [r.reason for r in V.parse(raw, now=NOW).rejections] == [reason]


def test_valid_json_beyond_the_fast_parser_is_still_read() -> None:
    raw = b'{"vm_id": "a", "ts": 1800000000, "cpu_pct": 5.0, "trace": "\\ud800"}'
    parsed = V.parse(raw, now=NOW)
    assert parsed.rejections == []
    assert parsed.samples[0].sample.values == {"cpu_pct": 5.0}


def test_none_value_is_rejected_not_raised() -> None:
    assert V.parse(None, now=NOW).rejections[0].reason == "not_json"


def test_batch_inherits_host_and_ts_and_rejects_only_bad_samples() -> None:
    parsed = parse(
        {
            "host": "h9",
            "ts": NOW,
            "samples": [
                {"vm_id": "a", "cpu_pct": 1},
                "junk",
                {"vm_id": "c", "ts": NOW - 5, "mem_pct": 200},
            ],
        }
    )
    assert [(v.sample.vm_id, v.host, v.sample.ts) for v in parsed.samples] == [("a", "h9", NOW)]
    assert [(r.sample_index, r.reason) for r in parsed.rejections] == [
        (1, "not_object"),
        (2, "out_of_range"),
    ]


@given(st.binary(max_size=300))
def test_arbitrary_bytes_never_raise(raw: bytes) -> None:
    parsed = V.parse(raw, now=NOW)
    assert parsed.samples or parsed.rejections


@given(
    st.recursive(
        st.none() | st.booleans() | st.floats() | st.integers() | st.text(max_size=5),
        lambda c: (
            st.lists(c, max_size=3)
            | st.dictionaries(
                st.sampled_from(["vm_id", "ts", "cpu_pct", "samples", "host"]), c, max_size=5
            )
        ),
        max_leaves=12,
    )
)
def test_arbitrary_json_never_raises(doc: object) -> None:
    try:
        raw = json.dumps(doc).encode()
    except ValueError:
        return
    parsed = V.parse(raw, now=NOW)
    for valid in parsed.samples:
        assert valid.sample.values


def test_one_call_counts_each_record_under_its_outcome() -> None:
    processor = MetricsProcessor(engine=AnomalyEngine(), validator=Validator())
    now = time.time()
    records = [
        {"vm_id": "a", "ts": now, "cpu_pct": 5.0},
        {"ts": now, "samples": [{"vm_id": "b", "cpu_pct": 5.0}, {"vm_id": "b", "cpu_pct": "x"}]},
        {"vm_id": "c", "ts": now, "cpu_pct": 5.0},
        {"ts": now, "cpu_pct": 5.0},
    ]

    def counted(outcome: str) -> float:
        return REGISTRY.get_sample_value("novacron_records_total", {"outcome": outcome}) or 0.0

    before = {o: counted(o) for o in ("processed", "partial", "rejected")}
    outputs = processor.process_many(
        [(json.dumps(r).encode(), Source("vm.metrics", 0, i, None)) for i, r in enumerate(records)]
    )
    assert dict(processor.stats.records) == {"processed": 2, "partial": 1, "rejected": 1}
    assert {o: counted(o) - n for o, n in before.items()} == processor.stats.records
    assert sum(out.topic_id == "dlq" for out in outputs) == 2
