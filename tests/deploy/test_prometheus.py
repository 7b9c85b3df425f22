"""The Prometheus configuration and alert rules, checked by promtool (Debian's prometheus package; `make test`
installs it when missing): the config and the rules parse, and the alerts fire (and stay quiet) as their unit tests
say."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest

from tests.deploy.helpers import ROOT

PROMETHEUS = ROOT / "deploy" / "prometheus"


def promtool(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    binary = shutil.which("promtool")
    if binary is None:
        pytest.fail("promtool not found: `make test` installs Debian's prometheus package (apt-get install prometheus)")
    return subprocess.run([binary, *args], cwd=cwd, capture_output=True, text=True, timeout=60)


@pytest.fixture
def config_dir(tmp_path: Path) -> Path:
    """The config as the container sees it: the rules beside it and the metrics token under secrets/."""
    for name in ("prometheus.yml", "alerts.yml", "alerts_test.yml"):
        shutil.copy(PROMETHEUS / name, tmp_path / name)
    (tmp_path / "secrets").mkdir()
    (tmp_path / "secrets" / "metrics-token").write_text("test-token\n")
    return tmp_path


def test_the_config_is_valid(config_dir: Path) -> None:
    result = promtool("check", "config", "prometheus.yml", cwd=config_dir)
    assert result.returncode == 0, result.stdout + result.stderr


def test_the_alert_rules_are_valid(config_dir: Path) -> None:
    result = promtool("check", "rules", "alerts.yml", cwd=config_dir)
    assert result.returncode == 0, result.stdout + result.stderr
    for alert in ("SagaNeedsIntervention", "ProjectionLagging", "HighErrorRate", "HighLatencyP99", "NatsUnreachable",
                  "RedisUnreachable", "ServiceNotReady"):  # fmt: skip
        assert f"alert: {alert}" in (config_dir / "alerts.yml").read_text()


def test_the_alerts_fire_as_their_unit_tests_say(config_dir: Path) -> None:
    result = promtool("test", "rules", "alerts_test.yml", cwd=config_dir)
    assert result.returncode == 0, result.stdout + result.stderr


def test_the_unit_tests_would_catch_a_broken_intervention_alert(config_dir: Path) -> None:
    """The rule tests are not vacuous: with the intervention alert's threshold broken, they fail."""
    rules = config_dir / "alerts.yml"
    rules.write_text(
        rules.read_text().replace('resultado="requiere_intervencion"}[15m]) > 0', 'resultado="x"}[15m]) > 0')
    )
    result = promtool("test", "rules", "alerts_test.yml", cwd=config_dir)
    assert result.returncode != 0 and "SagaNeedsIntervention" in result.stdout + result.stderr


def test_prometheus_scrapes_every_service_with_the_token() -> None:
    import yaml

    config = yaml.safe_load((PROMETHEUS / "prometheus.yml").read_text())
    jobs = {job["job_name"]: job for job in config["scrape_configs"]}
    for service, port in (("users", 8001), ("events", 8002), ("reservations", 8003), ("gateway", 8080)):
        job = jobs[service]
        assert job["authorization"]["credentials_file"] == "secrets/metrics-token"
        assert job["dns_sd_configs"][0] == {"names": [service], "type": "A", "port": port, "refresh_interval": "10s"}
