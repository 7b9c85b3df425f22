"""Domain errors and their one HTTP shape: RFC 9457 problem details.

Domain code raises these without knowing about HTTP; `install_problem_handlers` turns every error,
including FastAPI's own 404/405/422, into `application/problem+json`.
"""

from __future__ import annotations

import logging
from contextvars import ContextVar
from typing import Any

import nats.errors
import nats.js.errors
import redis.exceptions
from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from starlette.exceptions import HTTPException as StarletteHTTPException

from eventflow.logs import request_id_var
from eventflow.responses import JsonResponse

PROBLEM_JSON = "application/problem+json"
log = logging.getLogger(__name__)
# Set by eventflow.web.IdempotencyKeyMiddleware: a 500 is answered outside every middleware, so it reads it here.
idempotency_key_var: ContextVar[str | None] = ContextVar("idempotency_key", default=None)


class DomainError(Exception):
    """A rule of the domain said no. Subclasses pick the status and a stable `type` slug."""

    status: int = 400
    slug: str = "bad-request"
    title: str = "Bad request"

    def __init__(self, detail: str, **extra: Any) -> None:
        super().__init__(detail)
        self.detail = detail
        self.extra = extra


class NotFound(DomainError):
    status, slug, title = 404, "not-found", "Not found"


class Conflict(DomainError):
    status, slug, title = 409, "conflict", "Conflict"


class Unprocessable(DomainError):
    status, slug, title = 422, "unprocessable", "Unprocessable request"


class Unavailable(DomainError):
    """A dependency cannot answer now (NATS leader change, Redis down): 503 with Retry-After, never a 500."""

    status, slug, title = 503, "unavailable", "Service unavailable"

    def __init__(self, detail: str, *, retry_after_s: int = 2, **extra: Any) -> None:
        super().__init__(detail, **extra)
        self.headers = {"Retry-After": str(retry_after_s)}


# Transport failures of NATS and Redis that reach a handler: the dependency is away, not the code broken.
DEPENDENCY_ERRORS: tuple[type[Exception], ...] = (
    TimeoutError,
    ConnectionError,
    nats.errors.TimeoutError,
    nats.errors.NoServersError,
    nats.errors.ConnectionClosedError,
    nats.errors.ConnectionReconnectingError,
    nats.js.errors.ServiceUnavailableError,  # "JetStream system temporarily unavailable" (a node restarting)
    redis.exceptions.ConnectionError,
    redis.exceptions.TimeoutError,
)


def problem(
    status: int,
    title: str,
    detail: str | None = None,
    *,
    slug: str | None = None,
    instance: str | None = None,
    **extra: Any,
) -> JsonResponse:
    body: dict[str, Any] = {
        "type": f"/problems/{slug}" if slug else "about:blank",
        "title": title,
        "status": status,
    }
    if detail:
        body["detail"] = detail
    if instance:
        body["instance"] = instance
    request_id = request_id_var.get()
    if request_id:
        body["request_id"] = request_id
    body.update(extra)
    return JsonResponse(body, status_code=status, media_type=PROBLEM_JSON)


# Framework errors (routing, the body limit of eventflow.web) as problems: title and `type` slug.
HTTP_PROBLEMS: dict[int, tuple[str, str | None]] = {
    404: ("Not found", None),
    405: ("Method not allowed", None),
    413: ("Payload too large", "payload-too-large"),
}


def _field_errors(exc: RequestValidationError) -> list[dict[str, Any]]:
    errors = []
    for err in exc.errors():
        loc = [str(part) for part in err.get("loc", ()) if part not in ("body", "query", "path", "header")]
        # Never echo the rejected input back: it may be personal data or a card number.
        errors.append(
            {"field": ".".join(loc) or "body", "message": err.get("msg", "invalid"), "code": err.get("type", "invalid")}
        )
    return errors


def install_problem_handlers(app: FastAPI) -> None:
    @app.exception_handler(DomainError)
    async def _domain(request: Request, exc: DomainError) -> JsonResponse:
        response = problem(exc.status, exc.title, exc.detail, slug=exc.slug, instance=request.url.path, **exc.extra)
        response.headers.update(getattr(exc, "headers", None) or {})
        return response

    @app.exception_handler(RequestValidationError)
    async def _validation(request: Request, exc: RequestValidationError) -> JsonResponse:
        return problem(
            422,
            "Validation failed",
            "The request does not match the expected shape.",
            slug="validation",
            instance=request.url.path,
            errors=_field_errors(exc),
        )

    @app.exception_handler(StarletteHTTPException)
    async def _http(request: Request, exc: StarletteHTTPException) -> JsonResponse:
        title, slug = HTTP_PROBLEMS.get(exc.status_code, ("HTTP error", None))
        detail = str(exc.detail) if exc.detail else None
        response = problem(exc.status_code, title, detail, slug=slug, instance=request.url.path)
        if exc.headers:
            response.headers.update(exc.headers)
        return response

    async def _dependency(request: Request, exc: Exception) -> JsonResponse:
        log.warning("dependency unavailable: %s", type(exc).__name__, extra={"path": request.url.path})
        response = problem(
            503,
            Unavailable.title,
            "A dependency did not answer; retry (with the same Idempotency-Key for a write).",
            slug=Unavailable.slug,
            instance=request.url.path,
        )
        response.headers["Retry-After"] = "2"
        if key := idempotency_key_var.get():
            response.headers["idempotency-key"] = key
        return response

    for dependency_error in DEPENDENCY_ERRORS:  # handled, not re-raised as a 500 is
        app.add_exception_handler(dependency_error, _dependency)

    @app.exception_handler(Exception)
    async def _unexpected(request: Request, exc: Exception) -> JsonResponse:
        log.exception("unhandled error", extra={"path": request.url.path})
        response = problem(
            500,
            "Internal error",
            "Something failed on our side; it was logged.",
            slug="internal",
            instance=request.url.path,
        )
        if key := idempotency_key_var.get():
            response.headers["idempotency-key"] = key
        return response
