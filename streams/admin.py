"""Create the topics of topics.yaml on a broker; report drift between the file and the broker."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

from kafka.admin import KafkaAdminClient, NewTopic
from kafka.errors import TopicAlreadyExistsError

from streams.topics import TopicSpec


@dataclass(frozen=True)
class Drift:
    """One difference between the topics file and the broker."""

    topic: str
    problem: str

    def __str__(self) -> str:
        return f"{self.topic}: {self.problem}"


def _admin(bootstrap: str) -> KafkaAdminClient:
    return KafkaAdminClient(
        bootstrap_servers=bootstrap, client_id="novacron-admin", request_timeout_ms=15_000
    )


def create_topics(bootstrap: str, specs: Iterable[TopicSpec]) -> list[str]:
    """Create every missing topic; idempotent. Returns the names it created."""
    admin = _admin(bootstrap)
    try:
        existing = set(admin.list_topics())
        created = []
        for spec in specs:
            if spec.name in existing:
                continue
            topic = NewTopic(
                spec.name,
                spec.partitions,
                spec.replication_factor,
                topic_configs=spec.broker_configs(),
            )
            try:
                admin.create_topics([topic])
                created.append(spec.name)
            except TopicAlreadyExistsError:
                pass  # created concurrently by another process: fine
        return created
    finally:
        admin.close()


def check_topics(bootstrap: str, specs: Iterable[TopicSpec]) -> list[Drift]:
    """Compare partitions, replication and configs on the broker with the file."""
    specs = list(specs)
    admin = _admin(bootstrap)
    try:
        existing = set(admin.list_topics())
        present = [s for s in specs if s.name in existing]
        drift = [Drift(s.name, "missing on the broker") for s in specs if s.name not in existing]
        described = {d["name"]: d for d in admin.describe_topics([s.name for s in present])}
        for spec in present:
            partitions = described.get(spec.name, {}).get("partitions", [])
            if len(partitions) != spec.partitions:
                drift.append(
                    Drift(spec.name, f"{len(partitions)} partitions, file says {spec.partitions}")
                )
            replicas = {len(p.get("replica_nodes", [])) for p in partitions}
            if replicas and replicas != {spec.replication_factor}:
                drift.append(
                    Drift(
                        spec.name,
                        f"replication {sorted(replicas)}, file says {spec.replication_factor}",
                    )
                )
        drift.extend(_config_drift(admin, present))
        return drift
    finally:
        admin.close()


def _config_drift(admin: KafkaAdminClient, specs: list[TopicSpec]) -> list[Drift]:
    """Configs the broker reports that differ from the file (none reported: skipped)."""
    from kafka.admin import ConfigResource, ConfigResourceType

    if not specs:
        return []
    resources = [ConfigResource(ConfigResourceType.TOPIC, s.name) for s in specs]
    try:
        response = admin.describe_configs(resources)
    except Exception:  # noqa: BLE001 - a broker without DescribeConfigs support
        return []
    reported = _configs_by_topic(response)
    drift = []
    for spec in specs:
        configs = reported.get(spec.name, {})
        for key, wanted in spec.broker_configs().items():
            actual = configs.get(key)
            if actual is not None and actual != wanted:
                drift.append(Drift(spec.name, f"{key}={actual}, file says {wanted}"))
    return drift


def _configs_by_topic(response: object) -> dict[str, dict[str, str]]:
    """Normalise kafka-python's describe_configs answers (their shape varies by version)."""
    out: dict[str, dict[str, str]] = {}
    responses = response if isinstance(response, list) else [response]
    for resp in responses:
        if isinstance(resp, dict):
            for name, configs in (resp.get("topic") or {}).items():
                if isinstance(configs, dict):
                    out[name] = {str(k): str(v) for k, v in configs.items()}
            continue
        for resource in getattr(resp, "resources", []) or []:
            name, entries = resource[3], resource[4]
            out[name] = {str(e[0]): str(e[1]) for e in entries}
    return out
