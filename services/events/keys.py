"""Redis keys of the events read models. Two projections, disjoint keys, so neither waits on the other.

- stream EVENTOS -> `events:doc:<id>` (JSON document) and the listing indexes `events:idx:*`, sorted sets
  scored by the event's date (epoch seconds): all events, one per category, one per name-word prefix.
- stream RESERVAS -> `events:sales:<id>` (hash: `total` sold, `s:<section>` sold per section),
  `events:seats:<id>` (set of sold seat ids), `events:orders:<id>` (hash reserva_id -> what it took).
"""

from __future__ import annotations

PREFIX = "events"
CATALOG_PATTERNS = (f"{PREFIX}:doc:*", f"{PREFIX}:idx:*")
SALES_PATTERNS = (f"{PREFIX}:sales:*", f"{PREFIX}:seats:*", f"{PREFIX}:orders:*")
BY_DATE = f"{PREFIX}:idx:date"
SEARCH_SCRATCH = f"{PREFIX}:tmp:search"  # lives only inside one Lua call


def doc(evento_id: str) -> str:
    return f"{PREFIX}:doc:{evento_id}"


def by_category(categoria: str) -> str:
    return f"{PREFIX}:idx:cat:{categoria}"


def by_prefix(prefix: str) -> str:
    return f"{PREFIX}:idx:tok:{prefix}"


def sales(evento_id: str) -> str:
    return f"{PREFIX}:sales:{evento_id}"


def seats(evento_id: str) -> str:
    return f"{PREFIX}:seats:{evento_id}"


def orders(evento_id: str) -> str:
    return f"{PREFIX}:orders:{evento_id}"


SECTION_FIELD = "s:"
TOTAL_FIELD = "total"
