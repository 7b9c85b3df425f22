"""Plain helpers: real uvicorn servers in the test loop, request bodies, users and events made through
the real users/events services (users sign in through the real token endpoint: no test switches auth off)."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import uvicorn
from fastapi import FastAPI

from eventflow.auth import ORGANIZADOR
from eventflow.config import Settings
from eventflow.servers import free_port
from tests.utils.auth import Cuenta, bearer, con_rol, registrar

VISA_OK = "4242424242424242"
DECLINED = "4000000000000002"
INSUFFICIENT = "4000000000009995"
PROCESSING_ERROR = "4000000000000119"
BAD_LUHN = "4242424242424241"


def pago(numero: str = VISA_OK, vencimiento: str = "12/34", cvc: str = "123") -> dict[str, str]:
    return {"numero_tarjeta": numero, "vencimiento": vencimiento, "cvc": cvc}


def reserva(usuario_id: str, evento_id: str, cantidad: int = 1, **overrides: Any) -> dict[str, Any]:
    """A request body; the buyer's token goes in the headers (`Catalog.headers(usuario_id)`)."""
    body: dict[str, Any] = {"usuario_id": usuario_id, "evento_id": evento_id, "cantidad": cantidad, "pago": pago()}
    body.update(overrides)
    return body


def iso_in(days: float) -> str:
    return (datetime.now(UTC) + timedelta(days=days)).replace(microsecond=0).isoformat()


def key() -> str:
    return uuid.uuid4().hex


async def eventually(check: Callable[[], Awaitable[bool]], timeout: float = 10.0) -> None:
    """Wait for a condition (polled), with a generous deadline: never a fixed sleep standing in for one."""
    deadline = asyncio.get_running_loop().time() + timeout
    while not await check():
        assert asyncio.get_running_loop().time() < deadline, "condition not reached in time"
        await asyncio.sleep(0.05)


@asynccontextmanager
async def serve(app: FastAPI) -> AsyncIterator[str]:
    """A real uvicorn server (lifespan on) on a free port, in this event loop; yields its base URL."""
    port = free_port()
    config = uvicorn.Config(app, host="127.0.0.1", port=port, log_config=None, timeout_graceful_shutdown=2)
    server = uvicorn.Server(config)
    task = asyncio.create_task(server.serve())
    while not server.started:
        if task.done():
            task.result()
            raise RuntimeError("uvicorn stopped before starting")
        await asyncio.sleep(0.01)
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        await task


@asynccontextmanager
async def platform(settings: Settings) -> AsyncIterator[Settings]:
    """The real users and events services on real HTTP servers; returns settings pointing at them."""
    from services.events.bootstrap import create_app as events_app
    from services.users.bootstrap import create_app as users_app

    async with serve(users_app(settings)) as users_url, serve(events_app(settings)) as events_url:
        yield settings.model_copy(update={"users_url": users_url, "events_url": events_url})


class Catalog:
    """Creates users (signed in through the real token endpoint) and events (by an organizer) through the real
    services' public APIs. `tokens` maps each buyer's usuario_id to their access token."""

    def __init__(self, settings: Settings) -> None:
        self.users = httpx.AsyncClient(base_url=settings.users_url, timeout=30)
        self.events = httpx.AsyncClient(base_url=settings.events_url, timeout=30)
        self.tokens: dict[str, str] = {}
        self._organizer: Cuenta | None = None

    async def aclose(self) -> None:
        await self.users.aclose()
        await self.events.aclose()

    def headers(self, usuario_id: str) -> dict[str, str]:
        return bearer(self.tokens[usuario_id])

    async def usuario(self) -> str:
        cuenta = await registrar(self.users)
        self.tokens[cuenta.id] = cuenta.token
        return cuenta.id

    async def usuarios(self, n: int, concurrency: int = 32) -> list[str]:
        gate = asyncio.Semaphore(concurrency)

        async def one() -> str:
            async with gate:
                return await self.usuario()

        return list(await asyncio.gather(*(one() for _ in range(n))))

    async def con_rol(self, *roles: str) -> Cuenta:
        cuenta = await con_rol(self.users, *roles)
        self.tokens[cuenta.id] = cuenta.token
        return cuenta

    async def organizador(self) -> Cuenta:
        """The organizer who creates this catalog's events (made once)."""
        if self._organizer is None:
            self._organizer = await self.con_rol(ORGANIZADOR)
        return self._organizer

    async def evento(self, aforo: int = 100, precio: float = 20.0, **overrides: Any) -> str:
        body: dict[str, Any] = {
            "nombre": f"Concierto {uuid.uuid4().hex[:6]}",
            "descripcion": "prueba de reservas",
            "fecha": iso_in(30),
            "lugar": "Teatro",
            "aforo_total": aforo,
            "precio": precio,
            "categoria": "Musica",
        }
        body.update(overrides)
        organizer = await self.organizador()
        resp = await self.events.post("/api/eventos", json=body, headers=organizer.headers)
        assert resp.status_code == 201, resp.text
        return str(resp.json()["id"])

    async def disponibles(self, evento_id: str) -> int:
        resp = await self.events.get(f"/api/eventos/{evento_id}")
        assert resp.status_code == 200, resp.text
        return int(resp.json()["entradas_disponibles"])
