"""Redis keys of the events read models. Two projections, disjoint keys, so neither waits on the other.

- stream EVENTOS -> `events:doc:<id>` (JSON document) and the listing indexes `events:idx:*`, sorted sets
  scored by the event's date (epoch seconds): all events, one per category, one per name-word prefix.
- stream RESERVAS -> `events:sales:<id>` (hash: `total` sold, `s:<section>` sold per section),
  `events:seats:<id>` (set of sold seat ids), `events:orders:<id>` (hash reserva_id -> what it took).
- stream EVENTOS -> `events:org:<organizador_id>` (sorted set of the organizer's events, by date).
- stream RESERVAS -> the sales dashboard: `events:dash:<id>` (hash of totals), `events:dash:<id>:h` (per hour:
  `v:<hour>` tickets sold, `i:<hour>` cents, `c:<hour>` tickets cancelled, `r:<hour>` cents refunded; hour =
  epoch seconds of its start, UTC), `events:dash:<id>:o` (hash reserva_id -> what it counted).

Both belong to one family, `events`, and switch generation together: generation 3 has the same keys under
`events:g3:` (eventflow.generations). Generation 0 is the plain layout above.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import cache

from eventflow.generations import keyspace

FAMILY = "events"
SEARCH_SCRATCH = f"{FAMILY}:tmp:search"  # lives only inside one Lua call, whatever the generation
SECTION_FIELD = "s:"
TOTAL_FIELD = "total"


@dataclass(frozen=True)
class Keys:
    """The keys of one generation of the events read models."""

    generation: int
    prefix: str

    @property
    def catalog_patterns(self) -> tuple[str, ...]:
        return (f"{self.prefix}:doc:*", f"{self.prefix}:idx:*")

    @property
    def sales_patterns(self) -> tuple[str, ...]:
        return (f"{self.prefix}:sales:*", f"{self.prefix}:seats:*", f"{self.prefix}:orders:*")

    @property
    def dashboard_patterns(self) -> tuple[str, ...]:
        return (f"{self.prefix}:dash:*",)

    @property
    def organizer_patterns(self) -> tuple[str, ...]:
        return (f"{self.prefix}:org:*",)

    @property
    def by_date(self) -> str:
        return f"{self.prefix}:idx:date"

    def doc(self, evento_id: str) -> str:
        return f"{self.prefix}:doc:{evento_id}"

    def by_category(self, categoria: str) -> str:
        return f"{self.prefix}:idx:cat:{categoria}"

    def by_prefix(self, prefix: str) -> str:
        return f"{self.prefix}:idx:tok:{prefix}"

    def sales(self, evento_id: str) -> str:
        return f"{self.prefix}:sales:{evento_id}"

    def seats(self, evento_id: str) -> str:
        return f"{self.prefix}:seats:{evento_id}"

    def orders(self, evento_id: str) -> str:
        return f"{self.prefix}:orders:{evento_id}"

    def by_organizer(self, organizador_id: str) -> str:
        return f"{self.prefix}:org:{organizador_id}"

    def dashboard(self, evento_id: str) -> str:
        return f"{self.prefix}:dash:{evento_id}"

    def dashboard_series(self, evento_id: str) -> str:
        return f"{self.prefix}:dash:{evento_id}:h"

    def dashboard_orders(self, evento_id: str) -> str:
        return f"{self.prefix}:dash:{evento_id}:o"


@cache
def at(generation: int) -> Keys:
    return Keys(generation, keyspace(FAMILY, generation))
