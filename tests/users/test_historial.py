"""The purchase history, projected from RESERVAS events appended straight to the log (as the reservations
service will): embedded as the last 20 in the user, paged in full at /historial."""

from __future__ import annotations

import asyncio
import uuid
from datetime import UTC, datetime

import pytest

from eventflow.contracts import RESERVA_CANCELADA, RESERVA_CONFIRMADA, RESERVA_RECHAZADA
from eventflow.eventstore import EventStore, NewEvent
from eventflow.jetstream import RESERVAS, USUARIOS
from services.users.bootstrap import create_app
from services.users.projections import RECIENTES_MAX
from tests.users import factories
from tests.users.signed_in import headers_of, registered
from tests.utils.app import api_client

pytestmark = pytest.mark.asyncio(loop_scope="module")


def confirmada(usuario_id: str, n: int) -> tuple[str, dict]:
    reserva_id = str(uuid.uuid4())
    return reserva_id, {
        "reserva_id": reserva_id,
        "usuario_id": usuario_id,
        "evento_id": f"evento-{n}",
        "cantidad": 2,
        "asientos": [f"A-{n}", f"A-{n + 1}"],
        "importe_centimos": 1999 * (n + 1),
        "confirmada_en": datetime.now(UTC).isoformat(),
    }


async def append(js, app, reserva_id: str, type_: str, data: dict) -> int:
    seq = await EventStore(js, RESERVAS).append(reserva_id, [NewEvent(type_, data)], None)
    assert await app.state.runners["usuarios-historial"].wait_for(seq, 10)
    return seq


async def test_a_confirmed_reservation_appears_in_the_user_and_the_history(app, client, js):
    user, mine = await registered(client)
    reserva_id, data = confirmada(user["id"], 0)
    await append(js, app, reserva_id, RESERVA_CONFIRMADA, data)
    expected = {
        "reserva_id": reserva_id,
        "evento_id": "evento-0",
        "cantidad": 2,
        "asientos": ["A-0", "A-1"],
        "importe": 19.99,
        "fecha": data["confirmada_en"],
        "estado": "confirmada",
    }
    assert (await client.get(f"/api/usuarios/{user['id']}", headers=mine)).json()["historial_compras"] == [expected]
    history = (await client.get(user["historial_url"], headers=mine)).json()
    assert history["total"] == 1
    assert history["compras"] == [expected]


async def test_the_embedded_list_is_bounded_and_the_history_pages_the_rest(app, client, js):
    user, mine = await registered(client)
    ids = []
    for n in range(RECIENTES_MAX + 5):
        reserva_id, data = confirmada(user["id"], n)
        await append(js, app, reserva_id, RESERVA_CONFIRMADA, data)
        ids.append(reserva_id)
    newest_first = ids[::-1]
    embedded = (await client.get(f"/api/usuarios/{user['id']}", headers=mine)).json()["historial_compras"]
    assert [c["reserva_id"] for c in embedded] == newest_first[:RECIENTES_MAX]
    page1 = (await client.get(f"{user['historial_url']}?tamano=10", headers=mine)).json()
    page3 = (await client.get(f"{user['historial_url']}?tamano=10&pagina=3", headers=mine)).json()
    beyond = (await client.get(f"{user['historial_url']}?tamano=10&pagina=4", headers=mine)).json()
    assert page1["total"] == page3["total"] == RECIENTES_MAX + 5
    assert [c["reserva_id"] for c in page1["compras"]] == newest_first[:10]
    assert [c["reserva_id"] for c in page3["compras"]] == newest_first[20:]
    assert beyond["compras"] == []


async def test_a_cancellation_marks_the_purchase_everywhere_and_keeps_it(app, client, js):
    user, mine = await registered(client)
    reserva_id, data = confirmada(user["id"], 1)
    await append(js, app, reserva_id, RESERVA_CONFIRMADA, data)
    before = await client.get(f"/api/usuarios/{user['id']}", headers=mine)
    cancel = {
        "reserva_id": reserva_id,
        "usuario_id": user["id"],
        "evento_id": data["evento_id"],
        "cantidad": 2,
        "asientos": data["asientos"],
        "importe_reembolsado_centimos": data["importe_centimos"],
        "cancelada_en": datetime.now(UTC).isoformat(),
    }
    await append(js, app, reserva_id, RESERVA_CANCELADA, cancel)
    after = await client.get(f"/api/usuarios/{user['id']}", headers={**mine, "If-None-Match": before.headers["etag"]})
    assert after.status_code == 200  # the document changed, so the old ETag no longer matches
    (entry,) = after.json()["historial_compras"]
    assert entry["estado"] == "cancelada"
    assert entry["cancelada_en"] == cancel["cancelada_en"]
    assert entry["importe_reembolsado"] == 39.98
    assert (await client.get(user["historial_url"], headers=mine)).json()["compras"] == [entry]


async def test_rejections_and_cancellations_of_unknown_purchases_change_nothing(app, client, js):
    user, mine = await registered(client)
    rejected = {
        "reserva_id": str(uuid.uuid4()),
        "usuario_id": user["id"],
        "evento_id": "evento-x",
        "cantidad": 1,
        "motivo": "agotado",
        "rechazada_en": datetime.now(UTC).isoformat(),
    }
    await append(js, app, rejected["reserva_id"], RESERVA_RECHAZADA, rejected)
    stray = {**rejected, "asientos": [], "importe_reembolsado_centimos": 0, "cancelada_en": rejected["rechazada_en"]}
    await append(js, app, rejected["reserva_id"], RESERVA_CANCELADA, stray)
    assert (await client.get(f"/api/usuarios/{user['id']}", headers=mine)).json()["historial_compras"] == []
    assert (await client.get(user["historial_url"], headers=mine)).json()["total"] == 0


async def test_a_new_users_first_read_of_their_profile_waits_for_a_lagging_projection(servers, app):
    """The sign-up answers after its read-your-writes bound with the projection held back (as under load: Locust
    saw GET /me 404 right after a sign-up); the profile read then waits for the projection instead of a 404."""
    other_replica = app.state.runners["usuarios"]
    app = create_app(servers.settings(read_your_writes_timeout=0.2))
    async with api_client(app) as client:
        runner = app.state.runners["usuarios"]
        await runner.stop()
        await other_replica.stop()
        try:
            body = factories.usuario()
            assert (await client.post("/api/usuarios", json=body)).status_code == 201
            mine = await headers_of(client, body)
            app.state.deps.read_your_writes_timeout = 30.0  # the read's bound: the restart lands well inside it
            read = asyncio.ensure_future(client.get("/api/usuarios/me", headers=mine))
            while not runner._someone_waits() and not read.done():  # noqa: ASYNC110 (waits, or answered at once)
                await asyncio.sleep(0.01)
        finally:
            other_replica.start()
            runner.start()
        resp = await read
        assert resp.status_code == 200, resp.text
        assert resp.json()["email"] == body["email"]


async def test_a_purchase_projected_before_its_buyer_is_joined_when_the_buyer_arrives(servers, js, app):
    """The two projections are independent: stream order between USUARIOS and RESERVAS does not matter.
    Also shows read-your-writes is bounded: with its projection stopped, a POST answers after the bound."""
    other_replica = app.state.runners["usuarios"]
    app = create_app(servers.settings(read_your_writes_timeout=0.2))
    async with api_client(app) as client:
        runner = app.state.runners["usuarios"]
        await runner.stop()  # hold the user projection back, in every replica
        await other_replica.stop()
        try:
            body = factories.usuario()
            user = (await client.post("/api/usuarios", json=body)).json()
            mine = await headers_of(client, body)  # signing in needs the log, not the read model
            reserva_id, data = confirmada(user["id"], 7)
            await append(js, app, reserva_id, RESERVA_CONFIRMADA, data)
            assert (await client.get(f"/api/usuarios/{user['id']}", headers=mine)).status_code == 404
        finally:
            other_replica.start()
            runner.start()
        assert await runner.wait_for(await EventStore(js, USUARIOS).last_sequence(), 10)
        resp = await client.get(f"/api/usuarios/{user['id']}", headers=mine)
        assert [c["reserva_id"] for c in resp.json()["historial_compras"]] == [reserva_id]
