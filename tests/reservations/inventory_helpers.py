"""Shared by the inventory store tests: a settable clock, an EventoCreado on the real EVENTOS stream, holds."""

from __future__ import annotations

import uuid
from collections.abc import Sequence

from eventflow.contracts import EVENTO_CREADO
from eventflow.eventstore import EventStore, NewEvent
from eventflow.jetstream import EVENTOS
from services.reservations.inventory import HoldRequest


class Clock:
    def __init__(self) -> None:
        self.now = 1_000_000.0

    def __call__(self) -> float:
        return self.now


class AnyOf:
    """Equal to any value of `kind`: for outcomes whose id or time a test does not choose."""

    def __init__(self, kind: type) -> None:
        self.kind = kind

    def __eq__(self, other: object) -> bool:
        return isinstance(other, self.kind)


ANY_RID, ANY_TIME = AnyOf(str), AnyOf(float)


async def create_event(js, aforo: int, secciones: list[dict] | None = None) -> str:
    evento_id = str(uuid.uuid4())
    data = {
        "nombre": "Concierto",
        "descripcion": "",
        "fecha": "2030-01-01T20:00:00+00:00",
        "lugar": "Madrid",
        "aforo_total": aforo,
        "precio_centimos": 2500,
        "categoria": "musica",
        "secciones": secciones,
        "venta_desde": None,
    }
    await EventStore(js, EVENTOS).append(evento_id, [NewEvent(EVENTO_CREADO, data)], expected_version=0)
    return evento_id


def hold(
    evento_id: str,
    rid: str | None = None,
    user: str | None = None,
    n: int = 0,
    seats: Sequence[str] = (),
    ttl: float = 60.0,
    limit: int | None = None,
) -> HoldRequest:
    """A hold request; `n` defaults to one ticket per seat named, or 1."""
    rid = rid or str(uuid.uuid4())
    return HoldRequest(rid, evento_id, user or str(uuid.uuid4()), n or len(seats) or 1, tuple(seats), ttl, limit)
