""" "My tickets": which reservations a buyer has, as a read model of RESERVAS (Redis, eventual).

Only the list of ids is eventual; each listed reservation is then read on the CP side (the saga or its last
outcome event), so its state and tickets are always current (a cancelled one shows as cancelled at once).
Only confirmed reservations are listed (a rejected one has no tickets); a later cancellation keeps its place.

Keys (family `reservas`, generation n under `reservas:g<n>:`): `reservas:mias:<usuario_id>`, a sorted set of
reserva_id scored by the confirmation's sequence in RESERVAS (newest last), written once per reservation.
"""

from __future__ import annotations

import asyncio
from typing import Any

from redis.asyncio import Redis
from redis.asyncio.client import Pipeline

from eventflow.contracts import RESERVA_CONFIRMADA
from eventflow.eventstore import StoredEvent
from eventflow.generations import Generation, keyspace
from services.reservations import handlers
from services.reservations.domain import ReservaNoEncontrada, Saga

FAMILY = "reservas"
MAX_PAGINA = 50


def mias_key(usuario_id: str, generation: int = 0) -> str:
    return f"{keyspace(FAMILY, generation)}:mias:{usuario_id}"


class MisReservasProjection:
    """RESERVAS -> each buyer's confirmed reservations, in confirmation order."""

    name: str = "reservas-mias"
    family: str = FAMILY

    def __init__(self, generation: int = 0) -> None:
        self.generation = generation
        self.key_patterns: tuple[str, ...] = (mias_key("*", generation),)

    def at(self, generation: int) -> MisReservasProjection:
        return MisReservasProjection(generation)

    async def apply(self, event: StoredEvent, redis: Redis, tx: Pipeline) -> None:
        if event.type != RESERVA_CONFIRMADA:
            return
        key = mias_key(str(event.data["usuario_id"]), self.generation)
        tx.zadd(key, {str(event.data["reserva_id"]): event.seq}, nx=True)  # a replayed duplicate keeps its place


async def pagina(
    redis: Redis, generation: Generation, usuario_id: str, limit: int, offset: int, deps: handlers.Deps
) -> tuple[list[Saga], int]:
    """One page of the buyer's reservations, newest first, each read as it stands now; and the total."""
    key = mias_key(usuario_id, generation.current)
    async with redis.pipeline(transaction=False) as pipe:
        pipe.zrevrange(key, offset, offset + limit - 1)
        pipe.zcard(key)
        ids, total = await pipe.execute()
    sagas = await asyncio.gather(*(_leer(reserva_id, deps) for reserva_id in ids))
    return [s for s in sagas if s is not None and s.usuario_id == usuario_id], int(total)


async def _leer(reserva_id: str, deps: handlers.Deps) -> Saga | None:
    try:
        return await handlers.consultar(reserva_id, deps)
    except ReservaNoEncontrada:
        return None


def pagina_out(items: list[dict[str, Any]], total: int, limit: int, offset: int) -> dict[str, Any]:
    end = offset + limit
    next_offset = end if end < total else None
    return {"items": items, "total": total, "limit": limit, "offset": offset, "next_offset": next_offset}
