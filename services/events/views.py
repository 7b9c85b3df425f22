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

# Members of the smallest index set examined per listing before the total stops being counted (a knob: the tests
# set it low). Past it the walk only goes on until the page is full, and the total is a lower bound.
MAX_EXAMINED = 5_000

# KEYS the index sets (every one must hold the event); ARGV min, max, offset, limit, max examined.
# One set: count the date range and cut the page. Several: walk the one with fewest members in the range in its
# order (date, then id: every set scores an event by its date, so that is the intersection's order) and keep the
# members every other set holds (ZMSCORE). Work follows the page and the cap, not the sets' sizes; nothing is
# written. Returns {total, ids, 1 if the total is exact}.
PAGE_SCRIPT = """
local lo, hi = ARGV[1], ARGV[2]
local offset, limit, cap = tonumber(ARGV[3]), tonumber(ARGV[4]), tonumber(ARGV[5])
if #KEYS == 1 then
  local total = redis.call('ZCOUNT', KEYS[1], lo, hi)
  return {total, redis.call('ZRANGEBYSCORE', KEYS[1], lo, hi, 'LIMIT', offset, limit), 1}
end
local walk, size = 1, redis.call('ZCOUNT', KEYS[1], lo, hi)
for i = 2, #KEYS do
  local n = redis.call('ZCOUNT', KEYS[i], lo, hi)
  if n < size then walk, size = i, n end
end
local others = {}
for i = 1, #KEYS do if i ~= walk then others[#others + 1] = KEYS[i] end end
local first = 0  -- rank of the range's first member: the walk goes by rank, each step O(log n + step)
if lo ~= '-inf' then first = redis.call('ZCOUNT', KEYS[walk], '-inf', '(' .. lo) end
local want, found, examined, ids = offset + limit, 0, 0, {}
while examined < size and (found < want or examined < cap) do
  local n = math.min(500, size - examined)  -- one step; unpack() stays far below Lua's stack limit
  if examined < cap then n = math.min(n, cap - examined) end
  local keep = redis.call('ZRANGE', KEYS[walk], first + examined, first + examined + n - 1)
  examined = examined + n
  for _, key in ipairs(others) do
    if #keep == 0 then break end
    local scores, held = redis.call('ZMSCORE', key, unpack(keep)), {}
    for j = 1, #keep do if scores[j] then held[#held + 1] = keep[j] end end
    keep = held
  end
  for _, id in ipairs(keep) do
    found = found + 1
    if found > offset and found <= want then ids[#ids + 1] = id end
  end
end
return {found, ids, examined >= size and 1 or 0}
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
    """A page in date order. `total_exacto` is false when the walk hit MAX_EXAMINED: `total` then counts only
    the matches among the members examined (at least the page's end), and `next_offset` stays open."""
    keyset = keys.at(read_generation(redis))  # once: the page and its documents come from one generation
    low = "-inf" if filtro.desde is None else repr(filtro.desde.timestamp())
    high = "+inf" if filtro.hasta is None else repr(filtro.hasta.timestamp())
    page = redis.register_script(PAGE_SCRIPT)  # EVALSHA, falling back to EVAL once per server
    total, ids, exact = await page(
        keys=_index_keys(keyset, filtro), args=[low, high, filtro.offset, filtro.limit, MAX_EXAMINED]
    )
    items = await _documents(redis, keyset, list(ids))
    end = filtro.offset + len(ids)
    return {
        "items": items,
        "total": int(total),
        "total_exacto": bool(exact),
        "limit": filtro.limit,
        "offset": filtro.offset,
        "next_offset": end if end < int(total) or not exact else None,
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
