"""Reads, straight from the Redis read model (the AP side): never a scan, never the event log.

The generation to read is the process's cached one (eventflow.generations.read_generation): no round trip.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import orjson
from redis.asyncio import Redis

from eventflow.generations import read_generation
from services.events import keys
from services.events.documents import with_availability
from services.events.domain import FiltroEventos
from services.events.text import query_words

# KEYS[1] scratch key, KEYS[2..] index sets to intersect; ARGV min, max, offset, limit.
# One atomic call: intersect the indexes (scores are dates, so MAX keeps the date), count the date
# range, cut the page, drop the scratch key. Redis intersects starting from the smallest set.
PAGE_SCRIPT = """
local src = KEYS[2]
if #KEYS > 2 then
  local args = {'ZINTERSTORE', KEYS[1], #KEYS - 1}
  for i = 2, #KEYS do args[#args + 1] = KEYS[i] end
  args[#args + 1] = 'AGGREGATE'
  args[#args + 1] = 'MAX'
  redis.call(unpack(args))
  src = KEYS[1]
end
local total = redis.call('ZCOUNT', src, ARGV[1], ARGV[2])
local ids = redis.call('ZRANGEBYSCORE', src, ARGV[1], ARGV[2], 'LIMIT', ARGV[3], ARGV[4])
if src == KEYS[1] then redis.call('DEL', KEYS[1]) end
return {total, ids}
"""


async def evento(redis: Redis, evento_id: str) -> dict[str, Any] | None:
    keyset = keys.at(read_generation(redis))
    async with redis.pipeline(transaction=False) as pipe:
        pipe.get(keyset.doc(evento_id))
        pipe.hgetall(keyset.sales(evento_id))
        raw, sales = await pipe.execute()
    return None if raw is None else with_availability(orjson.loads(raw), sales)


async def _documents(redis: Redis, keyset: keys.Keys, ids: list[str]) -> list[dict[str, Any]]:
    if not ids:
        return []
    async with redis.pipeline(transaction=False) as pipe:
        pipe.mget([keyset.doc(i) for i in ids])
        for evento_id in ids:
            pipe.hgetall(keyset.sales(evento_id))
        raws, *sales = await pipe.execute()
    return [with_availability(orjson.loads(raw), s) for raw, s in zip(raws, sales, strict=True) if raw is not None]


def _index_keys(keyset: keys.Keys, filtro: FiltroEventos) -> list[str]:
    """The sets to intersect: the category's, the organizer's and one per query word (all words must match)."""
    sets = [keyset.by_category(filtro.categoria)] if filtro.categoria else []
    sets += [keyset.by_organizer(filtro.organizador_id)] if filtro.organizador_id else []
    sets += [keyset.by_prefix(word) for word in query_words(filtro.q or "")]
    return sets or [keyset.by_date]


async def eventos(redis: Redis, filtro: FiltroEventos) -> dict[str, Any]:
    keyset = keys.at(read_generation(redis))  # once: the page and its documents come from one generation
    low = "-inf" if filtro.desde is None else repr(filtro.desde.timestamp())
    high = "+inf" if filtro.hasta is None else repr(filtro.hasta.timestamp())
    page = redis.register_script(PAGE_SCRIPT)  # EVALSHA, falling back to EVAL once per server
    total, ids = await page(
        keys=[keys.SEARCH_SCRATCH, *_index_keys(keyset, filtro)], args=[low, high, filtro.offset, filtro.limit]
    )
    items = await _documents(redis, keyset, list(ids))
    end = filtro.offset + len(ids)
    return {
        "items": items,
        "total": int(total),
        "limit": filtro.limit,
        "offset": filtro.offset,
        "next_offset": end if end < int(total) else None,
    }


async def ventas(redis: Redis, evento_id: str, por_dia: bool) -> dict[str, Any]:
    """The sales dashboard's read model: totals and a series per hour (or per day, UTC), oldest first."""
    keyset = keys.at(read_generation(redis))
    async with redis.pipeline(transaction=False) as pipe:
        pipe.hgetall(keyset.dashboard(evento_id))
        pipe.hgetall(keyset.dashboard_series(evento_id))
        totals, series = await pipe.execute()
    width = 86_400 if por_dia else 3_600
    buckets: dict[int, dict[str, int]] = {}
    names = {"v": "vendidas", "i": "ingresos_centimos", "c": "canceladas", "r": "reembolsado_centimos"}
    for field, value in series.items():
        kind, _, start = field.partition(":")
        bucket = buckets.setdefault(int(start) // width * width, dict.fromkeys(names.values(), 0))
        bucket[names[kind]] += int(value)
    ingresos, reembolsado = int(totals.get("ingresos_centimos", 0)), int(totals.get("reembolsado_centimos", 0))
    return {
        "vendidas": int(totals.get("vendidas", 0)),
        "reservas": int(totals.get("reservas", 0)),
        "canceladas": int(totals.get("canceladas", 0)),
        "ingresos_centimos": ingresos,
        "reembolsado_centimos": reembolsado,
        "neto_centimos": ingresos - reembolsado,
        "por": "dia" if por_dia else "hora",
        "serie": [
            {"desde": datetime.fromtimestamp(start, UTC).isoformat(), **values}
            for start, values in sorted(buckets.items())
        ],
    }
