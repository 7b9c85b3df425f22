"""The FastAPI app every service starts from: trace context, request ids, problem details, health endpoints,
`/metrics` (eventflow.metrics) and the limits every request meets.

Limits (every refusal a problem body, RFC 9457): a request body over MAX_BODY_BYTES is a 413, counted as it
arrives whatever Content-Length says; a request line over MAX_URL_BYTES is a 414 and headers over MAX_HEADER_BYTES
a 431, refused by the HTTP protocol before any of it is handed to the app (BoundedHttpToolsProtocol); a client that
takes more than REQUEST_TIMEOUT_S to send its request gets a 408 and the connection closed (slowloris).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import contextvars
import inspect
import os
import re
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Collection, Iterator, Mapping
from contextlib import AbstractAsyncContextManager, contextmanager
from typing import Any, TypeVar

import orjson
import uvicorn
from fastapi import APIRouter, FastAPI, Request, Response
from starlette.exceptions import HTTPException
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from eventflow import metrics
from eventflow.config import Settings
from eventflow.errors import PROBLEM_JSON, idempotency_key_var, install_problem_handlers, problem
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

MAX_BODY_BYTES = 64 * 1024  # the largest legitimate body (a reservation with 50 seats) is under 4 KiB
MAX_URL_BYTES = 8 * 1024
MAX_HEADER_BYTES = 16 * 1024  # every header line together (a 15-minute ES256 token is under 1 KiB)
MAX_HEADERS = 100
REQUEST_TIMEOUT_S = 15.0  # to send a whole request, headers and body: a slow client is not waited for longer
KEEP_ALIVE_S = 5
READY_CHECK_TIMEOUT_S = 1.0  # a dependency that does not answer a readiness check in this long is failing


class PayloadTooLarge(HTTPException):
    """Raised from the request's receive channel as the body grows past the limit (inside the app's read)."""

    def __init__(self, limit: int) -> None:
        super().__init__(413, f"The request body is larger than {limit} bytes.")


class BodyLimitMiddleware:
    """413 for a body over `limit` bytes: at once when Content-Length says so, otherwise as soon as the bytes
    received pass it (chunked or lying clients), before the app has parsed any of it."""

    def __init__(self, app: ASGIApp, limit: int = MAX_BODY_BYTES) -> None:
        self.app = app
        self.limit = limit

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        declared = dict(scope["headers"]).get(b"content-length")
        if declared is not None and (not declared.isdigit() or int(declared) > self.limit):
            too_large = _too_large(self.limit, scope["path"]) if declared.isdigit() else _bad_length(scope["path"])
            await too_large(scope, receive, send)
            return
        received = 0
        started = False

        async def counted() -> Message:
            nonlocal received
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > self.limit:
                    raise PayloadTooLarge(self.limit)
            return message

        async def watched(message: Message) -> None:
            nonlocal started
            started = started or message["type"] == "http.response.start"
            await send(message)

        try:
            await self.app(scope, counted, watched)
        except PayloadTooLarge:
            if started:
                raise
            await _too_large(self.limit, scope["path"])(scope, receive, send)


def _too_large(limit: int, path: str) -> Response:
    detail = f"The request body is larger than {limit} bytes."
    response = problem(413, "Payload too large", detail, slug="payload-too-large", instance=path, limit=limit)
    response.headers["connection"] = "close"  # the rest of the body is not read
    return response


def _bad_length(path: str) -> Response:
    response = problem(400, "Bad request", "Content-Length is not a number.", slug="bad-request", instance=path)
    response.headers["connection"] = "close"
    return response


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


async def _passes(check: ReadyCheck) -> str:
    try:
        await asyncio.wait_for(check(), READY_CHECK_TIMEOUT_S)
        return "ok"
    except TimeoutError:
        return "failing: no answer"
    except Exception as err:
        return f"failing: {type(err).__name__}"


def any_of(checks: Mapping[str, ReadyCheck]) -> ReadyCheck:
    """A check that passes while at least one of `checks` does (the gateway: ready while one upstream answers)."""

    async def check() -> None:
        tasks = [asyncio.ensure_future(one()) for one in checks.values()]
        try:
            for next_done in asyncio.as_completed(tasks):
                with contextlib.suppress(Exception):
                    await next_done
                    return  # one answers: enough, the others are not waited for
        finally:
            for task in tasks:
                task.cancel()
        raise ConnectionError("none answers: " + ", ".join(checks))

    return check


def health_router(checks: Mapping[str, ReadyCheck], required: Collection[str] | None = None) -> APIRouter:
    """Liveness is the process itself: it answers, nothing else is asked. Readiness is what the service cannot
    work without: the `required` checks (default: all). The others are reported (`degraded`) but keep the
    service ready, so one shared dependency's outage does not take every replica out of its load balancer and
    turn a partial failure (reads from Redis with NATS down, reservations with Redis down) into a total one.
    Checks run concurrently, each bounded by READY_CHECK_TIMEOUT_S (probes time out too)."""
    router = APIRouter(tags=["health"])

    @router.get("/health/live")
    async def live() -> dict[str, str]:
        return {"status": "ok"}

    @router.get("/health/ready", response_model=None)
    async def ready(request: Request) -> Response:
        names = list(checks)
        results = dict(zip(names, await asyncio.gather(*(_passes(checks[name]) for name in names)), strict=True))
        needed = names if required is None else [name for name in names if name in required]
        if all(results[name] == "ok" for name in needed):
            status = "ok" if all(value == "ok" for value in results.values()) else "degraded"
            return JsonResponse({"status": status, "checks": results})
        return problem(
            503,
            "Not ready",
            "A dependency this service cannot work without is not reachable.",
            slug="not-ready",
            instance=request.url.path,
            checks=results,
        )

    return router


def _no_native_telemetry() -> dict[str, Any]:
    """FastAPI >= 0.16x asks the OpenTelemetry globals on every request whether its own telemetry is on (an
    os.environ read: 4 % of the gateway's CPU under py-spy). Our spans are TraceContextMiddleware's, so it is
    switched off where FastAPI has the setting."""
    if "telemetry" not in inspect.signature(FastAPI.__init__).parameters:
        return {}
    return {"telemetry": {"tracing": False, "metrics": False, "logs": False}}


def create_app(
    title: str,
    lifespan: Callable[[FastAPI], AbstractAsyncContextManager[None]] | Callable[[FastAPI], AsyncIterator[None]],
    ready_checks: dict[str, ReadyCheck],
    *,
    required: Collection[str] | None = None,
    max_body_bytes: int = MAX_BODY_BYTES,
) -> FastAPI:
    """The base app: `ready_checks` back /health/ready (only the `required` ones decide it; default all) and the
    `eventflow_dependency_up` gauges of /metrics; bodies over `max_body_bytes` are refused with a 413."""
    app = FastAPI(title=title, lifespan=lifespan, **_no_native_telemetry())  # type: ignore[arg-type]
    app_metrics = metrics.AppMetrics(app, ready_checks)
    app.state.metrics = app_metrics
    # Added innermost first: the trace context is set before the request id (made from it) and the metrics; the
    # body limit runs inside them, so its 413s carry the request id and are counted.
    app.add_middleware(BodyLimitMiddleware, limit=max_body_bytes)
    app.add_middleware(metrics.HttpMetricsMiddleware, metrics=app_metrics)
    app.add_middleware(RequestIdMiddleware)
    app.add_middleware(TraceContextMiddleware, service=title.removeprefix("EventFlow ").strip() or "eventflow")
    install_problem_handlers(app)
    document_problems(app)
    app.include_router(health_router(ready_checks, required))
    app.include_router(metrics.router())  # before the service's routes: this /metrics is the one served
    return app


PROBLEM_SCHEMA: dict[str, Any] = {
    "title": "Problem",
    "description": "RFC 9457 problem details: every 4xx and 5xx of this API.",
    "type": "object",
    "required": ["type", "title", "status"],
    "properties": {
        "type": {"type": "string"},
        "title": {"type": "string"},
        "status": {"type": "integer", "minimum": 400, "maximum": 599},
        "detail": {"type": "string"},
        "instance": {"type": "string"},
        "request_id": {"type": "string"},
        "errors": {
            "type": "array",
            "items": {
                "type": "object",
                "required": ["field", "message", "code"],
                "properties": {"field": {"type": "string"}, "message": {"type": "string"}, "code": {"type": "string"}},
            },
        },
    },
    "additionalProperties": True,
}


def document_problems(app: FastAPI) -> None:
    """The OpenAPI document says what the API really answers on errors: a problem body (application/problem+json)
    for the 422 FastAPI documents with its own shape, and as the `default` response of every operation (401, 403,
    404, 409, 413, 503, ...), so clients and schema-driven tests (tests/fuzz) check errors against it too."""
    generate = app.openapi

    def openapi() -> dict[str, Any]:
        if app.openapi_schema:
            return app.openapi_schema
        schema = generate()
        schema.setdefault("components", {}).setdefault("schemas", {})["Problem"] = PROBLEM_SCHEMA
        problem_response = {"content": {PROBLEM_JSON: {"schema": {"$ref": "#/components/schemas/Problem"}}}}
        default = {"description": "An error (RFC 9457 problem details)", **problem_response}
        for operations in schema.get("paths", {}).values():
            for operation in operations.values():
                responses = operation.setdefault("responses", {})
                if "422" in responses:
                    responses["422"] = {"description": "Validation failed", **problem_response}
                responses.setdefault("default", default)
        schemas = schema["components"]["schemas"]
        for unused in ("HTTPValidationError", "ValidationError"):
            schemas.pop(unused, None)
        app.openapi_schema = schema
        return schema

    app.openapi = openapi  # type: ignore[method-assign]


def _raw_problem(status: int, title: str, detail: str) -> bytes:
    """A whole HTTP/1.1 response with a problem body, for refusals made before any app runs (then closed)."""
    body = orjson.dumps({"type": f"/problems/{_SLUGS[status]}", "title": title, "status": status, "detail": detail})
    head = (
        f"HTTP/1.1 {status} {title}\r\ncontent-type: {PROBLEM_JSON}\r\ncontent-length: {len(body)}\r\n"
        "connection: close\r\n\r\n"
    )
    return head.encode() + body


_SLUGS = {400: "bad-request", 408: "request-timeout", 414: "uri-too-long", 431: "headers-too-large"}


def bounded_protocol(request_timeout_s: float = REQUEST_TIMEOUT_S) -> type[asyncio.Protocol] | str:
    """uvicorn's httptools protocol with limits it lacks: a deadline to send a whole request (armed when a
    connection opens and when each request begins, cleared when the request is complete), and sizes of the
    request line and the headers, checked as the parser hands them over. Without httptools: h11, whose
    `h11_max_incomplete_event_size` bounds the headers."""
    try:
        from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol
    except ImportError:  # pragma: no cover - uvicorn[standard] brings httptools
        return "h11"

    class BoundedHttpToolsProtocol(HttpToolsProtocol):
        _deadline: asyncio.TimerHandle | None = None
        _header_bytes = 0
        _refused = False

        def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
            super().connection_made(transport)
            self._arm()

        def connection_lost(self, exc: Exception | None) -> None:
            self._disarm()
            super().connection_lost(exc)

        def data_received(self, data: bytes) -> None:
            if not self._refused:
                super().data_received(data)

        def send_400_response(self, msg: str) -> None:
            if self._refused:
                return  # the parser stopped because we refused the request: that answer is already sent
            self._refuse(400, "Bad Request", "The request is not valid HTTP/1.1.")

        def _arm(self) -> None:
            self._disarm()
            self._deadline = self.loop.call_later(request_timeout_s, self._too_slow)

        def _disarm(self) -> None:
            if self._deadline is not None:
                self._deadline.cancel()
                self._deadline = None

        def _too_slow(self) -> None:
            self._deadline = None
            if self.cycle is not None and not self.cycle.response_complete and self.cycle.response_started:
                return  # the app is answering: not ours to cut
            if self.cycle is not None and not self.cycle.response_complete:
                self.cycle.disconnected = True  # the app's receive() now says the client went away
                self.cycle.message_event.set()
            detail = f"The request was not received within {request_timeout_s:g} s."
            self._refuse(408, "Request Timeout", detail)

        def _refuse(self, status: int, title: str, detail: str) -> None:
            self._refused = True
            if not self.transport.is_closing():
                self.transport.write(_raw_problem(status, title, detail))
                self.transport.close()

        def on_message_begin(self) -> None:
            super().on_message_begin()
            self._header_bytes = 0
            if self._deadline is None:
                self._arm()

        def on_url(self, url: bytes) -> None:
            super().on_url(url)
            if len(self.url) > MAX_URL_BYTES:
                self._refuse(414, "URI Too Long", f"The request line is longer than {MAX_URL_BYTES} bytes.")
                raise _Refused()

        def on_header(self, name: bytes, value: bytes) -> None:
            self._header_bytes += len(name) + len(value) + 4
            if self._header_bytes > MAX_HEADER_BYTES or len(self.headers) >= MAX_HEADERS:
                detail = f"The headers are larger than {MAX_HEADER_BYTES} bytes or more than {MAX_HEADERS}."
                self._refuse(431, "Request Header Fields Too Large", detail)
                raise _Refused()
            super().on_header(name, value)

        def on_message_complete(self) -> None:
            self._disarm()
            super().on_message_complete()

    return BoundedHttpToolsProtocol


class _Refused(Exception):
    """Stops the parser (httptools turns a callback's exception into an HttpParserCallbackError)."""


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
    uvicorn.run(create(settings), **server_options(args.host, args.port))


def server_options(host: str, port: int, request_timeout_s: float = REQUEST_TIMEOUT_S) -> dict[str, Any]:
    """uvicorn's settings for every service (also for tests that run a service in-process)."""
    return {
        "host": host,
        "port": port,
        "log_config": None,
        "http": bounded_protocol(request_timeout_s),
        "timeout_keep_alive": KEEP_ALIVE_S,
        "h11_max_incomplete_event_size": MAX_HEADER_BYTES + MAX_URL_BYTES,
        "timeout_graceful_shutdown": 10,
    }
