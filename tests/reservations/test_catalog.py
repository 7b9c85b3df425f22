"""The aiohttp adapters to the users and events services: documents, 404s, outages, the short cache, and the
service's own token (eventflow.service_token) for the users service."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from dataclasses import dataclass, field

import pytest
from fastapi import FastAPI, HTTPException, Request, Response

from eventflow.config import Settings
from eventflow.errors import Unavailable
from eventflow.http import client_session
from eventflow.servers import free_port
from eventflow.service_token import ServiceToken
from services.reservations.catalog import HttpCatalogoEventos, HttpDirectorioUsuarios, evento_desde_documento
from tests.reservations.helpers import Catalog, platform, serve


@dataclass
class Stub:
    """What the stub services saw; `valid` are the tokens its /existe accepts, unless it `refuses` every one."""

    calls: list[str] = field(default_factory=list)
    issued: int = 0
    valid: set[str] = field(default_factory=set)
    refuses: bool = False


def stub_services(stub: Stub) -> FastAPI:
    app = FastAPI()

    @app.post("/api/auth/token")
    async def token(body: dict[str, str]) -> dict[str, object]:
        if body.get("client_secret") != "s3cret":
            raise HTTPException(401)
        stub.issued += 1
        issued = f"token-{stub.issued}"
        stub.valid.add(issued)
        return {"access_token": issued, "token_type": "Bearer", "expires_in": 900}

    @app.get("/api/usuarios/{usuario_id}/existe")
    async def existe(usuario_id: str, request: Request) -> Response:
        if stub.refuses or request.headers.get("authorization", "").removeprefix("Bearer ") not in stub.valid:
            raise HTTPException(401)
        stub.calls.append(usuario_id)
        if usuario_id == "boom":
            raise HTTPException(503)
        if usuario_id != "u1":
            raise HTTPException(404)
        return Response(status_code=204)

    @app.get("/api/eventos/{evento_id}")
    async def evento(evento_id: str) -> dict[str, object]:
        stub.calls.append(evento_id)
        return {
            "id": evento_id,
            "fecha": "2031-01-01T21:00:00-03:00",
            "aforo_total": 10,
            "entradas_disponibles": 7,
            "precio": 25.5,
            "precio_centimos": 2550,
            "secciones": None,
            "venta_desde": None,
            "organizador_id": "org-1",
        }

    return app


@pytest.fixture
async def base_url() -> AsyncIterator[tuple[str, Stub]]:
    stub = Stub()
    async with serve(stub_services(stub)) as url:
        yield url, stub


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


async def test_users_exist_or_not_and_found_ones_are_cached(base_url: tuple[str, Stub]) -> None:
    url, stub = base_url
    async with client_session() as session:
        directorio = HttpDirectorioUsuarios(ServiceToken(session, url, "reservations", "s3cret"), url, cache_s=5)
        assert await directorio.existe("u1") and await directorio.existe("u1")
        assert not await directorio.existe("u2")
        assert stub.calls == ["u1", "u2"]
        with pytest.raises(Unavailable):
            await directorio.existe("boom")


async def test_the_token_is_fetched_once_cached_until_near_expiry_and_shared(base_url: tuple[str, Stub]) -> None:
    url, stub = base_url
    clock = Clock()
    async with client_session() as session:
        token = ServiceToken(session, url, "reservations", "s3cret", clock=clock)
        # All 20 start before the first answer can arrive (they run before the loop polls the socket).
        assert set(await asyncio.gather(*(token.token() for _ in range(20)))) == {"token-1"}
        assert stub.issued == 1
        clock.now += 900 - 61  # more than a minute left: still the cached one
        assert await token.token() == "token-1" and stub.issued == 1
        clock.now += 2  # under a minute left: renewed
        assert await token.token() == "token-2" and stub.issued == 2


async def test_a_refused_token_is_replaced_and_the_call_retried_once(base_url: tuple[str, Stub]) -> None:
    url, stub = base_url
    async with client_session() as session:
        directorio = HttpDirectorioUsuarios(ServiceToken(session, url, "reservations", "s3cret"), url, cache_s=0)
        assert await directorio.existe("u1") and stub.issued == 1
        stub.valid.clear()  # the users service stops accepting our token (say, its key was dropped)
        assert await directorio.existe("u1") and stub.issued == 2
        stub.refuses = True
        with pytest.raises(Unavailable):  # one retry, not a loop: a 401 that stays is an outage
            await directorio.existe("u1")
        assert stub.issued == 3


async def test_a_wrong_credential_makes_the_users_service_unavailable(base_url: tuple[str, Stub]) -> None:
    url, stub = base_url
    async with client_session() as session:
        directorio = HttpDirectorioUsuarios(ServiceToken(session, url, "reservations", "wrong"), url)
        with pytest.raises(Unavailable):
            await directorio.existe("u1")
    assert stub.calls == []


async def test_the_real_users_service_answers_our_service_token_only(settings: Settings) -> None:
    async with platform(settings) as s, client_session() as session:
        catalog = Catalog(s)
        usuario = await catalog.usuario()
        token = ServiceToken(session, s.users_url, "reservations", str(s.client_secret))
        directorio = HttpDirectorioUsuarios(token, s.users_url, cache_s=0)
        assert await directorio.existe(usuario)
        assert not await directorio.existe("0" * 32)
        anonymous = await catalog.users.get(f"/api/usuarios/{usuario}/existe")
        assert anonymous.status_code == 401, "without a token the users service says nothing"
        forged = ServiceToken(session, s.users_url, "events", str(s.client_secret))  # reservations' secret
        with pytest.raises(Unavailable):
            await HttpDirectorioUsuarios(forged, s.users_url).existe(usuario)
        await catalog.aclose()


async def test_events_are_read_and_cached(base_url: tuple[str, Stub]) -> None:
    url, stub = base_url
    async with client_session() as session:
        catalogo = HttpCatalogoEventos(session, url, cache_s=5)
        evento = await catalogo.evento("e1")
        assert evento is not None and (evento.precio_centimos, evento.entradas_disponibles) == (2550, 7)
        assert evento.organizador_id == "org-1"
        assert await catalogo.evento("e1") == evento
        assert stub.calls == ["e1"]


async def test_a_service_that_does_not_answer_is_unavailable() -> None:
    url = f"http://127.0.0.1:{free_port()}"
    async with client_session(timeout_s=1) as session:
        with pytest.raises(Unavailable):
            await HttpDirectorioUsuarios(ServiceToken(session, url, "reservations", "s3cret"), url).existe("u1")


def test_a_decimal_price_is_read_in_cents() -> None:
    doc = {"id": "e", "fecha": "2031-01-01T00:00:00+00:00", "aforo_total": 5, "precio": 19.99, "secciones": [{}]}
    evento = evento_desde_documento(doc)
    assert (evento.precio_centimos, evento.entradas_disponibles, evento.numerado) == (1999, 5, True)
    assert evento.organizador_id is None  # an event created before accounts
