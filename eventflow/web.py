"""The FastAPI app every service starts from: request ids, problem details, health endpoints."""

from __future__ import annotations

import argparse
import re
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import AbstractAsyncContextManager
from typing import TypeVar

import uvicorn
from fastapi import APIRouter, FastAPI, Request, Response
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from eventflow.config import Settings
from eventflow.errors import idempotency_key_var, install_problem_handlers, problem
from eventflow.logs import configure_logging, request_id_var
from eventflow.responses import JsonResponse

ReadyCheck = Callable[[], Awaitable[None]]
SettingsT = TypeVar("SettingsT", bound=Settings)
_SAFE_REQUEST_ID = re.compile(r"^[A-Za-z0-9._-]{1,64}$")


class RequestIdMiddleware:
    """Takes X-Request-ID from the caller (the gateway) or makes one; echoes it; puts it in every log line."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        incoming = dict(scope["headers"]).get(b"x-request-id", b"").decode("latin-1")
        request_id = incoming if _SAFE_REQUEST_ID.match(incoming) else uuid.uuid4().hex
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
    app = FastAPI(title=title, lifespan=lifespan)  # type: ignore[arg-type]
    app.add_middleware(RequestIdMiddleware)
    install_problem_handlers(app)
    app.include_router(health_router(ready_checks))
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
