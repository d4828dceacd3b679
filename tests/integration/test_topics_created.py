"""Topics on the broker match topics.yaml, and creation is idempotent."""

from __future__ import annotations

import subprocess
import sys

from kafka.admin import KafkaAdminClient

from streams.admin import check_topics, create_topics


def test_created_topics_match_the_file(deployment) -> None:
    admin = KafkaAdminClient(bootstrap_servers=deployment.broker.bootstrap)
    try:
        described = {
            d["name"]: d
            for d in admin.describe_topics([s.name for s in deployment.topics.values()])
        }
    finally:
        admin.close()
    for spec in deployment.topics.values():
        assert spec.name in described, spec.name
        assert len(described[spec.name]["partitions"]) == spec.partitions, spec.name
    assert check_topics(deployment.broker.bootstrap, deployment.topics.values()) == []


def test_create_is_idempotent_and_check_reports_missing(broker) -> None:
    from streams.topics import load_topics

    specs = load_topics(prefix="idem.")
    assert len(create_topics(broker.bootstrap, specs.values())) == len(specs)
    assert create_topics(broker.bootstrap, specs.values()) == []
    extra = load_topics(prefix="never-created.")
    drift = check_topics(broker.bootstrap, extra.values())
    assert {d.topic for d in drift} == {s.name for s in extra.values()}
    assert all(d.problem == "missing on the broker" for d in drift)


def test_cli_topics_create_and_check(broker) -> None:
    run = [sys.executable, "-m", "streams.cli", "topics"]
    common = ["--bootstrap", broker.bootstrap, "--prefix", "cli."]
    missing = subprocess.run([*run, "check", *common], capture_output=True, text=True)
    assert missing.returncode == 1 and "missing on the broker" in missing.stdout
    created = subprocess.run([*run, "create", *common], capture_output=True, text=True)
    assert created.returncode == 0, created.stderr
    assert "6 created" in created.stdout
    again = subprocess.run([*run, "create", *common], capture_output=True, text=True)
    assert "0 created, 6 already present" in again.stdout
    ok = subprocess.run([*run, "check", *common], capture_output=True, text=True)
    assert ok.returncode == 0 and "topics match the file" in ok.stdout
