"""The aiohttp adapters to the users and events services: documents, 404s, outages and the short cache."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest
from fastapi import FastAPI, HTTPException

from eventflow.errors import Unavailable
from eventflow.http import client_session
from eventflow.servers import free_port
from services.reservations.catalog import HttpCatalogoEventos, HttpDirectorioUsuarios, evento_desde_documento
from tests.reservations.helpers import serve


def stub_services(calls: list[str]) -> FastAPI:
    app = FastAPI()

    @app.get("/api/usuarios/{usuario_id}")
    async def usuario(usuario_id: str) -> dict[str, str]:
        calls.append(usuario_id)
        if usuario_id == "boom":
            raise HTTPException(503)
        if usuario_id != "u1":
            raise HTTPException(404)
        return {"id": "u1"}

    @app.get("/api/eventos/{evento_id}")
    async def evento(evento_id: str) -> dict[str, object]:
        calls.append(evento_id)
        return {
            "id": evento_id,
            "fecha": "2031-01-01T21:00:00-03:00",
            "aforo_total": 10,
            "entradas_disponibles": 7,
            "precio": 25.5,
            "precio_centimos": 2550,
            "secciones": None,
            "venta_desde": None,
        }

    return app


@pytest.fixture
async def base_url() -> AsyncIterator[tuple[str, list[str]]]:
    calls: list[str] = []
    async with serve(stub_services(calls)) as url:
        yield url, calls


async def test_users_exist_or_not_and_found_ones_are_cached(base_url: tuple[str, list[str]]) -> None:
    url, calls = base_url
    async with client_session() as session:
        directorio = HttpDirectorioUsuarios(session, url, cache_s=5)
        assert await directorio.existe("u1") and await directorio.existe("u1")
        assert not await directorio.existe("u2")
        assert calls == ["u1", "u2"]
        with pytest.raises(Unavailable):
            await directorio.existe("boom")


async def test_events_are_read_and_cached(base_url: tuple[str, list[str]]) -> None:
    url, calls = base_url
    async with client_session() as session:
        catalogo = HttpCatalogoEventos(session, url, cache_s=5)
        evento = await catalogo.evento("e1")
        assert evento is not None and (evento.precio_centimos, evento.entradas_disponibles) == (2550, 7)
        assert await catalogo.evento("e1") == evento
        assert calls == ["e1"]


async def test_a_service_that_does_not_answer_is_unavailable() -> None:
    async with client_session(timeout_s=1) as session:
        with pytest.raises(Unavailable):
            await HttpDirectorioUsuarios(session, f"http://127.0.0.1:{free_port()}").existe("u1")


def test_a_decimal_price_is_read_in_cents() -> None:
    doc = {"id": "e", "fecha": "2031-01-01T00:00:00+00:00", "aforo_total": 5, "precio": 19.99, "secciones": [{}]}
    evento = evento_desde_documento(doc)
    assert (evento.precio_centimos, evento.entradas_disponibles, evento.numerado) == (1999, 5, True)
