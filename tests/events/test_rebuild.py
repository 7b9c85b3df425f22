"""Redis is only a read model: drop it, replay the log, and every document and listing comes back identical."""

from __future__ import annotations

from eventflow.jetstream import EVENTOS, RESERVAS
from eventflow.projections import ProjectionRunner
from services.events.bootstrap import create_app, read_models
from services.events.projections import CatalogProjection, DashboardProjection, OrganizerProjection, SalesProjection
from tests.events.helpers import cancel_sale, confirm_sale, evento_body, iso_in, unique
from tests.utils.app import api_client


def test_read_models_are_the_catalog_the_sales_the_organizers_and_the_dashboard():
    pairs = read_models()
    assert [(stream, type(projection)) for stream, projection in pairs] == [
        (EVENTOS, CatalogProjection),
        (RESERVAS, SalesProjection),
        (EVENTOS, OrganizerProjection),
        (RESERVAS, DashboardProjection),
    ]
    assert len({projection.name for _, projection in pairs}) == 4


async def snapshot(client, ids: list[str], queries: list[dict]) -> tuple[list, list]:
    docs = []
    for evento_id in ids:
        response = await client.get(f"/api/eventos/{evento_id}")
        assert response.status_code == 200, response.text
        docs.append((response.json(), response.headers["etag"]))
    pages = []
    for params in queries:
        response = await client.get("/api/eventos", params=params)
        pages.append((response.json(), response.headers["etag"]))
    return docs, pages


async def test_drop_and_rebuild_gives_identical_documents_and_listings(settings, js, redis, organizer):
    categoria, tag = unique("cat"), unique("zq")
    seated = {"aforo_total": None, "secciones": [{"nombre": "A", "asientos": 4}, {"nombre": "B", "asientos": 2}]}
    bodies = [
        evento_body(nombre=f"Ópera {tag}", categoria=categoria, fecha=iso_in(9)),
        evento_body(nombre=f"Rock {tag}", categoria=categoria, fecha=iso_in(3, tz="+02:00"), **seated),
        evento_body(nombre=f"Jazz {tag}", categoria="jazz", fecha=iso_in(5), precio=0),
    ]
    queries: list[dict] = [
        {"categoria": categoria},
        {"q": tag},
        {"q": f"opera {tag}"},
        {"q": tag, "limit": 1, "offset": 1},
    ]
    app = create_app(settings)
    async with api_client(app) as client:
        client.headers.update(organizer.headers)
        ids = [(await client.post("/api/eventos", json=body)).json()["id"] for body in bodies]
        await confirm_sale(js, ids[0], 5)
        seat_sale, _ = await confirm_sale(js, ids[1], 3, ["A-1", "A-2", "B-1"])
        await confirm_sale(js, ids[1], 1, ["B-2"])
        seq = await cancel_sale(js, ids[1], seat_sale, 3, ["A-1", "A-2", "B-1"])
        assert await app.state.runners[1].wait_for(seq, 10)
        before = await snapshot(client, ids, queries)
    assert before[0][1][0]["entradas_disponibles"] == 5 and before[1][1][0]["total"] == 3

    runners = [ProjectionRunner(js, redis, stream, projection) for stream, projection in read_models()]
    for runner in runners:
        assert await runner.reset() > 0
    assert await redis.exists(f"events:doc:{ids[0]}", f"events:sales:{ids[1]}", "events:idx:date") == 0
    for runner in runners:
        await runner.catch_up(timeout=60)

    async with api_client(create_app(settings)) as client:
        after = await snapshot(client, ids, queries)
    assert after == before
