"""`make rebuild` while the users service runs and purchases come in: every user stays readable with their
whole history, and the result is exactly what a cold rebuild gives.

Forced, not hoped for: the rebuild's history projection stops inside apply midway (GatedProjection), and the
rebuild's Redis connection is held at its first delete of history keys (RedisGate); at each, a live purchase
is projected and reads are sampled. Runs on its own Redis database (and its own event loop, unlike the
module-scoped apps of the other users tests).
"""

from __future__ import annotations

import asyncio
import random
from collections import Counter

import pytest
import redis.asyncio as aioredis

from eventflow.contracts import RESERVA_CANCELADA, RESERVA_CONFIRMADA
from eventflow.eventstore import EventStore, NewEvent
from eventflow.jetstream import RESERVAS, USUARIOS, connect
from eventflow.rebuild import rebuild
from services.users.bootstrap import create_app, read_models
from services.users.projections import HistorialProjection, UsuariosProjection
from tests.users import factories
from tests.users.signed_in import admin_headers, headers_of
from tests.utils.app import api_client
from tests.utils.rebuilding import Gate, GatedProjection, RedisGate, deletes, dump, fresh_db, rebuild_stopping

pytestmark = pytest.mark.slow

READ_MODEL = ["usuarios:*", "proj:usuarios:*", "proj:usuarios-historial:*"]
CACHE = ("usuarios:clave:",)  # the data-key cache: no read model, no generation


def gated_read_models(usuario_id: str, gate: Gate) -> list:
    """The users read models, the history stopping at `usuario_id`'s first purchase."""

    def first_purchase(event) -> bool:
        return event.type == RESERVA_CONFIRMADA and event.data.get("usuario_id") == usuario_id

    return [(USUARIOS, UsuariosProjection()), (RESERVAS, GatedProjection(HistorialProjection(), first_purchase, gate))]


async def snapshot(client, usuario_id: str, boss: dict[str, str]) -> tuple:
    """What the admin (who may read every user) reads of one user."""
    user = await client.get(f"/api/usuarios/{usuario_id}", headers=boss)
    history = await client.get(f"/api/usuarios/{usuario_id}/historial?tamano=100", headers=boss)
    assert user.status_code == history.status_code == 200, (user.status_code, history.status_code)
    return user.json(), user.headers["etag"], history.json(), history.headers["etag"]


async def whole_history(client, usuario_id: str, boss: dict[str, str]) -> list[str]:
    reservas: list[str] = []
    for pagina in range(1, 1000):
        path = f"/api/usuarios/{usuario_id}/historial?tamano=100&pagina={pagina}"
        page = (await client.get(path, headers=boss)).json()
        reservas += [compra["reserva_id"] for compra in page["compras"]]
        if len(reservas) >= page["total"]:
            return reservas
    raise AssertionError("history never ends")


async def read_model(settings) -> tuple[dict, set]:
    client = aioredis.Redis.from_url(settings.redis_url, decode_responses=True)
    try:
        return await dump(client, READ_MODEL, skip=CACHE)
    finally:
        await client.aclose()


async def test_a_rebuild_under_live_purchases_keeps_users_readable_and_equals_a_cold_rebuild(servers):
    settings = await fresh_db(servers, 13)
    nc = await connect(settings.nats_url, "users-rebuild-test")
    store = EventStore(nc.jetstream(), RESERVAS)
    bought: Counter[str] = Counter()  # purchases this test made per user: each must be in the history once
    app = create_app(settings)
    try:
        async with api_client(app) as client:
            registered = [await client.post("/api/usuarios", json=factories.usuario()) for _ in range(4)]
            ids = [response.json()["id"] for response in registered]
            boss = await admin_headers(client)
            runner = app.state.runners["usuarios-historial"]

            async def buy(usuario_id: str) -> tuple[factories.ReservaConfirmadaData, int]:
                bought[usuario_id] += 1
                compra = factories.confirmada(usuario_id, bought[usuario_id])
                seq = await store.append(compra["reserva_id"], [NewEvent(RESERVA_CONFIRMADA, compra)], None)
                return compra, seq

            for i, usuario_id in enumerate(ids):
                for _ in range(2 + i):
                    compra, seq = await buy(usuario_id)
            seq = await store.append(
                compra["reserva_id"], [NewEvent(RESERVA_CANCELADA, factories.cancelada(compra))], None
            )
            assert await runner.wait_for(seq, 10)
            quiet = ids[3]  # no live traffic for this one: it must read the same all along
            before = await snapshot(client, quiet, boss)
            assert before[2]["total"] == 5 and before[0]["historial_compras"][0]["estado"] == "cancelada"

            async def readable() -> None:
                assert await snapshot(client, quiet, boss) == before
                for usuario_id in ids[:3]:
                    await snapshot(client, usuario_id, boss)

            stop = asyncio.Event()

            async def buyers() -> None:
                while not stop.is_set():
                    compra, _ = await buy(random.choice(ids[:3]))
                    if random.random() < 0.3:
                        await store.append(
                            compra["reserva_id"], [NewEvent(RESERVA_CANCELADA, factories.cancelada(compra))], None
                        )
                    await asyncio.sleep(0.05)  # paced: no rebuild catches up with unbounded traffic

            async def newcomers() -> None:
                while not stop.is_set():
                    body = factories.usuario()
                    response = await client.post("/api/usuarios", json=body)
                    assert response.status_code == 201
                    mine = await headers_of(client, body)
                    read = await client.get(response.headers["location"], headers=mine)
                    assert read.status_code == 200  # read-your-writes
                    await asyncio.sleep(0.02)

            async def a_purchase_projected_now_and_everyone_readable(usuario_id: str) -> None:
                _, seq = await buy(usuario_id)
                assert await runner.wait_for(seq, 10)
                await readable()

            async def at_gate() -> None:
                await a_purchase_projected_now_and_everyone_readable(ids[1])

            async def at_relay() -> None:
                await a_purchase_projected_now_and_everyone_readable(ids[2])

            traffic = [asyncio.create_task(buyers()), asyncio.create_task(newcomers())]
            gate = Gate()
            try:
                async with RedisGate(servers.redis.port, deletes("usuarios:recientes:")) as relay:
                    via_relay = servers.settings(redis_url=relay.url(13))
                    pairs = gated_read_models(ids[0], gate)
                    _, reached = await rebuild_stopping(via_relay, pairs, gate, relay, at_gate, at_relay)
            finally:
                stop.set()
                await asyncio.gather(*traffic)
            for projection_runner, stream in zip(app.state.runners.values(), (USUARIOS, RESERVAS), strict=True):
                head = (await nc.jetstream().stream_info(stream.name)).state.last_seq
                assert await projection_runner.wait_for(head, 30)
            await readable()
            for usuario_id in ids:
                reservas = await whole_history(client, usuario_id, boss)
                assert len(reservas) == len(set(reservas)) == bought[usuario_id], "a purchase lost, or twice"
            live, generations = await read_model(settings)
        assert reached == {"midway", "deleting"}
        assert generations == {"1"}, "one generation left: the old one is gone"

        cold_settings = await fresh_db(servers, 14)  # the reference: a rebuild with nothing running
        await rebuild(cold_settings, read_models())
        cold, _ = await read_model(cold_settings)
        assert live.keys() == cold.keys()
        assert live == cold
    finally:
        await nc.drain()
