"""Plain helpers for the events tests: request bodies, unique names, reservation events on the real log."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta
from typing import Any

from nats.js import JetStreamContext

from eventflow.contracts import (
    RESERVA_CANCELADA,
    RESERVA_CONFIRMADA,
    ReservaCanceladaData,
    ReservaConfirmadaData,
)
from eventflow.eventstore import EventStore, NewEvent
from eventflow.jetstream import RESERVAS


def unique(prefix: str = "t") -> str:
    """A word nobody else's test uses: tests share one Redis and one log per session."""
    return f"{prefix}{uuid.uuid4().hex[:10]}"


def iso_in(days: float = 30, tz: str = "-03:00") -> str:
    """An instant `days` from now, written with the offset `tz` (what a client in that zone sends)."""
    zone = datetime.fromisoformat(f"2000-01-01T00:00:00{tz}").tzinfo
    return (datetime.now(UTC) + timedelta(days=days)).astimezone(zone).replace(microsecond=0).isoformat()


# One date for the whole run: two bodies built a second apart must still be the same request
# (a retry with the same Idempotency-Key), or the idempotency tests fail on a clock tick.
FECHA_POR_DEFECTO = iso_in(30)


def evento_body(**overrides: Any) -> dict[str, Any]:
    body: dict[str, Any] = {
        "nombre": "Concierto de prueba",
        "descripcion": "Una noche de música",
        "fecha": FECHA_POR_DEFECTO,
        "lugar": "Teatro Solís",
        "aforo_total": 100,
        "precio": 25.5,
        "categoria": "Música",
    }
    body.update(overrides)
    return body


async def confirm_sale(
    js: JetStreamContext,
    evento_id: str,
    cantidad: int,
    asientos: list[str] | None = None,
    reserva_id: str | None = None,
) -> tuple[str, int]:
    """Append a ReservaConfirmada as the reservations service would; returns (reserva_id, stream seq)."""
    reserva_id = reserva_id or str(uuid.uuid4())
    data = ReservaConfirmadaData(
        reserva_id=reserva_id,
        usuario_id=str(uuid.uuid4()),
        evento_id=evento_id,
        cantidad=cantidad,
        asientos=asientos or [],
        importe_centimos=1000 * cantidad,
        confirmada_en=datetime.now(UTC).isoformat(),
    )
    seq = await EventStore(js, RESERVAS).append(reserva_id, [NewEvent(RESERVA_CONFIRMADA, data)], None)
    return reserva_id, seq


async def cancel_sale(
    js: JetStreamContext, evento_id: str, reserva_id: str, cantidad: int, asientos: list[str] | None = None
) -> int:
    data = ReservaCanceladaData(
        reserva_id=reserva_id,
        usuario_id=str(uuid.uuid4()),
        evento_id=evento_id,
        cantidad=cantidad,
        asientos=asientos or [],
        importe_reembolsado_centimos=1000 * cantidad,
        cancelada_en=datetime.now(UTC).isoformat(),
    )
    return await EventStore(js, RESERVAS).append(reserva_id, [NewEvent(RESERVA_CANCELADA, data)], None)
