"""The topic contract: load `topics.yaml` into typed specs, one source of truth for every part."""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

REQUIRED_IDS = ("metrics", "feedback", "anomalies", "forecasts", "actions", "dlq")
_REPO_TOPICS_FILE = Path(__file__).resolve().parent.parent / "topics.yaml"


class TopicsFileError(ValueError):
    """The topics file is missing, unreadable or breaks the contract."""


@dataclass(frozen=True)
class TopicSpec:
    """One topic as declared in topics.yaml."""

    id: str
    name: str
    role: str
    partitions: int
    replication_factor: int
    retention_ms: int
    cleanup_policy: str
    key: str
    max_message_bytes: int | None = None
    schema: dict[str, Any] = field(default_factory=dict, compare=False)

    def broker_configs(self) -> dict[str, str]:
        """The topic-level configs sent to the broker on creation."""
        configs = {"retention.ms": str(self.retention_ms), "cleanup.policy": self.cleanup_policy}
        if self.max_message_bytes:
            configs["max.message.bytes"] = str(self.max_message_bytes)
        return configs


def default_topics_file() -> Path:
    """`NOVACRON_TOPICS_FILE`, else ./topics.yaml, else the file beside the package."""
    env = os.environ.get("NOVACRON_TOPICS_FILE")
    if env:
        return Path(env)
    local = Path("topics.yaml")
    return local if local.is_file() else _REPO_TOPICS_FILE


def load_topics(path: str | Path | None = None, prefix: str = "") -> dict[str, TopicSpec]:
    """Read the topics file; `prefix` is prepended to every topic name (isolated test runs)."""
    path = Path(path) if path else default_topics_file()
    try:
        doc = yaml.safe_load(path.read_text())
    except (OSError, yaml.YAMLError) as exc:
        raise TopicsFileError(f"cannot read topics file {path}: {exc}") from exc
    if not isinstance(doc, dict) or not isinstance(doc.get("topics"), list):
        raise TopicsFileError(f"{path}: expected a mapping with a 'topics' list")
    defaults = doc.get("defaults") or {}
    specs: dict[str, TopicSpec] = {}
    for i, entry in enumerate(doc["topics"]):
        spec = _parse_entry(entry, defaults, prefix, where=f"{path}: topics[{i}]")
        if spec.id in specs:
            raise TopicsFileError(f"{path}: topic id {spec.id!r} is declared twice")
        specs[spec.id] = spec
    missing = [t for t in REQUIRED_IDS if t not in specs]
    if missing:
        raise TopicsFileError(f"{path}: missing topic ids {missing}")
    if specs["feedback"].partitions != specs["metrics"].partitions:
        raise TopicsFileError(
            f"{path}: feedback must be co-partitioned with metrics "
            f"({specs['feedback'].partitions} != {specs['metrics'].partitions} partitions)"
        )
    return specs


def _parse_entry(entry: Any, defaults: dict, prefix: str, where: str) -> TopicSpec:
    if not isinstance(entry, dict):
        raise TopicsFileError(f"{where}: expected a mapping")
    merged = {**defaults, **entry}
    try:
        spec = TopicSpec(
            id=str(merged["id"]),
            name=prefix + str(merged["name"]),
            role=str(merged["role"]),
            partitions=int(merged["partitions"]),
            replication_factor=int(merged["replication_factor"]),
            retention_ms=int(merged["retention_ms"]),
            cleanup_policy=str(merged["cleanup_policy"]),
            key=str(merged.get("key", "")),
            max_message_bytes=(
                int(merged["max_message_bytes"]) if merged.get("max_message_bytes") else None
            ),
            schema=dict(merged.get("schema") or {}),
        )
    except KeyError as exc:
        raise TopicsFileError(f"{where}: missing field {exc.args[0]!r}") from exc
    except (TypeError, ValueError) as exc:
        raise TopicsFileError(f"{where}: {exc}") from exc
    if spec.role not in ("input", "output", "state"):
        raise TopicsFileError(f"{where}: role must be input, output or state, not {spec.role!r}")
    if spec.partitions < 1 or spec.replication_factor < 1:
        raise TopicsFileError(f"{where}: partitions and replication_factor must be >= 1")
    if spec.cleanup_policy not in ("delete", "compact", "compact,delete"):
        raise TopicsFileError(f"{where}: unknown cleanup_policy {spec.cleanup_policy!r}")
    return spec
