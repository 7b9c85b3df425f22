"""Read models of the events service, each applied in stream order by a ProjectionRunner.

The catalog (stream EVENTOS) and the sales (stream RESERVAS) write disjoint keys, so a sale projected
before its event document (the two runners race) is simply waiting there when the document arrives.
Each instance writes one generation's keys (`at(n)` for another one; see eventflow.generations).
"""

from __future__ import annotations

from collections import Counter
from datetime import datetime
from typing import Any

import orjson
from redis.asyncio import Redis
from redis.asyncio.client import Pipeline

from eventflow.contracts import EVENTO_CREADO, RESERVA_CANCELADA, RESERVA_CONFIRMADA
from eventflow.eventstore import StoredEvent
from services.events import keys
from services.events.documents import date_score, documento_creado
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
        doc = documento_creado(event)
        if doc is None:
            return
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


class OrganizerProjection:
    """EVENTOS -> each organizer's events by date (`GET /api/eventos?organizador_id=`). A read model of its own,
    so a deployment that had events before it existed fills it by replaying the log, with no rebuild."""

    name: str = "events-organizers"
    family: str = keys.FAMILY

    def __init__(self, generation: int = 0) -> None:
        self.generation = generation
        self.keys = keys.at(generation)
        self.key_patterns = self.keys.organizer_patterns

    def at(self, generation: int) -> OrganizerProjection:
        return OrganizerProjection(generation)

    async def apply(self, event: StoredEvent, redis: Redis, tx: Pipeline) -> None:
        organizador = event.data.get("organizador_id") if event.type == EVENTO_CREADO else None
        if organizador:
            tx.zadd(self.keys.by_organizer(str(organizador)), {event.aggregate_id: date_score(event.data["fecha"])})


def hora(instante: str) -> int:
    """The start of the UTC hour an instant falls in, as epoch seconds (the dashboard's buckets)."""
    return int(datetime.fromisoformat(instante).timestamp()) // 3600 * 3600


class DashboardProjection:
    """RESERVAS -> an organizer's sales dashboard per event: tickets sold, revenue, cancellations and refunds,
    in total and per hour. Each reservation counts once (remembered per event, as the sales projection does);
    a cancellation takes back, in the hour it happened, exactly what its confirmation counted."""

    name: str = "events-dashboard"
    family: str = keys.FAMILY

    def __init__(self, generation: int = 0) -> None:
        self.generation = generation
        self.keys = keys.at(generation)
        self.key_patterns = self.keys.dashboard_patterns

    def at(self, generation: int) -> DashboardProjection:
        return DashboardProjection(generation)

    async def apply(self, event: StoredEvent, redis: Redis, tx: Pipeline) -> None:
        if event.type not in (RESERVA_CONFIRMADA, RESERVA_CANCELADA):
            return
        data = event.data
        evento_id, reserva_id = str(data["evento_id"]), str(data["reserva_id"])
        orders, totals, series = (
            self.keys.dashboard_orders(evento_id),
            self.keys.dashboard(evento_id),
            self.keys.dashboard_series(evento_id),
        )
        previous = await redis.hget(orders, reserva_id)
        if event.type == RESERVA_CONFIRMADA and previous is None:
            counted = {"n": int(data["cantidad"]), "i": int(data.get("importe_centimos", 0))}
            tx.hset(orders, reserva_id, orjson.dumps(counted))
            h = hora(str(data.get("confirmada_en") or event.occurred_at))
            tx.hincrby(totals, "vendidas", counted["n"])
            tx.hincrby(totals, "ingresos_centimos", counted["i"])
            tx.hincrby(totals, "reservas", 1)
            tx.hincrby(series, f"v:{h}", counted["n"])
            tx.hincrby(series, f"i:{h}", counted["i"])
        elif event.type == RESERVA_CANCELADA and previous not in (None, CANCELLED):
            counted = orjson.loads(previous)
            refunded = int(data.get("importe_reembolsado_centimos", 0))
            tx.hset(orders, reserva_id, CANCELLED)
            h = hora(str(data.get("cancelada_en") or event.occurred_at))
            tx.hincrby(totals, "vendidas", -counted["n"])
            tx.hincrby(totals, "canceladas", counted["n"])
            tx.hincrby(totals, "reembolsado_centimos", refunded)
            tx.hincrby(series, f"c:{h}", counted["n"])
            tx.hincrby(series, f"r:{h}", refunded)
