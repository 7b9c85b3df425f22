"""GET /api/eventos/{id} without Redis: folded from the event log, the same document the read model serves.

The reservation chain reads the event this way, so this is what keeps reservations working while Redis is down
(tests/faults/test_services.py::test_reservations_keep_working_while_redis_is_down). These tests run their own
servers: they kill and pause Redis.
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

import httpx
import pytest

from eventflow.auth import ORGANIZADOR
from eventflow.breaker import Breaker
from eventflow.errors import Unavailable
from eventflow.eventstore import NewEvent, StoredEvent
from services.events.bootstrap import create_app
from services.events.log_fallback import LogFallback
from services.users.bootstrap import create_app as users_app
from tests.events.helpers import evento_body, iso_in, unique
from tests.utils.app import api_client
from tests.utils.auth import con_rol
from tests.utils.servers import Servers, running_servers

GUARD_S = 30.0  # only so that a hang fails the test instead of the run


@asynccontextmanager
async def events_service(servers: Servers, breaker: Breaker | None = None) -> AsyncIterator[httpx.AsyncClient]:
    """The events service as an organizer calls it (the real users service issues the token)."""
    settings = servers.settings()
    app = create_app(settings, read_model_breaker=breaker)
    async with api_client(users_app(settings)) as users, api_client(app) as events:
        events.headers.update((await con_rol(users, ORGANIZADOR)).headers)
        yield events


def every_field() -> dict[str, object]:
    """Sections, a sale window and both limits: every field the chain reads is in the document compared."""
    return evento_body(
        nombre=unique("Respaldo "),
        aforo_total=None,
        secciones=[{"nombre": "Platea", "asientos": 30}, {"nombre": "Pullman", "asientos": 12}],
        venta_desde=iso_in(1),
        limite_por_usuario=6,
        max_por_solicitud=4,
    )


async def test_a_read_by_id_with_redis_killed_is_the_read_models_document_folded_from_the_log(
    tmp_path: Path,
) -> None:
    with running_servers(tmp_path) as servers:
        async with events_service(servers) as events:
            created = await events.post("/api/eventos", json=every_field())
            assert created.status_code == 201, created.text
            url = f"/api/eventos/{created.json()['id']}"
            from_redis = await events.get(url)
            assert from_redis.status_code == 200 and "eventflow-source" not in from_redis.headers
            servers.redis.kill()
            try:
                from_log = await asyncio.wait_for(events.get(url), GUARD_S)
                unknown = await asyncio.wait_for(events.get(f"/api/eventos/{uuid.uuid4()}"), GUARD_S)
                wildcard = await asyncio.wait_for(events.get("/api/eventos/>"), GUARD_S)
            finally:
                servers.redis.start_again()
    assert from_log.status_code == 200, from_log.text
    assert from_log.json() == from_redis.json()
    assert from_log.headers["eventflow-source"] == "log"
    assert from_log.headers["cache-control"] == "no-store", "its availability counts no sales: nobody may keep it"
    assert unknown.status_code == 404 and unknown.headers["content-type"] == "application/problem+json"
    assert wildcard.status_code == 404, "a subject wildcard must not fold some other event's subject"


async def test_a_read_by_id_with_redis_hung_is_folded_from_the_log(tmp_path: Path) -> None:
    with running_servers(tmp_path) as servers:
        async with events_service(servers) as events:
            created = await events.post("/api/eventos", json=evento_body(nombre=unique("Colgado ")))
            assert created.status_code == 201, created.text
            servers.redis.pause()  # SIGSTOP: connected, nothing answers; the client's socket timeout ends the wait
            try:
                read = await asyncio.wait_for(events.get(f"/api/eventos/{created.json()['id']}"), GUARD_S)
            finally:
                servers.redis.resume()
    assert read.status_code == 200, read.text
    assert read.headers["eventflow-source"] == "log"
    assert read.json() == created.json()


async def test_after_a_redis_failure_the_log_answers_alone_until_the_pause_ends(tmp_path: Path) -> None:
    """A hung Redis would cost every read its socket timeout: after one failure, reads skip Redis for a while."""
    now = [1_000.0]
    breaker = Breaker(pause_s=2.0, clock=lambda: now[0])
    with running_servers(tmp_path) as servers:
        async with events_service(servers, breaker) as events:
            created = await events.post("/api/eventos", json=evento_body(nombre=unique("Pausa ")))
            assert created.status_code == 201, created.text
            url = f"/api/eventos/{created.json()['id']}"
            servers.redis.kill()
            try:
                failed = await asyncio.wait_for(events.get(url), GUARD_S)
            finally:
                servers.redis.start_again()
            during_pause = await events.get(url)  # Redis is back, but not asked yet
            now[0] += 2.1
            after_pause = await events.get(url)
    assert [r.headers.get("eventflow-source") for r in (failed, during_pause, after_pause)] == ["log", "log", None]
    assert failed.json() == during_pause.json() == after_pause.json() == created.json()


class GatedLog:
    """An EventLog whose loads wait for `opened` and are counted: the fallback's bounds are about how often it
    reads the log, which the real store cannot be asked."""

    def __init__(self) -> None:
        self.loads: list[str] = []
        self.entered = asyncio.Event()
        self.opened = asyncio.Event()

    async def append(self, aggregate_id: str, events: list[NewEvent], expected_version: int | None) -> int:
        raise AssertionError("the fallback only reads")

    async def load(self, aggregate_id: str, *, direct: bool = False) -> tuple[list[StoredEvent], int]:
        self.loads.append(aggregate_id)
        self.entered.set()
        await self.opened.wait()
        data = {k: v for k, v in evento_body(precio_centimos=2550).items() if k != "precio"}
        data |= {"aforo_total": 100, "secciones": None, "venta_desde": None}
        stored = StoredEvent(1, "EVENTOS", aggregate_id, "EventoCreado", str(uuid.uuid4()), iso_in(0), data)
        return [stored], 1


async def test_the_fallback_reads_each_event_from_the_log_once_and_bounds_the_reads_in_flight() -> None:
    log = GatedLog()
    fallback = LogFallback(log, max_in_flight=1)
    hot, other = str(uuid.uuid4()), str(uuid.uuid4())
    readers = [asyncio.create_task(fallback.evento(hot)) for _ in range(20)]
    await log.entered.wait()
    with pytest.raises(Unavailable):  # a second event while the one read allowed is in flight: 503, not a queue
        await fallback.evento(other)
    log.opened.set()
    docs = await asyncio.gather(*readers)
    assert {d["id"] for d in docs} == {hot} and docs[0]["entradas_disponibles"] == 100
    assert (await fallback.evento(hot)) == docs[0]
    assert await fallback.evento("not-an-id") is None
    assert log.loads == [hot], "one read for twenty concurrent readers and a later one; none for a malformed id"
