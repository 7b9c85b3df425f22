"""The event document folded from the log (stream EVENTOS), for when the read model cannot answer (Redis down or hung).

A reservation is the CP side and must not wait on Redis (issue 11): its chain reads the event's price, date, sale
window and limits through `GET /api/eventos/{id}`. All of that is in the event's EventoCreado, the only event its
subject ever holds (appended with expected version 0: the idempotency claim), so a fold is one read of the stream
leader, and its document is the catalog projection's own (documents.documento_creado).

What the log of the event does not hold is its sales (stream RESERVAS, one subject per reservation): the folded
document counts none, so its availability is the whole capacity. The inventory hold is the authority anyway.

Bounded: a folded document never changes, so it is kept (up to `max_cached`, least recently read out first), and
at most `max_in_flight` different events are read from the log at once (one read per event, however many ask):
an outage must not turn every public read into a read of the system of record. Past that, 503 like any read
that needs Redis.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import OrderedDict
from typing import Any

from eventflow.errors import Unavailable
from services.events.documents import documento_creado, with_availability
from services.events.domain import es_evento_id
from services.events.handlers import EventLog

log = logging.getLogger(__name__)

SOURCE_HEADER = "EventFlow-Source"  # "log" on an answer folded here: no sales counted, not to be cached
MAX_CACHED = 10_000
MAX_IN_FLIGHT = 32
WARN_EVERY_S = 10.0


class LogFallback:
    def __init__(self, events: EventLog, max_cached: int = MAX_CACHED, max_in_flight: int = MAX_IN_FLIGHT) -> None:
        self.events = events
        self.max_cached = max_cached
        self.max_in_flight = max_in_flight
        self._cache: OrderedDict[str, dict[str, Any]] = OrderedDict()
        self._in_flight: dict[str, asyncio.Future[dict[str, Any] | None]] = {}
        self._last_warning = 0.0

    async def evento(self, evento_id: str) -> dict[str, Any] | None:
        """The event's document with no sales counted, or None when the log has no such event."""
        if not es_evento_id(evento_id):  # never a subject wildcard (`>`, `*`) or token the log would misread
            return None
        doc = self._cache.get(evento_id)
        if doc is None:
            doc = await self._fold_once(evento_id)
        else:
            self._cache.move_to_end(evento_id)
        return None if doc is None else with_availability(doc, {})

    async def _fold_once(self, evento_id: str) -> dict[str, Any] | None:
        pending = self._in_flight.get(evento_id)
        if pending is not None:
            return await asyncio.shield(pending)
        if len(self._in_flight) >= self.max_in_flight:
            raise Unavailable("the event catalog is unavailable (its read model is down); try again shortly")
        future: asyncio.Future[dict[str, Any] | None] = asyncio.get_running_loop().create_future()
        self._in_flight[evento_id] = future
        try:
            stored, _ = await self.events.load(evento_id)  # the leader: a replica's "absent" would be a false 404
            doc = next((d for d in map(documento_creado, stored) if d is not None), None)
            if doc is not None:
                self._keep(evento_id, doc)
            future.set_result(doc)
            return doc
        except BaseException as err:
            future.set_exception(err)
            future.exception()  # retrieved: a waiter, if any, re-raises it
            raise
        finally:
            del self._in_flight[evento_id]

    def _keep(self, evento_id: str, doc: dict[str, Any]) -> None:
        self._cache[evento_id] = doc
        while len(self._cache) > self.max_cached:
            self._cache.popitem(last=False)

    def warn(self, why: Exception) -> None:
        """Logged at most every WARN_EVERY_S: during an outage every read would log it."""
        now = time.monotonic()
        if now - self._last_warning > WARN_EVERY_S:
            self._last_warning = now
            log.warning("event read model unreachable; folding events from the log", extra={"error": repr(why)})
