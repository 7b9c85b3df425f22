"""The Grafana dashboard and the alert rules ask only for metrics the four services really export: each service is
started for real (on the test NATS and Redis) and its /metrics read."""

from __future__ import annotations

import json
import re
from collections.abc import AsyncIterator
from typing import Any

import pytest
import pytest_asyncio
import yaml
from prometheus_client.parser import text_string_to_metric_families

from eventflow.system import client_secret
from tests.deploy.helpers import ROOT
from tests.utils.app import api_client
from tests.utils.servers import TEST_SERVICE_KEY, Servers

on_module_loop = pytest.mark.asyncio(loop_scope="module")
DASHBOARD = ROOT / "deploy" / "grafana" / "dashboards" / "eventflow-sale.json"
ALERTS = ROOT / "deploy" / "prometheus" / "alerts.yml"
# Series Prometheus makes itself for every target, not the services.
PROMETHEUS_OWN = {"up", "scrape_duration_seconds", "scrape_samples_scraped"}
METRIC = re.compile(r"[a-zA-Z_:][a-zA-Z0-9_:]*")
PROMQL_WORDS = {
    "sum", "min", "max", "avg", "count", "rate", "irate", "increase", "by", "without", "on", "ignoring", "and", "or",
    "unless", "histogram_quantile", "le", "bool", "offset", "group_left", "group_right", "topk", "bottomk", "abs",
    "clamp_min", "clamp_max", "label_replace", "time", "vector", "scalar", "absent", "delta", "deriv",
}  # fmt: skip


def metric_names(expr: str) -> set[str]:
    """The series names a PromQL expression selects (not its functions, labels, label values or durations)."""
    without_strings = re.sub(r'"[^"]*"', '""', expr)
    without_labels = re.sub(r"\{[^}]*\}", "{}", without_strings)
    without_ranges = re.sub(r"\[[^\]]*\]", "[]", without_labels)
    without_grouping = re.sub(r"\b(by|without|on|ignoring)\s*\([^)]*\)", "", without_ranges)
    names = set()
    for match in METRIC.finditer(without_grouping):
        word = match.group(0)
        following = without_grouping[match.end() :].lstrip()[:1]
        if word in PROMQL_WORDS or following == "(" or word.replace(".", "").isdigit():
            continue
        names.add(word)
    return names


def test_the_expression_parser_finds_series_and_nothing_else() -> None:
    expr = 'histogram_quantile(0.99, sum by (job, le) (rate(foo_bucket{route!="/metrics", job=~"a|b"}[5m]))) > bar'
    assert metric_names(expr) == {"foo_bucket", "bar"}


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def exported(servers: Servers) -> AsyncIterator[set[str]]:
    """Every series name (and, for a family with no sample yet, the names its type gives it) of the four services."""
    from services.events.bootstrap import create_app as events_app
    from services.gateway.bootstrap import create_app as gateway_app
    from services.gateway.config import GatewaySettings
    from services.reservations.bootstrap import create_app as reservations_app
    from services.users.bootstrap import create_app as users_app

    def own(service: str) -> dict[str, Any]:
        return {"client_id": service, "client_secret": client_secret(TEST_SERVICE_KEY, service)}

    apps = [
        users_app(servers.settings()),
        events_app(servers.settings(**own("events"))),
        reservations_app(servers.settings(**own("reservations"))),
        gateway_app(GatewaySettings(redis_url=servers.redis.url)),
    ]
    names: set[str] = set()
    for app in apps:
        async with api_client(app) as http:
            resp = await http.get("/metrics")
            assert resp.status_code == 200, resp.text
            for family in text_string_to_metric_families(resp.text):
                names |= {sample.name for sample in family.samples}
                suffixes = {"counter": ["_total"], "histogram": ["_bucket", "_sum", "_count"]}.get(family.type, [""])
                names |= {family.name + suffix for suffix in suffixes}
    yield names


def dashboard_queries() -> list[tuple[str, str]]:
    doc = json.loads(DASHBOARD.read_text())
    return [(panel["title"], target["expr"]) for panel in doc["panels"] for target in panel["targets"]]


def alert_queries() -> list[tuple[str, str]]:
    doc = yaml.safe_load(ALERTS.read_text())
    return [(rule["alert"], rule["expr"]) for group in doc["groups"] for rule in group["rules"]]


@on_module_loop
async def test_every_dashboard_panel_asks_for_exported_metrics(exported: set[str]) -> None:
    queries = dashboard_queries()
    assert len(queries) >= 10
    for title, expr in queries:
        names = metric_names(expr)
        assert names, f"panel {title!r} selects no series: {expr}"
        missing = names - exported - PROMETHEUS_OWN
        assert not missing, f"panel {title!r} asks for {missing}, which no service exports"


@on_module_loop
async def test_every_alert_asks_for_exported_metrics(exported: set[str]) -> None:
    for alert, expr in alert_queries():
        missing = metric_names(expr) - exported - PROMETHEUS_OWN
        assert not missing, f"alert {alert} asks for {missing}, which no service exports"


@on_module_loop
async def test_the_sale_dashboard_covers_what_the_issue_asks(exported: set[str]) -> None:
    titles = " | ".join(title.lower() for title, _ in dashboard_queries())
    for topic in ("reservations per second", "saga outcomes", "p99", "tickets left per hot event", "projection lag"):
        assert topic in titles, topic
    # and the services export what those panels are about
    for name in (
        "eventflow_http_requests_total",
        "eventflow_http_request_duration_seconds_bucket",
        "eventflow_reservas_sagas_total",
        "eventflow_projection_lag_events",
        "eventflow_projection_lag_seconds",
        "eventflow_inventory_ops_total",
        "eventflow_inventory_batches_total",
        "eventflow_rate_limited_total",
        "process_cpu_seconds_total",
        "process_resident_memory_bytes",
    ):
        assert name in exported, name


def test_grafana_provisioning_points_at_the_dashboard_and_prometheus() -> None:
    provisioning = ROOT / "deploy" / "grafana" / "provisioning"
    source = yaml.safe_load((provisioning / "datasources" / "prometheus.yml").read_text())["datasources"][0]
    dashboard = json.loads(DASHBOARD.read_text())
    for panel in dashboard["panels"]:
        assert panel["datasource"]["uid"] == source["uid"]
    provider = yaml.safe_load((provisioning / "dashboards" / "eventflow.yml").read_text())["providers"][0]
    compose = yaml.safe_load((ROOT / "docker-compose.yml").read_text())
    mounts = compose["services"]["grafana"]["volumes"]
    assert f"./deploy/grafana/dashboards:{provider['options']['path']}:ro" in mounts
