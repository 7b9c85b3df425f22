"""`make rebuild` while the events service runs and sells: reads stay up and complete, each sale counts once,
and the result is exactly what a cold rebuild gives.

The dangerous moments are forced, not hoped for: the rebuild's sales projection stops inside apply midway
(GatedProjection), and the rebuild's Redis connection is held at its first delete of sales keys (RedisGate);
at each, live traffic is projected and reads are sampled. Each test runs on its own Redis database.
"""

from __future__ import annotations

import asyncio
import random
from collections import Counter

import pytest
import redis.asyncio as aioredis

from eventflow.contracts import RESERVA_CONFIRMADA
from eventflow.jetstream import EVENTOS, RESERVAS
from eventflow.rebuild import rebuild
from services.events.bootstrap import create_app, read_models
from services.events.projections import CatalogProjection, DashboardProjection, OrganizerProjection, SalesProjection
from tests.events.helpers import cancel_sale, confirm_sale, evento_body, unique
from tests.utils.app import api_client
from tests.utils.rebuilding import Gate, GatedProjection, RedisGate, deletes, dump, fresh_db, rebuild_stopping

pytestmark = pytest.mark.slow

READ_MODEL = ["events:*", "proj:events:*", "proj:events-sales:*"]
SCRATCH = ("events:tmp:",)
AFORO = 100_000


def first_sale_of(evento_id: str):
    return lambda event: event.type == RESERVA_CONFIRMADA and event.data.get("evento_id") == evento_id


def gated_read_models(evento_id: str, gate: Gate) -> list:
    """The events read models, the sales one stopping at `evento_id`'s first sale."""
    return [
        (EVENTOS, CatalogProjection()),
        (RESERVAS, GatedProjection(SalesProjection(), first_sale_of(evento_id), gate)),
        (EVENTOS, OrganizerProjection()),
        (RESERVAS, DashboardProjection()),
    ]


async def create_events(client, n: int, **overrides) -> list[str]:
    ids = []
    for _ in range(n):
        response = await client.post("/api/eventos", json=evento_body(nombre=f"Gira {unique()}", **overrides))
        assert response.status_code == 201, response.text
        ids.append(response.json()["id"])
    return ids


async def caught_up(app, js) -> None:
    for runner, stream in zip(app.state.runners, (EVENTOS, RESERVAS, EVENTOS, RESERVAS), strict=True):
        head = (await js.stream_info(stream.name)).state.last_seq
        assert await runner.wait_for(head, 30), runner.checkpoint_key


async def read_model(settings) -> tuple[dict, set]:
    client = aioredis.Redis.from_url(settings.redis_url, decode_responses=True)
    try:
        return await dump(client, READ_MODEL, skip=SCRATCH)
    finally:
        await client.aclose()


async def test_reads_stay_available_and_complete_during_a_rebuild(servers, js, organizer):
    settings = await fresh_db(servers, 10)
    tag = unique("zr")
    app = create_app(settings)
    async with api_client(app) as client:
        client.headers.update(organizer.headers)
        seated = {"aforo_total": None, "secciones": [{"nombre": "A", "asientos": 4}, {"nombre": "B", "asientos": 2}]}
        ids = await create_events(client, 2, categoria=tag) + await create_events(client, 1, categoria=tag, **seated)
        await confirm_sale(js, ids[0], 2)
        await confirm_sale(js, ids[1], 1)
        taken, _ = await confirm_sale(js, ids[2], 2, ["A-1", "B-1"])
        await confirm_sale(js, ids[2], 1, ["A-2"])
        seq = await cancel_sale(js, ids[2], taken, 2, ["A-1", "B-1"])
        assert await app.state.runners[1].wait_for(seq, 10)
        before = {evento_id: (await client.get(f"/api/eventos/{evento_id}")).json() for evento_id in ids}
        listing = (await client.get("/api/eventos", params={"categoria": tag})).json()
        assert [before[i]["entradas_disponibles"] for i in ids] == [98, 99, 5] and listing["total"] == 3

        async def everything_there() -> None:
            for evento_id in ids:
                response = await client.get(f"/api/eventos/{evento_id}")
                assert response.status_code == 200 and response.json() == before[evento_id]
            assert (await client.get("/api/eventos", params={"categoria": tag})).json() == listing

        async def everything_there_and_read_your_writes() -> None:
            await everything_there()
            created = await client.post("/api/eventos", json=evento_body(nombre=f"Nuevo {unique()}"))
            assert created.status_code == 201
            assert (await client.get(created.headers["location"])).status_code == 200

        done = asyncio.Event()
        samples = 0

        async def sample_all_along() -> None:
            nonlocal samples
            while not done.is_set():
                await everything_there()
                samples += 1
                await asyncio.sleep(0.01)

        gate = Gate()
        sampler = asyncio.create_task(sample_all_along())
        try:
            async with RedisGate(servers.redis.port, deletes("events:orders:")) as relay:
                _, reached = await rebuild_stopping(
                    servers.settings(redis_url=relay.url(10)),
                    gated_read_models(ids[1], gate),
                    gate,
                    relay,
                    at_gate=everything_there_and_read_your_writes,
                    at_relay=everything_there_and_read_your_writes,
                )
        finally:
            done.set()
        await sampler
        assert samples > 0
        await everything_there()
        assert reached == {"midway", "deleting"}
        assert app.state.generation.current == 1


async def test_a_rebuild_under_live_sales_counts_each_sale_once_and_equals_a_cold_rebuild(servers, js, organizer):
    settings = await fresh_db(servers, 11)
    sold: Counter[str] = Counter()  # what this test sold and did not cancel: the truth to compare with
    app = create_app(settings)
    async with api_client(app) as client:
        client.headers.update(organizer.headers)
        ids = await create_events(client, 3, aforo_total=AFORO)

        async def sell(evento_id: str, n: int) -> tuple[str, int]:
            reserva_id, seq = await confirm_sale(js, evento_id, n)
            sold[evento_id] += n
            return reserva_id, seq

        for evento_id in ids:
            await sell(evento_id, 1)
        stop = asyncio.Event()

        async def buyers() -> None:
            sales: list[tuple[str, str, int]] = []
            while not stop.is_set():
                evento_id, n = random.choice(ids), random.randint(1, 3)
                sales.append((evento_id, (await sell(evento_id, n))[0], n))
                if len(sales) > 3:  # and some change their mind
                    evento_id, reserva_id, n = sales.pop(0)
                    await cancel_sale(js, evento_id, reserva_id, n)
                    sold[evento_id] -= n
                await asyncio.sleep(0.05)  # paced: no rebuild catches up with unbounded traffic

        async def organizers() -> None:
            while not stop.is_set():
                created = await client.post("/api/eventos", json=evento_body(nombre=f"Nuevo {unique()}"))
                assert created.status_code == 201
                assert (await client.get(created.headers["location"])).status_code == 200  # read-your-writes
                await asyncio.sleep(0.02)

        async def a_sale_projected_now(evento_id: str, n: int) -> None:
            _, seq = await sell(evento_id, n)
            assert await app.state.runners[1].wait_for(seq, 10)

        async def at_gate() -> None:
            await a_sale_projected_now(ids[1], 2)

        async def at_relay() -> None:
            await a_sale_projected_now(ids[2], 3)

        traffic = [asyncio.create_task(buyers()), asyncio.create_task(organizers())]
        gate = Gate()
        try:
            async with RedisGate(servers.redis.port, deletes("events:orders:")) as relay:
                via_relay = servers.settings(redis_url=relay.url(11))
                pairs = gated_read_models(ids[0], gate)
                rebuilt, reached = await rebuild_stopping(via_relay, pairs, gate, relay, at_gate, at_relay)
        finally:
            stop.set()
            await asyncio.gather(*traffic)
        await caught_up(app, js)
        for evento_id in ids:
            doc = (await client.get(f"/api/eventos/{evento_id}")).json()
            assert doc["entradas_disponibles"] == AFORO - sold[evento_id], "a sale counted twice, or lost"
        live, generations = await read_model(settings)
    assert reached == {"midway", "deleting"}
    assert {r.generation for r in rebuilt} == {1} and generations == {"1"}, "the old generation is gone"

    cold_settings = await fresh_db(servers, 12)  # the reference: a rebuild with nothing running
    await rebuild(cold_settings, read_models())
    cold, _ = await read_model(cold_settings)
    assert live.keys() == cold.keys()
    assert live == cold
