"""In-memory fake of the inventory port (the pure `Inventory` and `UserQuota` domains behind the store's
interface, composed as the store composes them), for fast unit tests of the chain and the saga. The real store
is tested on a real nats-server (test_inventory_store.py, test_stadium.py)."""

from __future__ import annotations

import time
from collections.abc import Callable

from services.reservations.inventory import (
    Availability,
    ConfirmOutcome,
    EventoSinInventario,
    Held,
    HoldOutcome,
    HoldRequest,
    Inventory,
    SaleRecord,
)
from services.reservations.quota import UserQuota


class FakeInventario:
    def __init__(self, clock: Callable[[], float] = time.time, **capacidades: int) -> None:
        self.clock = clock
        self.inventarios = {evento: Inventory.for_event(n, None) for evento, n in capacidades.items()}
        self.cupos: dict[tuple[str, str], UserQuota] = {}  # (evento_id, usuario_id) -> the user's quota
        self.lost: set[str] = set()  # reservations whose confirm answers HoldLost
        # What the saga recorded (settled), as the reservation knows it: the inventory itself forgets who.
        self.liquidadas: dict[str, set[str]] = {evento: set() for evento in capacidades}

    def _inv(self, evento_id: str) -> Inventory:
        if evento_id not in self.inventarios:
            raise EventoSinInventario(evento_id)
        return self.inventarios[evento_id]

    def _cupo(self, evento_id: str, usuario_id: str) -> UserQuota:
        return self.cupos.setdefault((evento_id, usuario_id), UserQuota())

    async def hold(self, req: HoldRequest) -> HoldOutcome:
        inv, cupo = self._inv(req.evento_id), self._cupo(req.evento_id, req.usuario_id)
        if req.limite_por_usuario is not None:
            refused = cupo.take(req.reserva_id, req.cantidad, req.limite_por_usuario)
            if refused is not None:
                return refused
        outcome = inv.hold(req, self.clock())
        if not isinstance(outcome, Held) and req.limite_por_usuario is not None:
            cupo.give_back(req.reserva_id)
        return outcome

    async def confirm(self, evento_id: str, reserva_id: str) -> ConfirmOutcome:
        if reserva_id in self.lost:
            self._inv(evento_id).release(reserva_id, self.clock())  # the hold is gone; the quota stays
        return self._inv(evento_id).confirm(reserva_id, self.clock())

    async def release(self, evento_id: str, reserva_id: str, usuario_id: str) -> None:
        self._inv(evento_id).release(reserva_id, self.clock())
        self._cupo(evento_id, usuario_id).give_back(reserva_id)

    async def settle(self, evento_id: str, reserva_id: str) -> None:
        inv = self._inv(evento_id)
        if reserva_id in inv.confirmadas:
            self.liquidadas.setdefault(evento_id, set()).add(reserva_id)
        inv.settle(reserva_id, self.clock())

    async def return_sale(self, evento_id: str, sale: SaleRecord) -> None:
        self._inv(evento_id).return_sale(sale, self.clock())
        self.liquidadas.get(evento_id, set()).discard(sale.reserva_id)
        self._cupo(evento_id, sale.usuario_id).give_back(sale.reserva_id)

    async def availability(
        self, evento_id: str, usuario_id: str | None = None, *, reciente: bool = False
    ) -> Availability:
        mine = self._cupo(evento_id, usuario_id).total if usuario_id is not None else None
        return self._inv(evento_id).availability(evento_id, self.clock(), mine)

    # -- for assertions (the real store answers these from its documents) --------------------------
    def sold(self, evento_id: str, reserva_id: str) -> bool:
        """Whether the reservation's tickets are counted as sold (confirmed, recorded or not)."""
        inv = self._inv(evento_id)
        return reserva_id in inv.confirmadas or reserva_id in self.liquidadas.get(evento_id, set())

    def held(self, evento_id: str, reserva_id: str) -> bool:
        """Whether the reservation holds tickets (an active, unexpired hold)."""
        return reserva_id in self._inv(evento_id).retenidas
