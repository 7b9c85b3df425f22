"""W3C trace context: continued by every service, written into the NATS headers of appended events, continued by the
projections that apply them, and present in every JSON log line on the way."""

from __future__ import annotations

import logging
import secrets
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import httpx
import pytest
from fastapi import FastAPI

from eventflow.eventstore import EventStore, NewEvent
from eventflow.jetstream import StreamSpec, connect, ensure_stream
from eventflow.logs import TraceContext, parse_traceparent, trace_headers, trace_var
from eventflow.projections import ProjectionRunner
from eventflow.web import create_app
from tests.deploy.tracing_helpers import NullProjection, json_log_lines

TRACE = "4bf92f3577b34da6a3ce929d0e0e4736"
PARENT = "00f067aa0ba902b7"
log = logging.getLogger("tests.deploy.handler")


@pytest.mark.parametrize(
    ("header", "expected"),
    [
        (f"00-{TRACE}-{PARENT}-01", (TRACE, PARENT, True)),
        (f"00-{TRACE}-{PARENT}-00", (TRACE, PARENT, False)),
        (f"01-{TRACE}-{PARENT}-01-later-fields", (TRACE, PARENT, True)),  # a future version, read as 00
        (f"00-{TRACE.upper()}-{PARENT}-01", None),  # upper case is invalid
        (f"00-{'0' * 32}-{PARENT}-01", None),  # all-zero trace id
        (f"00-{TRACE}-{'0' * 16}-01", None),  # all-zero parent id
        (f"ff-{TRACE}-{PARENT}-01", None),  # version ff is forbidden
        (f"00-{TRACE}-{PARENT}-01-extra", None),  # version 00 has exactly four fields
        ("garbage", None),
        (None, None),
    ],
)
def test_traceparent_parsing_follows_the_specification(header: str | None, expected: tuple[Any, ...] | None) -> None:
    parsed = parse_traceparent(header)
    assert (parsed and (parsed.trace_id, parsed.span_id, parsed.sampled)) == expected


def test_a_child_span_keeps_the_trace_and_points_at_its_parent() -> None:
    root = TraceContext.new()
    child = root.child()
    assert child.trace_id == root.trace_id and child.parent_id == root.span_id and child.span_id != root.span_id
    assert parse_traceparent(child.traceparent) == TraceContext(child.trace_id, child.span_id, True)


@asynccontextmanager
async def no_lifespan(app: FastAPI) -> AsyncIterator[None]:
    yield


def traced_app() -> FastAPI:
    app = create_app("tracing test", no_lifespan, {})

    @app.get("/api/algo")
    async def algo() -> dict[str, str]:
        log.info("handling")
        return {"sent": trace_headers().get("traceparent", "")}

    return app


async def get(app: FastAPI, headers: dict[str, str]) -> httpx.Response:
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://testserver") as http:
        return await http.get("/api/algo", headers=headers)


async def test_a_service_continues_the_callers_trace_in_its_logs_and_outgoing_calls() -> None:
    with json_log_lines("events") as lines:
        resp = await get(traced_app(), {"traceparent": f"00-{TRACE}-{PARENT}-01"})
    ours = parse_traceparent(resp.headers["traceresponse"])
    assert ours is not None and ours.trace_id == TRACE and ours.span_id != PARENT
    assert resp.json()["sent"] == ours.traceparent  # what it would send on: its own span, the same trace
    handled = [line for line in lines if line["msg"] == "handling"]
    assert handled and handled[0]["trace_id"] == TRACE and handled[0]["span_id"] == ours.span_id


async def test_without_traceparent_the_gateways_request_id_is_the_trace_id() -> None:
    """A hop that forwards only X-Request-ID (the gateway makes it from the trace id) stays in the trace."""
    resp = await get(traced_app(), {"x-request-id": TRACE})
    assert parse_traceparent(resp.headers["traceresponse"]).trace_id == TRACE  # type: ignore[union-attr]
    fresh = await get(traced_app(), {})
    started = parse_traceparent(fresh.headers["traceresponse"])
    assert started is not None and fresh.headers["x-request-id"] == started.trace_id


async def test_appended_events_carry_the_trace_and_projections_apply_them_in_it(servers: Any, redis: Any) -> None:
    nc = await connect(servers.nats.url, "tracing-test")
    js = nc.jetstream()
    tag = secrets.token_hex(4)
    spec = StreamSpec(f"TRACE{tag.upper()}", f"trace{tag}")
    await ensure_stream(js, spec)
    request = TraceContext.new()
    token = trace_var.set(request)
    try:
        seq = await EventStore(js, spec).append("pedido-1", [NewEvent("Pedido", {"n": 1})], expected_version=0)
    finally:
        trace_var.reset(token)
    await EventStore(js, spec).append("pedido-2", [NewEvent("Pedido", {"n": 2})], expected_version=0)  # no trace
    stored = await js.get_msg(spec.name, seq=seq)
    assert (stored.headers or {}).get("traceparent") == request.traceparent

    projection = NullProjection(f"trace-{tag}")
    runner = ProjectionRunner(js, redis, spec, projection)
    try:
        with json_log_lines("users") as lines:
            await runner.catch_up(timeout=30)
    finally:
        await nc.drain()
    applied = [line for line in lines if line["msg"] == "applying" and line["seq"] == seq]
    projected = [line for line in lines if line["msg"] == "projected" and line["seq"] == seq]
    assert applied and applied[0]["trace_id"] == request.trace_id and applied[0]["span_id"] != request.span_id
    assert projected and projected[0]["trace_id"] == request.trace_id
    untraced = [line for line in lines if line["msg"] == "applying" and line["seq"] == seq + 1]
    assert untraced and "trace_id" not in untraced[0]  # an event appended outside a trace is applied outside one
    assert projection.applied == [seq, seq + 1]


async def test_otlp_export_is_off_by_default_and_sends_the_logged_ids_when_on(monkeypatch: pytest.MonkeyPatch) -> None:
    from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

    from eventflow.web import OtlpSpans

    monkeypatch.delenv("EVENTFLOW_OTLP_ENDPOINT", raising=False)
    assert OtlpSpans.from_env("events") is None
    exporter = InMemorySpanExporter()
    monkeypatch.setenv("EVENTFLOW_OTLP_ENDPOINT", "http://collector.invalid:4318")
    monkeypatch.setattr(OtlpSpans, "exporter_factory", lambda endpoint: exporter)
    app = traced_app()
    with json_log_lines("events") as lines:
        resp = await get(app, {"traceparent": f"00-{TRACE}-{PARENT}-01"})
    ours = parse_traceparent(resp.headers["traceresponse"])
    assert ours is not None
    middleware = app.middleware_stack
    while middleware is not None and not hasattr(middleware, "otlp"):
        middleware = getattr(middleware, "app", None)
    assert middleware is not None and middleware.otlp is not None
    middleware.otlp.flush()  # the batch exporter sends in the background
    (span,) = exporter.get_finished_spans()
    assert f"{span.context.trace_id:032x}" == TRACE and f"{span.context.span_id:016x}" == ours.span_id
    assert span.parent is not None and f"{span.parent.span_id:016x}" == PARENT
    assert span.name == "GET /api/algo" and span.attributes["http.response.status_code"] == 200
    handled = next(line for line in lines if line["msg"] == "handling")
    assert (handled["trace_id"], handled["span_id"]) == (TRACE, ours.span_id)  # one id in the logs and the spans
