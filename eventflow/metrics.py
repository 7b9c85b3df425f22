"""Prometheus metrics of one service: `/metrics` in the text format, one registry per app.

What is measured, and where it comes from:
- HTTP: requests by route template, method and status, and their latency (HttpMetricsMiddleware); 429 problems
  of type `/problems/rate-limited` counted apart (the gateway's rate limit, or any service's);
- the process: CPU, resident memory, open files (prometheus-client's process collector);
- readiness: each `/health/ready` check as `eventflow_dependency_up{dependency}` and `eventflow_ready`, run at
  scrape time, so Prometheus sees NATS, Redis or an upstream go away from each service's side;
- projections: events behind the log and seconds behind, per projection runner (`app.state.runners`);
- the reservations service's saga outcomes (`app.state.orquestador.metrics`), and its inventory's group commits
  (`app.state.inventario.stats`: ops and batches, so ops/batches is the batch size).

A registry per app (not prometheus-client's global one) because tests run many apps in one process. Services
expose their own instruments on `app.state`; the collector reads them at scrape time, so no service imports this.

`/metrics` is not for anonymous clients: with EVENTFLOW_METRICS_TOKEN set it asks for that bearer token (what
Prometheus sends, from a file); without, it answers only on the loopback interface (a local `make run`).
"""

from __future__ import annotations

import asyncio
import contextlib
import hmac
import ipaddress
import time
from collections.abc import Awaitable, Callable, Iterable, Iterator, Mapping
from datetime import UTC, datetime
from typing import Any

import orjson
from fastapi import APIRouter, FastAPI, Request, Response
from prometheus_client import (
    CONTENT_TYPE_LATEST,
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    disable_created_metrics,
    generate_latest,
)
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, HistogramMetricFamily, Metric
from prometheus_client.process_collector import ProcessCollector
from prometheus_client.registry import Collector
from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from eventflow.errors import problem

ReadyCheck = Callable[[], Awaitable[None]]
LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0)
SCRAPE_CHECK_TIMEOUT_S = 2.0
RATE_LIMITED_TYPE = b"/problems/rate-limited"
UNMATCHED = "unmatched"  # requests no route matched: one label value, whatever the path (no cardinality blow-up)
disable_created_metrics()  # no `_created` series next to every counter: nothing here reads them


class MetricsSettings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="EVENTFLOW_METRICS_", extra="ignore")

    token: str | None = Field(default=None, repr=False)


class AppMetrics:
    """The instruments of one app and the state read at scrape time."""

    def __init__(self, app: FastAPI, ready_checks: Mapping[str, ReadyCheck]) -> None:
        self.app = app
        self.ready_checks = ready_checks  # the app's own dict: a service may fill it in at startup
        self.token = MetricsSettings().token
        self.registry = CollectorRegistry(auto_describe=True)
        self.requests = Counter(
            "eventflow_http_requests",
            "HTTP requests answered, by route template, method and status.",
            ["route", "method", "status"],
            registry=self.registry,
        )
        self.latency = Histogram(
            "eventflow_http_request_duration_seconds",
            "Time to answer an HTTP request, by route template and method.",
            ["route", "method"],
            buckets=LATENCY_BUCKETS,
            registry=self.registry,
        )
        self.rate_limited = Counter(
            "eventflow_rate_limited",
            "Requests refused by a rate limit (429 problems of type /problems/rate-limited).",
            ["route"],
            registry=self.registry,
        )
        self.dependency_up = Gauge(
            "eventflow_dependency_up",
            "1 when this service's readiness check of a dependency passes at scrape time.",
            ["dependency"],
            registry=self.registry,
        )
        self.ready = Gauge("eventflow_ready", "1 when every readiness check passes.", registry=self.registry)
        self.projection_lag = Gauge(
            "eventflow_projection_lag_events",
            "Events in the stream that the read model has not applied yet.",
            ["projection", "stream"],
            registry=self.registry,
        )
        self.projection_lag_seconds = Gauge(
            "eventflow_projection_lag_seconds",
            "Age of the oldest event the read model has not applied yet (0 when caught up).",
            ["projection", "stream"],
            registry=self.registry,
        )
        self.registry.register(StateCollector(app))
        ProcessCollector(registry=self.registry)

    def authorized(self, request: Request) -> bool:
        if self.token:
            sent = request.headers.get("authorization", "")
            return hmac.compare_digest(sent.encode(), f"Bearer {self.token}".encode())
        host = request.client.host if request.client else ""
        try:
            return ipaddress.ip_address(host).is_loopback
        except ValueError:
            return False

    async def refresh(self) -> None:
        """What needs I/O is measured when Prometheus asks, each check bounded in time."""
        await asyncio.gather(self._refresh_readiness(), self._refresh_projections())

    async def _refresh_readiness(self) -> None:
        results = await asyncio.gather(*(_passes(check) for check in self.ready_checks.values()))
        self.dependency_up.clear()
        for name, ok in zip(self.ready_checks, results, strict=True):
            self.dependency_up.labels(name).set(1 if ok else 0)
        self.ready.set(1 if all(results) else 0)

    async def _refresh_projections(self) -> None:
        runners = getattr(self.app.state, "runners", None)
        if isinstance(runners, Mapping):
            runners = list(runners.values())
        for runner in runners or ():
            labels = (runner.projection.name, runner.stream.name)
            try:
                lag, seconds = await asyncio.wait_for(projection_lag(runner), SCRAPE_CHECK_TIMEOUT_S)
            except Exception:  # NATS unreachable: no figure is better than a wrong one (the readiness gauge says why)
                _forget(self.projection_lag, labels)
                _forget(self.projection_lag_seconds, labels)
                continue
            self.projection_lag.labels(*labels).set(lag)
            self.projection_lag_seconds.labels(*labels).set(seconds)


async def projection_lag(runner: Any) -> tuple[int, float]:
    """(events behind, seconds behind) of a ProjectionRunner: the stream's last sequence against the runner's
    position, and how long ago the first event it has not applied was stored."""
    info = await runner.js.stream_info(runner.stream.name)
    behind = max(0, int(info.state.last_seq) - int(runner.position))
    if behind == 0:
        return 0, 0.0
    msg = await runner.js.get_msg(runner.stream.name, seq=int(runner.position) + 1, next=True, direct=True)
    stored = msg.time
    if stored is None and msg.data:
        stored = datetime.fromisoformat(orjson.loads(msg.data)["occurred_at"])
    if stored is None:
        return behind, 0.0
    if stored.tzinfo is None:
        stored = stored.replace(tzinfo=UTC)
    return behind, max(0.0, (datetime.now(UTC) - stored).total_seconds())


def _forget(gauge: Gauge, labels: tuple[str, ...]) -> None:
    with contextlib.suppress(KeyError):
        gauge.remove(*labels)


async def _passes(check: ReadyCheck) -> bool:
    try:
        await asyncio.wait_for(check(), SCRAPE_CHECK_TIMEOUT_S)
        return True
    except Exception:
        return False


class StateCollector(Collector):
    """Counters the services keep on `app.state`, read as they are at scrape time."""

    def __init__(self, app: FastAPI) -> None:
        self.app = app

    def collect(self) -> Iterable[Metric]:
        state = self.app.state
        yield from _saga_metrics(getattr(state, "orquestador", None))
        inventario = getattr(state, "inventario", None)
        yield from _inventory_metrics(getattr(inventario, "stats", None))
        yield _availability(inventario)
        runners = getattr(state, "runners", None)
        if isinstance(runners, Mapping):
            runners = list(runners.values())
        parked = CounterMetricFamily(
            "eventflow_projection_parked",
            "Events a projection could not apply and parked (logged, listed in Redis; a rebuild retries them).",
            labels=["projection", "stream"],
        )
        stalled = GaugeMetricFamily(
            "eventflow_projection_stalled",
            "1 while a projection runner is retrying after an error.",
            labels=["projection", "stream"],
        )
        for runner in runners or ():
            labels = [runner.projection.name, runner.stream.name]
            parked.add_metric(labels, runner.parked)
            stalled.add_metric(labels, 1 if runner.stalled else 0)
        yield parked
        yield stalled


def _saga_metrics(orquestador: Any) -> Iterator[Metric]:
    outcomes = CounterMetricFamily(
        "eventflow_reservas_sagas",
        "Sagas by result since the process started: confirmadas, rechazadas, canceladas, requiere_intervencion, "
        "and the events of their lives (reanudadas, reintentos, fallos_del_conductor, sin_liquidar).",
        labels=["resultado"],
    )
    active = GaugeMetricFamily("eventflow_reservas_sagas_activas", "Sagas this process is driving now.")
    steps = HistogramMetricFamily(
        "eventflow_saga_step_duration_seconds",
        "Time of one saga step (hold, authorize, confirm, capture, record, compensations), retries included.",
        labels=["paso"],
    )
    if orquestador is not None:
        for name, value in sorted(getattr(orquestador, "metrics", {}).items()):
            outcomes.add_metric([name], value)
        active.add_metric([], getattr(orquestador, "activas", 0))
        timed = getattr(orquestador, "step_seconds", None)  # a prometheus-client Histogram(["paso"]), unregistered
        if timed is not None:
            for family in timed.collect():
                steps.samples.extend(family.samples)
    yield outcomes
    yield active
    yield steps


def _inventory_metrics(stats: Any) -> Iterator[Metric]:
    ops = CounterMetricFamily("eventflow_inventory_ops", "Inventory operations written (holds, confirms, releases...).")
    batches = CounterMetricFamily(
        "eventflow_inventory_batches", "Group commits: one compare-and-set each; ops / batches is the batch size."
    )
    conflicts = CounterMetricFamily(
        "eventflow_inventory_conflicts", "Group commits that lost a compare-and-set to another process and re-applied."
    )
    failed = CounterMetricFamily("eventflow_inventory_failed_ops", "Inventory operations that failed (each alone).")
    largest = GaugeMetricFamily("eventflow_inventory_largest_batch", "The largest group commit since the start.")
    if stats is not None:
        ops.add_metric([], stats.ops)
        batches.add_metric([], stats.batches)
        conflicts.add_metric([], stats.conflicts)
        failed.add_metric([], stats.failed_ops)
        largest.add_metric([], stats.largest_batch)
    yield from (ops, batches, conflicts, failed, largest)


def _availability(inventario: Any) -> Metric:
    """Tickets left per hot event, from the inventory store's `recent_availability()` (event id -> tickets left, as
    this process last committed them: a bounded cache, so the label set stays small)."""
    available = GaugeMetricFamily(
        "eventflow_inventory_available_tickets",
        "Tickets left per event this process sold from recently (its last committed state).",
        labels=["evento_id"],
    )
    recent = getattr(inventario, "recent_availability", None)
    if callable(recent):
        for evento_id, left in sorted(recent().items()):
            available.add_metric([evento_id], left)
    return available


class HttpMetricsMiddleware:
    """Counts and times every HTTP request by the route template that matched (`/api/eventos/{evento_id}`, never
    the raw path); an unhandled error counts as a 500."""

    def __init__(self, app: ASGIApp, metrics: AppMetrics) -> None:
        self.app = app
        self.metrics = metrics

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()
        status = 500
        rate_limited = False

        async def observe(message: Message) -> None:
            nonlocal status, rate_limited
            if message["type"] == "http.response.start":
                status = int(message["status"])
            elif message["type"] == "http.response.body" and status == 429:
                rate_limited = rate_limited or RATE_LIMITED_TYPE in message.get("body", b"")
            await send(message)

        try:
            await self.app(scope, receive, observe)
        finally:
            route = getattr(scope.get("route"), "path", None) or UNMATCHED
            method = scope["method"]
            self.metrics.requests.labels(route, method, str(status)).inc()
            self.metrics.latency.labels(route, method).observe(time.perf_counter() - started)
            if rate_limited:
                self.metrics.rate_limited.labels(route).inc()


def router() -> APIRouter:
    api = APIRouter(tags=["metrics"])

    @api.get("/metrics", include_in_schema=False, response_model=None)
    async def scrape(request: Request) -> Response:
        app_metrics: AppMetrics = request.app.state.metrics
        if not app_metrics.authorized(request):
            refused = problem(
                401 if app_metrics.token else 403,
                "Metrics are not public",
                "Send the metrics bearer token (EVENTFLOW_METRICS_TOKEN)."
                if app_metrics.token
                else "Metrics answer on the loopback interface only; set EVENTFLOW_METRICS_TOKEN to scrape remotely.",
                slug="metrics-forbidden",
                instance=request.url.path,
            )
            if app_metrics.token:
                refused.headers["www-authenticate"] = "Bearer"
            return refused
        await app_metrics.refresh()
        return Response(generate_latest(app_metrics.registry), media_type=CONTENT_TYPE_LATEST)

    return api
