"""entradas_disponibles follows the reservation events (stream RESERVAS) through the sales projection."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime
from decimal import Decimal

from eventflow.contracts import EVENTO_CREADO, RESERVA_CONFIRMADA, RESERVA_RECHAZADA
from eventflow.eventstore import EventStore, NewEvent
from eventflow.jetstream import EVENTOS, RESERVAS
from services.events.domain import CrearEvento
from services.events.handlers import evento_creado
from services.events.rules import nuevo_evento
from tests.events.helpers import cancel_sale, confirm_sale, evento_body, unique


async def projected(app, seq: int) -> None:
    _catalog, sales, *_ = app.state.runners
    assert await sales.wait_for(seq, 10)


async def available(client, evento_id: str) -> dict:
    response = await client.get(f"/api/eventos/{evento_id}")
    assert response.status_code == 200, response.text
    return response.json()


async def test_sales_and_cancellations_move_availability_once_each(app, client, js):
    evento_id = (await client.post("/api/eventos", json=evento_body(aforo_total=10))).json()["id"]
    first, _ = await confirm_sale(js, evento_id, 3)
    _, seq = await confirm_sale(js, evento_id, 2)
    await projected(app, seq)
    assert (await available(client, evento_id))["entradas_disponibles"] == 5

    await confirm_sale(js, evento_id, 3, reserva_id=first)  # a duplicate confirmation: counted once
    rejected = {"reserva_id": "r", "usuario_id": "u", "evento_id": evento_id, "cantidad": 4, "motivo": "x"}
    await EventStore(js, RESERVAS).append("r", [NewEvent(RESERVA_RECHAZADA, {**rejected, "rechazada_en": "t"})], None)
    await cancel_sale(js, evento_id, str(uuid.uuid4()), 4)  # never confirmed: gives nothing back
    seq = await cancel_sale(js, evento_id, first, 3)
    await projected(app, seq)
    assert (await available(client, evento_id))["entradas_disponibles"] == 8

    seq = await cancel_sale(js, evento_id, first, 3)  # cancelled twice: given back once
    _, seq = await confirm_sale(js, evento_id, 3, reserva_id=first)  # replay after cancel stays cancelled
    await projected(app, seq)
    doc = await available(client, evento_id)
    assert (doc["aforo_total"], doc["entradas_disponibles"]) == (10, 8)


async def test_seated_events_count_per_section_and_remember_sold_seats(app, client, js, redis):
    secciones = [{"nombre": "Platea", "asientos": 3}, {"nombre": "VIP", "asientos": 2}]
    body = evento_body(aforo_total=None, secciones=secciones, categoria=unique("cat"))
    evento_id = (await client.post("/api/eventos", json=body)).json()["id"]
    await confirm_sale(js, evento_id, 2, ["Platea-1", "Platea-3"])
    vip, seq = await confirm_sale(js, evento_id, 2, ["VIP-1", "VIP-2"])
    await projected(app, seq)
    doc = await available(client, evento_id)
    assert doc["entradas_disponibles"] == 1
    assert doc["secciones"] == [
        {"nombre": "Platea", "asientos": 3, "disponibles": 1},
        {"nombre": "VIP", "asientos": 2, "disponibles": 0},
    ]
    assert await redis.smembers(f"events:seats:{evento_id}") == {"Platea-1", "Platea-3", "VIP-1", "VIP-2"}

    seq = await cancel_sale(js, evento_id, vip, 2, ["VIP-1", "VIP-2"])
    await projected(app, seq)
    doc = await available(client, evento_id)
    assert doc["entradas_disponibles"] == 3 and doc["secciones"][1]["disponibles"] == 2
    assert await redis.smembers(f"events:seats:{evento_id}") == {"Platea-1", "Platea-3"}
    listed = (await client.get("/api/eventos", params={"categoria": body["categoria"]})).json()
    assert listed["items"] == [doc]


async def test_a_sale_projected_before_its_event_is_not_lost(app, client, js):
    """The two projections race: a sale may reach Redis before the EventoCreado it belongs to."""
    evento_id = str(uuid.uuid4())
    _, seq = await confirm_sale(js, evento_id, 4)
    await projected(app, seq)
    assert (await client.get(f"/api/eventos/{evento_id}")).status_code == 404

    body = evento_body(aforo_total=10)
    command = CrearEvento(**{**body, "precio": Decimal(str(body["precio"]))})
    evento = nuevo_evento(command, evento_id, datetime.now(UTC))
    seq = await EventStore(js, EVENTOS).append(evento_id, [NewEvent(EVENTO_CREADO, evento_creado(evento))], 0)
    assert await app.state.runners[0].wait_for(seq, 10)
    assert (await available(client, evento_id))["entradas_disponibles"] == 6


async def test_a_malformed_reservation_event_is_parked_without_stalling(app, client, js):
    evento_id = (await client.post("/api/eventos", json=evento_body(aforo_total=10))).json()["id"]
    await EventStore(js, RESERVAS).append("bad", [NewEvent(RESERVA_CONFIRMADA, {"evento_id": evento_id})], None)
    _, seq = await confirm_sale(js, evento_id, 1)
    await projected(app, seq)
    assert (await available(client, evento_id))["entradas_disponibles"] == 9
    assert app.state.runners[1].stalled is None
    assert app.state.runners[1].parked == 1
