"""Read models of the events service, each applied in stream order by a ProjectionRunner.

The catalog (stream EVENTOS) and the sales (stream RESERVAS) write disjoint keys, so a sale projected
before its event document (the two runners race) is simply waiting there when the document arrives.
Each instance writes one generation's keys (`at(n)` for another one; see eventflow.generations).
"""

from __future__ import annotations

from collections import Counter
from typing import Any

import orjson
from redis.asyncio import Redis
from redis.asyncio.client import Pipeline

from eventflow.contracts import EVENTO_CREADO, RESERVA_CANCELADA, RESERVA_CONFIRMADA
from eventflow.eventstore import StoredEvent
from services.events import keys
from services.events.documents import date_score, documento
from services.events.text import prefixes

CANCELLED = "x"  # tombstone in events:orders: a replayed confirmation of a cancelled order stays cancelled


class CatalogProjection:
    """EVENTOS -> the event document and the listing indexes (by date, by category, by name prefix)."""

    name: str = "events"
    family: str = keys.FAMILY

    def __init__(self, generation: int = 0) -> None:
        self.generation = generation
        self.keys = keys.at(generation)
        self.key_patterns = self.keys.catalog_patterns

    def at(self, generation: int) -> CatalogProjection:
        return CatalogProjection(generation)

    async def apply(self, event: StoredEvent, redis: Redis, tx: Pipeline) -> None:
        if event.type != EVENTO_CREADO:
            return
        doc = documento(event.aggregate_id, event.data)  # type: ignore[arg-type]
        score = date_score(doc["fecha"])
        member = {event.aggregate_id: score}
        tx.set(self.keys.doc(event.aggregate_id), orjson.dumps(doc))
        tx.zadd(self.keys.by_date, member)
        tx.zadd(self.keys.by_category(doc["categoria"]), member)
        for prefix in sorted(prefixes(doc["nombre"])):
            tx.zadd(self.keys.by_prefix(prefix), member)


class SalesProjection:
    """RESERVAS -> sold counters per event and section, and the sold seats.

    Each reservation is counted once: its confirmation is remembered per event, and a cancellation gives
    back exactly what that confirmation took (and only once), whatever duplicates the log may hold.
    """

    name: str = "events-sales"
    family: str = keys.FAMILY

    def __init__(self, generation: int = 0) -> None:
        self.generation = generation
        self.keys = keys.at(generation)
        self.key_patterns = self.keys.sales_patterns

    def at(self, generation: int) -> SalesProjection:
        return SalesProjection(generation)

    async def apply(self, event: StoredEvent, redis: Redis, tx: Pipeline) -> None:
        if event.type not in (RESERVA_CONFIRMADA, RESERVA_CANCELADA):
            return
        # A payload that breaks the contract raises here; the runner parks it (eventflow.projections).
        evento_id, reserva_id = str(event.data["evento_id"]), str(event.data["reserva_id"])
        taken = {"cantidad": int(event.data["cantidad"]), "asientos": [str(a) for a in event.data["asientos"]]}
        orders = self.keys.orders(evento_id)
        previous = await redis.hget(orders, reserva_id)
        if event.type == RESERVA_CONFIRMADA and previous is None:
            tx.hset(orders, reserva_id, orjson.dumps(taken))
            _count(tx, self.keys, evento_id, taken, +1)
        elif event.type == RESERVA_CANCELADA and previous not in (None, CANCELLED):
            tx.hset(orders, reserva_id, CANCELLED)
            _count(tx, self.keys, evento_id, orjson.loads(previous), -1)


def _count(tx: Pipeline, keyset: keys.Keys, evento_id: str, taken: dict[str, Any], sign: int) -> None:
    tx.hincrby(keyset.sales(evento_id), keys.TOTAL_FIELD, sign * taken["cantidad"])
    seats: list[str] = taken["asientos"]
    for section, n in Counter(seat.rsplit("-", 1)[0] for seat in seats).items():
        tx.hincrby(keyset.sales(evento_id), keys.SECTION_FIELD + section, sign * n)
    if seats:
        (tx.sadd if sign > 0 else tx.srem)(keyset.seats(evento_id), *seats)
