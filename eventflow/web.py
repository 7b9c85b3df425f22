"""The FastAPI app every service starts from: trace context, request ids, problem details, health endpoints and
`/metrics` (eventflow.metrics)."""

from __future__ import annotations

import argparse
import contextvars
import os
import re
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from contextlib import AbstractAsyncContextManager, contextmanager
from typing import Any, TypeVar

import uvicorn
from fastapi import APIRouter, FastAPI, Request, Response
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from eventflow import metrics
from eventflow.config import Settings
from eventflow.errors import idempotency_key_var, install_problem_handlers, problem
from eventflow.logs import (
    TRACEPARENT,
    TraceContext,
    configure_logging,
    parse_traceparent,
    request_id_var,
    trace_var,
)
from eventflow.responses import JsonResponse

ReadyCheck = Callable[[], Awaitable[None]]
SettingsT = TypeVar("SettingsT", bound=Settings)
_SAFE_REQUEST_ID = re.compile(r"^[A-Za-z0-9._-]{1,64}$")


class TraceContextMiddleware:
    """Continues the caller's W3C trace (`traceparent`) with a span of our own, or starts a trace, for every log
    line, outgoing call and appended event of the request; answers with `traceresponse` (our span).

    Without a `traceparent`, a 32-hex X-Request-ID (what the gateway makes) is taken as the trace id, so a hop that
    forwards only the request id still stays in the trace. The context is not reset on the way out: a 500 is
    logged by the outermost middleware, after this one returned (each request runs in its own task anyway).
    """

    def __init__(self, app: ASGIApp, service: str = "eventflow") -> None:
        self.app = app
        self.otlp = OtlpSpans.from_env(service)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        headers = dict(scope["headers"])
        caller = parse_traceparent(headers.get(TRACEPARENT.encode()))
        if caller is not None:
            context = caller.child()
        else:
            context = TraceContext.new(headers.get(b"x-request-id", b"").decode("latin-1").lower() or None)
        trace_var.set(context)
        answer = (b"traceresponse", context.traceparent.encode())

        status = 500

        async def send_with_trace(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = int(message["status"])
                message.setdefault("headers", []).append(answer)
            await send(message)

        if self.otlp is None:
            await self.app(scope, receive, send_with_trace)
            return
        with self.otlp.span(context, caller, scope) as span:
            try:
                await self.app(scope, receive, send_with_trace)
            finally:
                route = getattr(scope.get("route"), "path", None) or scope["path"]
                span.update_name(f"{scope['method']} {route}")
                span.set_attribute("http.response.status_code", status)


class OtlpSpans:
    """Optional OpenTelemetry export (EVENTFLOW_OTLP_ENDPOINT, off by default; `pip install 'eventflow[otel]'`):
    one server span per request, with the very ids the logs carry (the SDK is handed ours, not its own), exported
    over OTLP/HTTP in batches."""

    exporter_factory: Callable[[str], Any] | None = None  # tests swap in an in-memory exporter

    def __init__(self, provider: Any) -> None:
        self.provider = provider  # flushes what is left at exit (the SDK's atexit hook)
        self.tracer = provider.get_tracer("eventflow.web")

    def flush(self) -> None:
        self.provider.force_flush()

    @classmethod
    def from_env(cls, service: str) -> OtlpSpans | None:
        endpoint = os.environ.get("EVENTFLOW_OTLP_ENDPOINT")
        if not endpoint:
            return None
        try:
            from opentelemetry.sdk.resources import Resource
            from opentelemetry.sdk.trace import TracerProvider
            from opentelemetry.sdk.trace.export import BatchSpanProcessor
            from opentelemetry.sdk.trace.id_generator import IdGenerator
        except ImportError as err:
            raise RuntimeError("EVENTFLOW_OTLP_ENDPOINT is set: pip install 'eventflow[otel]'") from err

        class OurIds(IdGenerator):
            def generate_span_id(self) -> int:
                return int(_pending_span.get().span_id, 16)

            def generate_trace_id(self) -> int:
                return int(_pending_span.get().trace_id, 16)

        if cls.exporter_factory is not None:
            exporter = cls.exporter_factory(endpoint)
        else:
            from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter

            exporter = OTLPSpanExporter(endpoint=f"{endpoint.rstrip('/')}/v1/traces")
        name = os.environ.get("OTEL_SERVICE_NAME", service)
        provider = TracerProvider(resource=Resource.create({"service.name": name}), id_generator=OurIds())
        provider.add_span_processor(BatchSpanProcessor(exporter))
        return cls(provider)

    @contextmanager
    def span(self, context: TraceContext, caller: TraceContext | None, scope: Scope) -> Iterator[Any]:
        from opentelemetry import trace

        parent = None
        if caller is not None:
            flags = trace.TraceFlags(trace.TraceFlags.SAMPLED if caller.sampled else trace.TraceFlags.DEFAULT)
            remote = trace.SpanContext(int(caller.trace_id, 16), int(caller.span_id, 16), True, flags)
            parent = trace.set_span_in_context(trace.NonRecordingSpan(remote))
        token = _pending_span.set(context)  # the SDK asks our id generator for the ids while it starts the span
        try:
            span = self.tracer.start_span(f"{scope['method']} {scope['path']}", parent, kind=trace.SpanKind.SERVER)
        finally:
            _pending_span.reset(token)
        with trace.use_span(span, end_on_exit=True):
            yield span


_pending_span: contextvars.ContextVar[TraceContext] = contextvars.ContextVar("pending_span")


class RequestIdMiddleware:
    """Takes X-Request-ID from the caller (the gateway) or makes one (the trace id, so both greps find the same
    lines); echoes it; puts it in every log line."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        incoming = dict(scope["headers"]).get(b"x-request-id", b"").decode("latin-1")
        trace = trace_var.get()
        made = trace.trace_id if trace is not None else uuid.uuid4().hex
        request_id = incoming if _SAFE_REQUEST_ID.match(incoming) else made
        token = request_id_var.set(request_id)

        async def send_with_id(message: Message) -> None:
            if message["type"] == "http.response.start":
                message.setdefault("headers", []).append((b"x-request-id", request_id.encode()))
            await send(message)

        try:
            await self.app(scope, receive, send_with_id)
        finally:
            request_id_var.reset(token)


class IdempotencyKeyMiddleware:
    """Gives a POST to `paths` that came without an Idempotency-Key a generated one, before anything runs, and
    returns it on every answer: a client whose request failed with a 500 or timed out at the gateway can retry
    it safely with that key."""

    def __init__(self, app: ASGIApp, paths: tuple[str, ...]) -> None:
        self.app = app
        self.paths = paths

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["method"] != "POST" or scope["path"] not in self.paths:
            await self.app(scope, receive, send)
            return
        headers = list(scope["headers"])
        key = next((value for name, value in headers if name == b"idempotency-key"), None)
        if key is None:
            key = uuid.uuid4().hex.encode()
            scope = {**scope, "headers": [*headers, (b"idempotency-key", key)]}
        idempotency_key_var.set(key.decode("latin-1"))  # not reset: the 500 handler runs after we return

        async def send_with_key(message: Message) -> None:
            if message["type"] == "http.response.start":
                sent = message.setdefault("headers", [])
                if not any(name.lower() == b"idempotency-key" for name, _ in sent):
                    sent.append((b"idempotency-key", key))
            await send(message)

        await self.app(scope, receive, send_with_key)


def health_router(checks: dict[str, ReadyCheck]) -> APIRouter:
    router = APIRouter(tags=["health"])

    @router.get("/health/live")
    async def live() -> dict[str, str]:
        return {"status": "ok"}

    @router.get("/health/ready", response_model=None)
    async def ready(request: Request) -> Response:
        results: dict[str, str] = {}
        for name, check in checks.items():
            try:
                await check()
                results[name] = "ok"
            except Exception as err:
                results[name] = f"failing: {type(err).__name__}"
        if all(v == "ok" for v in results.values()):
            return JsonResponse({"status": "ok", "checks": results})
        return problem(
            503,
            "Not ready",
            "A dependency is not reachable.",
            slug="not-ready",
            instance=request.url.path,
            checks=results,
        )

    return router


def create_app(
    title: str,
    lifespan: Callable[[FastAPI], AbstractAsyncContextManager[None]] | Callable[[FastAPI], AsyncIterator[None]],
    ready_checks: dict[str, ReadyCheck],
) -> FastAPI:
    """The base app: `ready_checks` back /health/ready and the `eventflow_dependency_up` gauges of /metrics."""
    app = FastAPI(title=title, lifespan=lifespan)  # type: ignore[arg-type]
    app_metrics = metrics.AppMetrics(app, ready_checks)
    app.state.metrics = app_metrics
    # Added innermost first: the trace context is set before the request id (made from it) and the metrics.
    app.add_middleware(metrics.HttpMetricsMiddleware, metrics=app_metrics)
    app.add_middleware(RequestIdMiddleware)
    app.add_middleware(TraceContextMiddleware, service=title.removeprefix("EventFlow ").strip() or "eventflow")
    install_problem_handlers(app)
    app.include_router(health_router(ready_checks))
    app.include_router(metrics.router())  # before the service's routes: this /metrics is the one served
    return app


def serve(
    service: str, default_port: int, create: Callable[[SettingsT], FastAPI], settings_class: type[SettingsT]
) -> None:
    """Every service's entry point: `python -m services.<name>.main [--host H] [--port P]`."""
    parser = argparse.ArgumentParser(description=f"EventFlow {service} service")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=default_port)
    args = parser.parse_args()
    settings = settings_class()
    configure_logging(service, settings.log_level)
    uvicorn.run(create(settings), host=args.host, port=args.port, log_config=None)
