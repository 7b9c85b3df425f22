"""/metrics of the base app every service starts from (eventflow.web + eventflow.metrics)."""

from __future__ import annotations

import secrets
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import httpx
import pytest
from fastapi import FastAPI
from prometheus_client.parser import text_string_to_metric_families

from eventflow.errors import problem
from eventflow.eventstore import EventStore, NewEvent
from eventflow.jetstream import StreamSpec, connect, ensure_stream
from eventflow.projections import ProjectionRunner
from eventflow.web import create_app
from tests.deploy.tracing_helpers import NullProjection


@asynccontextmanager
async def no_lifespan(app: FastAPI) -> AsyncIterator[None]:
    yield


async def ok() -> None:
    return None


async def broken() -> None:
    raise ConnectionError("down")


def app_with_routes(checks: dict[str, Any] | None = None) -> FastAPI:
    app = create_app("metrics test", no_lifespan, checks if checks is not None else {"nats": ok, "redis": broken})

    @app.get("/api/cosas/{cosa_id}")
    async def cosa(cosa_id: str) -> dict[str, str]:
        return {"id": cosa_id}

    @app.get("/api/limitada")
    async def limitada() -> Any:
        return problem(429, "Too many requests", slug="rate-limited")

    @app.get("/api/otra-429")
    async def otra() -> Any:
        return problem(429, "Too many sign-in attempts", slug="too-many-sign-in-attempts")

    @app.get("/api/rota")
    async def rota() -> None:
        raise RuntimeError("boom")

    return app


def client(app: FastAPI, host: str = "127.0.0.1") -> httpx.AsyncClient:
    transport = httpx.ASGITransport(app=app, client=(host, 40000), raise_app_exceptions=False)
    return httpx.AsyncClient(transport=transport, base_url="http://testserver")


def samples(text: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    found = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            found[(sample.name, tuple(sorted(sample.labels.items())))] = sample.value
    return found


def value(found: dict[Any, float], name: str, **labels: str) -> float | None:
    return found.get((name, tuple(sorted(labels.items()))))


async def test_requests_are_counted_by_route_template_method_and_status() -> None:
    app = app_with_routes()
    async with client(app) as http:
        for cosa in ("a", "b", "c"):
            assert (await http.get(f"/api/cosas/{cosa}")).status_code == 200
        assert (await http.get("/no/such/path/123")).status_code == 404
        assert (await http.get("/api/rota")).status_code == 500
        found = samples((await http.get("/metrics")).text)
    route = "/api/cosas/{cosa_id}"
    assert value(found, "eventflow_http_requests_total", route=route, method="GET", status="200") == 3
    assert value(found, "eventflow_http_request_duration_seconds_count", route=route, method="GET") == 3
    assert value(found, "eventflow_http_requests_total", route="unmatched", method="GET", status="404") == 1
    assert value(found, "eventflow_http_requests_total", route="/api/rota", method="GET", status="500") == 1
    assert not any("/api/cosas/a" in str(labels) for _, labels in found), "raw paths must not become labels"


async def test_rate_limit_refusals_are_counted_apart_from_other_429s() -> None:
    app = app_with_routes()
    async with client(app) as http:
        await http.get("/api/limitada")
        await http.get("/api/limitada")
        await http.get("/api/otra-429")
        found = samples((await http.get("/metrics")).text)
    assert value(found, "eventflow_rate_limited_total", route="/api/limitada") == 2
    assert value(found, "eventflow_rate_limited_total", route="/api/otra-429") is None
    assert value(found, "eventflow_http_requests_total", route="/api/otra-429", method="GET", status="429") == 1


async def test_readiness_checks_and_the_process_are_exported() -> None:
    app = app_with_routes()
    async with client(app) as http:
        found = samples((await http.get("/metrics")).text)
    assert value(found, "eventflow_dependency_up", dependency="nats") == 1
    assert value(found, "eventflow_dependency_up", dependency="redis") == 0
    assert value(found, "eventflow_ready") == 0
    assert (value(found, "process_resident_memory_bytes") or 0) > 0
    assert value(found, "process_cpu_seconds_total") is not None


async def test_metrics_are_refused_to_anonymous_remote_clients() -> None:
    app = app_with_routes()
    async with client(app, host="203.0.113.9") as http:
        resp = await http.get("/metrics")
    assert resp.status_code == 403
    assert resp.headers["content-type"].startswith("application/problem+json")
    assert "eventflow_http_requests" not in resp.text


async def test_with_a_token_only_its_bearer_gets_metrics(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("EVENTFLOW_METRICS_TOKEN", "t0ken-de-metricas")
    app = app_with_routes()
    async with client(app, host="10.0.0.7") as http:
        assert (await http.get("/metrics")).status_code == 401
        assert (await http.get("/metrics", headers={"authorization": "Bearer otro"})).status_code == 401
        resp = await http.get("/metrics", headers={"authorization": "Bearer t0ken-de-metricas"})
    assert resp.status_code == 200 and "eventflow_http_requests_total" in resp.text
    async with client(app) as http:  # a token set applies to loopback too
        assert (await http.get("/metrics")).status_code == 401


async def test_saga_and_inventory_counters_are_read_from_app_state() -> None:
    from collections import Counter

    class Orquestador:
        metrics = Counter({"confirmadas": 7, "requiere_intervencion": 1})
        activas = 3

    class Stats:
        ops, batches, conflicts, failed_ops, largest_batch = 120, 8, 2, 1, 40

    class Inventario:
        stats = Stats()

        def recent_availability(self) -> dict[str, int]:
            return {"evento-caliente": 12}

    app = app_with_routes({})
    app.state.orquestador, app.state.inventario = Orquestador(), Inventario()
    async with client(app) as http:
        found = samples((await http.get("/metrics")).text)
    assert value(found, "eventflow_reservas_sagas_total", resultado="confirmadas") == 7
    assert value(found, "eventflow_reservas_sagas_total", resultado="requiere_intervencion") == 1
    assert value(found, "eventflow_reservas_sagas_activas") == 3
    assert value(found, "eventflow_inventory_ops_total") == 120
    assert value(found, "eventflow_inventory_batches_total") == 8
    assert value(found, "eventflow_inventory_largest_batch") == 40
    assert value(found, "eventflow_inventory_available_tickets", evento_id="evento-caliente") == 12
    assert value(found, "eventflow_ready") == 1  # no checks: ready


async def test_projection_lag_is_events_and_seconds_behind_the_log(servers: Any, redis: Any) -> None:
    nc = await connect(servers.nats.url, "lag-test")
    js = nc.jetstream()
    tag = secrets.token_hex(4)
    spec = StreamSpec(f"LAG{tag.upper()}", f"lag{tag}")
    await ensure_stream(js, spec)
    store = EventStore(js, spec)
    for n in range(3):
        await store.append(f"agregado-{n}", [NewEvent("Probado", {"n": n})], expected_version=0)
    runner = ProjectionRunner(js, redis, spec, NullProjection("lag-test"))
    app = app_with_routes({})
    app.state.runners = [runner]
    labels = {"projection": "lag-test", "stream": spec.name}
    try:
        async with client(app) as http:
            behind = samples((await http.get("/metrics")).text)
            await runner.catch_up(timeout=30)
            caught_up = samples((await http.get("/metrics")).text)
    finally:
        await nc.drain()
    assert value(behind, "eventflow_projection_lag_events", **labels) == 3
    assert (value(behind, "eventflow_projection_lag_seconds", **labels) or 0) > 0
    assert value(caught_up, "eventflow_projection_lag_events", **labels) == 0
    assert value(caught_up, "eventflow_projection_lag_seconds", **labels) == 0
    assert value(caught_up, "eventflow_projection_stalled", **labels) == 0
