"""In-memory fake of the inventory port (the pure `Inventory` domain behind the store's interface), for fast
unit tests of the chain and the saga. The real store is tested on a real nats-server (test_inventory_store.py)."""

from __future__ import annotations

import time
from collections.abc import Callable

from services.reservations.inventory import (
    Availability,
    ConfirmOp,
    ConfirmOutcome,
    EventoSinInventario,
    HoldOutcome,
    HoldRequest,
    Inventory,
    ReleaseOp,
)


class FakeInventario:
    def __init__(self, clock: Callable[[], float] = time.time, **capacidades: int) -> None:
        self.clock = clock
        self.inventarios = {evento: Inventory.for_event(n, None) for evento, n in capacidades.items()}
        self.lost: set[str] = set()  # reservations whose confirm answers HoldLost

    def _inv(self, evento_id: str) -> Inventory:
        if evento_id not in self.inventarios:
            raise EventoSinInventario(evento_id)
        return self.inventarios[evento_id]

    async def hold(self, req: HoldRequest) -> HoldOutcome:
        return self._inv(req.evento_id).apply(req, self.clock())  # type: ignore[return-value]

    async def confirm(self, evento_id: str, reserva_id: str) -> ConfirmOutcome:
        if reserva_id in self.lost:
            self._inv(evento_id).apply(ReleaseOp(evento_id, reserva_id), self.clock())
        return self._inv(evento_id).apply(ConfirmOp(evento_id, reserva_id), self.clock())  # type: ignore[return-value]

    async def release(self, evento_id: str, reserva_id: str) -> None:
        self._inv(evento_id).apply(ReleaseOp(evento_id, reserva_id), self.clock())

    async def availability(
        self, evento_id: str, usuario_id: str | None = None, *, reciente: bool = False
    ) -> Availability:
        return self._inv(evento_id).availability(evento_id, self.clock(), usuario_id)

    # -- for assertions (the real store answers these from its documents) --------------------------
    def sold(self, evento_id: str, reserva_id: str) -> bool:
        """Whether the reservation's tickets are counted as sold."""
        return reserva_id in self._inv(evento_id).vendidas

    def held(self, evento_id: str, reserva_id: str) -> bool:
        """Whether the reservation holds tickets (an active, unexpired hold)."""
        return reserva_id in self._inv(evento_id).retenidas
