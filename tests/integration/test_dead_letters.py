"""Malformed records land in the DLQ with the right reasons; valid records after them still flow."""

from __future__ import annotations

import base64
import json
import time

BAD_RECORDS: list[tuple[bytes, str]] = [
    (b"this is not json", "not_json"),
    (b"\xff\xfe\x00binary", "not_utf8"),
    (b"[1, 2, 3]", "not_object"),
    (b'{"ts": 1.8e9, "cpu_pct": 5}', "missing_field"),
    (b'{"vm_id": "vm-x", "cpu_pct": 5}', "missing_field"),
    (b'{"vm_id": "vm-x", "ts": "yesterday", "cpu_pct": 5}', "bad_timestamp"),
    (b'{"vm_id": "vm-x", "ts": NOW, "cpu_pct": "high"}', "bad_type"),
    (b'{"vm_id": "vm-x", "ts": NOW, "cpu_pct": NaN}', "not_finite"),
    (b'{"vm_id": "vm-x", "ts": NOW, "cpu_pct": 250}', "out_of_range"),
    (b'{"vm_id": "vm-x", "ts": NOW}', "no_metrics"),
    (b'{"samples": []}', "empty_batch"),
    (b'{"vm_id": "vm-x", "ts": NOW, "cpu_pct": 5, "pad": "' + b"x" * 100_000 + b'"}', "oversized"),
]


def test_malformed_records_go_to_the_dlq_and_valid_ones_still_flow(
    deployment, start_worker_process
) -> None:
    worker = start_worker_process(extra_env={"NOVACRON_MAX_RECORD_BYTES": "65536"})
    now = str(time.time()).encode()
    bad = [(raw.replace(b"NOW", now), reason) for raw, reason in BAD_RECORDS]
    batch_with_one_bad = json.dumps(
        {
            "host": "h1",
            "ts": time.time(),
            "samples": [
                {"vm_id": "vm-b1", "cpu_pct": 10.0},
                {"vm_id": "vm-b2", "mem_pct": -3},
                {"vm_id": "vm-b3", "net_in_bps": 1e6},
            ],
        }
    ).encode()
    valid = [
        json.dumps(
            {
                "vm_id": f"vm-ok-{i}",
                "ts": time.time(),
                "cpu_pct": 20.0 + i,
                "mem_pct": 40.0,
                "unknown_field": "ignored",
            }
        ).encode()
        for i in range(5)
    ]
    deployment.produce(
        [("k", raw) for raw, _ in bad]
        + [("h1", batch_with_one_bad)]
        + [(f"vm-ok-{i}", raw) for i, raw in enumerate(valid)]
    )

    expected = len(bad) + 1
    letters = deployment.consume("dlq", until=lambda m: len(m) >= expected)
    assert len(letters) == expected
    by_offset = {m["source"]["offset"]: m for m in letters if m["source"]["key"] == "k"}
    assert [by_offset[i]["reason"] for i in range(len(bad))] == [reason for _, reason in bad]
    (batch_letter,) = [m for m in letters if m["source"]["key"] == "h1"]
    assert batch_letter["reason"] == "out_of_range" and batch_letter["sample_index"] == 1
    assert "mem_pct" in batch_letter["detail"]
    for i, (raw, _) in enumerate(bad):
        letter = by_offset[i]
        assert letter["source"]["topic"] == deployment.topics["metrics"].name
        assert letter["detail"]
        original = (
            letter["original"].encode()
            if letter["original_encoding"] == "utf-8"
            else base64.b64decode(letter["original"])
        )
        assert original == raw, "the DLQ keeps the original bytes"
    assert by_offset[1]["original_encoding"] == "base64"

    # the 5 valid records plus the 2 good samples of the batch are all processed
    stats = worker.wait_samples(7)
    assert stats["samples"] == 7
    assert sum(stats["dlq"].values()) == expected
    assert stats["records"]["rejected"] == len(bad)
    assert stats["records"]["partial"] == 1
    assert worker.process.poll() is None, "a bad record must never stop the worker"


def test_malformed_feedback_goes_to_the_dlq_and_the_worker_carries_on(
    deployment, start_worker_process
) -> None:
    worker = start_worker_process()
    bad = [
        (b"{not json", "not_json"),
        (b'["a"]', "not_object"),
        (b'{"vm_id": "vm-1", "verdict": "confirmed"}', "missing_field"),
        (b'{"incident_id": "vm-1:1", "vm_id": "vm-1", "verdict": "meh"}', "out_of_range"),
    ]
    deployment.produce([("vm-1", raw) for raw, _ in bad], topic_id="feedback")
    letters = deployment.consume("dlq", until=lambda m: len(m) >= len(bad))
    feedback_topic = deployment.topics["feedback"].name
    assert all(m["source"]["topic"] == feedback_topic for m in letters)
    by_offset = {m["source"]["offset"]: m for m in letters}
    assert [by_offset[i]["reason"] for i in range(len(bad))] == [r for _, r in bad]
    # a well-formed verdict for an unknown incident is not an error: it is counted and dropped
    deployment.produce(
        [
            (
                "vm-1",
                json.dumps(
                    {"incident_id": "vm-1:5", "vm_id": "vm-1", "verdict": "confirmed"}
                ).encode(),
            )
        ],
        topic_id="feedback",
    )
    deployment.produce(
        [("vm-ok", json.dumps({"vm_id": "vm-ok", "ts": time.time(), "cpu_pct": 1.0}).encode())]
    )
    assert worker.wait_samples(1)["samples"] == 1
    assert len(deployment.consume("dlq", timeout_s=3)) == len(bad)
    assert worker.process.poll() is None
