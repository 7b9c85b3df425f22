"""One user's share of one event under the per-user limit (pure domain, no I/O).

Settled sales in the inventory carry no buyer, so the limit cannot be counted there. Each (event, user) gets
this small document instead: the user's live reservations in that event and their tickets, bounded by the
limit itself. A reservation counts from its hold until it is released or returned (also while its hold is
expired: the saga then confirms, re-acquiring it, or releases it). Every op is idempotent per reserva_id.
"""

from __future__ import annotations

from collections.abc import Mapping

import orjson

from services.reservations.inventory import LimitExceeded


class UserQuota:
    def __init__(self, reservas: Mapping[str, int] | None = None) -> None:
        self.reservas = dict(reservas or {})  # reserva_id -> tickets

    @property
    def total(self) -> int:
        return sum(self.reservas.values())

    def take(self, reserva_id: str, cantidad: int, limite: int) -> LimitExceeded | None:
        """Count the reservation, unless the user would go over the limit. A replay takes nothing more."""
        if reserva_id in self.reservas:
            return None
        actuales = self.total
        if actuales + cantidad > limite:
            return LimitExceeded(limite, actuales)
        self.reservas[reserva_id] = cantidad
        return None

    def give_back(self, reserva_id: str) -> bool:
        """Whether anything changed (a second give-back of the same reservation does nothing)."""
        return self.reservas.pop(reserva_id, None) is not None

    @classmethod
    def from_json(cls, raw: bytes) -> UserQuota:
        return cls(orjson.loads(raw)["reservas"])

    def to_json(self) -> bytes:
        return orjson.dumps({"reservas": self.reservas})
