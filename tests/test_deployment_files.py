"""docker-compose.yml is valid and agrees with topics.yaml, the settings and the README."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest
import yaml

from streams.settings import Settings

ROOT = Path(__file__).resolve().parent.parent
COMPOSE = ROOT / "docker-compose.yml"


@pytest.mark.skipif(
    shutil.which("docker-compose") is None,
    reason="docker-compose is not installed (make test installs Debian's package)",
)
def test_compose_file_is_valid() -> None:
    result = subprocess.run(
        ["docker-compose", "-f", str(COMPOSE), "config", "-q"],
        capture_output=True,
        text=True,
        cwd=ROOT,
    )
    assert result.returncode == 0, result.stderr


def _compose() -> dict:
    return yaml.safe_load(COMPOSE.read_text())


def test_compose_runs_kafka_in_kraft_mode_with_explicit_topics() -> None:
    env = _compose()["services"]["kafka"]["environment"]
    assert env["KAFKA_PROCESS_ROLES"] == "broker,controller"
    assert env["KAFKA_AUTO_CREATE_TOPICS_ENABLE"] == "false"


def test_compose_worker_settings_are_real_settings() -> None:
    services = _compose()["services"]
    env = services["worker"]["environment"]
    documented = (ROOT / "README.md").read_text()
    for name in env:
        assert name.startswith("NOVACRON_")
        assert name in documented, f"{name} is not documented in the README"
    assert env["NOVACRON_BROKER"].startswith("kafka://kafka:")
    assert services["topics"]["command"][:2] == ["topics", "create"]
    assert "sim" in services["simulator"]["profiles"]


def test_settings_defaults_are_documented_and_loopback() -> None:
    settings = Settings()
    assert settings.web_host == "127.0.0.1" and settings.web_port == 6066
    assert settings.broker == "kafka://127.0.0.1:9092"


def test_prometheus_scrapes_the_worker_metrics_port() -> None:
    config = yaml.safe_load((ROOT / "deploy" / "prometheus.yml").read_text())
    (job,) = config["scrape_configs"]
    assert job["metrics_path"] == "/metrics"
    assert job["dns_sd_configs"][0]["port"] == int(
        _compose()["services"]["worker"]["environment"]["NOVACRON_WEB_PORT"]
    )


def test_dockerfile_copies_what_the_worker_needs() -> None:
    text = (ROOT / "Dockerfile").read_text()
    for needed in ("topics.yaml", "streams", "models", "pyproject.toml"):
        assert needed in text
    assert 'ENTRYPOINT ["novacron"]' in text


def test_every_setting_the_code_reads_is_documented() -> None:
    import re

    code = "\n".join(p.read_text() for p in (ROOT / "streams").glob("*.py"))
    names = set(re.findall(r'"(NOVACRON_[A-Z0-9_]+[A-Z0-9])"', code))
    readme = (ROOT / "README.md").read_text()
    assert names, "the settings are read from NOVACRON_* variables"
    missing = sorted(n for n in names if n not in readme)
    assert not missing, f"undocumented settings: {missing}"
