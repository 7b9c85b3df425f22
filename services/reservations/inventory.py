"""Inventory of one event: the only authority on how many tickets are left (issue #3 §6).

Pure domain, no I/O. `Inventory` is the aggregate stored in one KV key per event. The store applies a batch
of ops in order to one working copy and writes it with a single compare-and-set (group commit); because every
op is idempotent per reserva_id, replaying a batch after a conflict or an ambiguous timeout is harmless.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, NamedTuple, Protocol

import orjson

from eventflow.errors import NotFound, Unavailable

# An expired hold is kept (uncounted) this long so that a late confirm can still re-acquire its tickets.
EXPIRED_HOLD_GRACE_S = 900.0


@dataclass(frozen=True)
class HoldRequest:
    reserva_id: str
    evento_id: str
    usuario_id: str
    cantidad: int  # >= 1; for seated requests == len(asientos)
    asientos: tuple[str, ...]  # () for general admission (seated events then get seats assigned)
    ttl_s: float  # the hold expires by itself after this
    limite_por_usuario: int | None  # max tickets per user per event, counting sold + active holds

    def __post_init__(self) -> None:
        if self.cantidad < 1 or self.ttl_s <= 0:
            raise ValueError("cantidad must be >= 1 and ttl_s > 0")
        if self.asientos and (len(set(self.asientos)) != len(self.asientos) or len(self.asientos) != self.cantidad):
            raise ValueError("asientos must be distinct and as many as cantidad")


@dataclass(frozen=True)
class ConfirmOp:
    evento_id: str
    reserva_id: str


@dataclass(frozen=True)
class ReleaseOp:
    evento_id: str
    reserva_id: str


InventoryOp = HoldRequest | ConfirmOp | ReleaseOp


@dataclass(frozen=True)
class Held:
    reserva_id: str
    expires_at: float
    asientos: tuple[str, ...]


@dataclass(frozen=True)
class SoldOut:
    disponibles: int


@dataclass(frozen=True)
class SeatsTaken:
    asientos: tuple[str, ...]


@dataclass(frozen=True)
class UnknownSeats:
    asientos: tuple[str, ...]


@dataclass(frozen=True)
class LimitExceeded:
    limite: int
    actuales: int


HoldOutcome = Held | SoldOut | SeatsTaken | UnknownSeats | LimitExceeded


@dataclass(frozen=True)
class Confirmed:
    reserva_id: str
    asientos: tuple[str, ...]


@dataclass(frozen=True)
class HoldLost:
    reserva_id: str  # the hold expired (or was released) and its tickets are gone


ConfirmOutcome = Confirmed | HoldLost


@dataclass(frozen=True)
class Availability:
    evento_id: str
    capacidad: int
    vendidas: int
    retenidas: int  # active (unexpired) holds only
    disponibles: int  # capacidad - vendidas - retenidas
    por_usuario: int | None  # when asked for a user: that user's sold + held tickets


class EventoSinInventario(NotFound):
    slug, title = "evento-sin-inventario", "Event without inventory"

    def __init__(self, evento_id: str) -> None:
        super().__init__(f"event {evento_id} does not exist, so it has no tickets", evento_id=evento_id)


class InventarioNoDisponible(Unavailable):
    """The inventory store could not write for a long while (e.g. a leader election): retry the op later."""

    slug, title = "inventario-no-disponible", "Inventory unavailable"


class InventoryStore(Protocol):
    async def hold(self, req: HoldRequest) -> HoldOutcome: ...
    async def confirm(self, evento_id: str, reserva_id: str) -> ConfirmOutcome: ...
    async def release(self, evento_id: str, reserva_id: str) -> None: ...
    async def availability(
        self, evento_id: str, usuario_id: str | None = None, *, reciente: bool = False
    ) -> Availability: ...


class Sale(NamedTuple):
    usuario: str
    cantidad: int
    asientos: tuple[str, ...]


class Hold(NamedTuple):
    usuario: str
    cantidad: int
    asientos: tuple[str, ...]
    expires_at: float
    limite: int | None


class Inventory:
    """sold + active holds <= capacidad; a seat is in at most one hold or sale; expired holds never count.

    Besides the stored maps it keeps derived counters and indexes (rebuilt on load), so an op costs O(its
    seats) rather than O(size of the event) — a hot event applies hundreds of ops per write.
    """

    def __init__(
        self,
        capacidad: int,
        secciones: Mapping[str, int] | None = None,
        vendidas: Mapping[str, Sale] | None = None,
        retenidas: Mapping[str, Hold] | None = None,
        caducadas: Mapping[str, Hold] | None = None,
    ) -> None:
        self.capacidad = capacidad
        self.secciones = dict(secciones) if secciones is not None else None
        self.vendidas = dict(vendidas or {})
        self.retenidas = dict(retenidas or {})
        self.caducadas = dict(caducadas or {})
        self._por_usuario: dict[str, int] = {}
        self._ocupados: set[str] = set()
        self.n_vendidas = self.n_retenidas = 0
        for sale in self.vendidas.values():
            self._take(sale.usuario, sale.cantidad, sale.asientos)
        for held in self.retenidas.values():
            self._take(held.usuario, held.cantidad, held.asientos)
        self.n_vendidas = sum(s.cantidad for s in self.vendidas.values())
        self.n_retenidas = sum(h.cantidad for h in self.retenidas.values())
        self._next_prune = self._earliest_prune()

    @classmethod
    def for_event(cls, aforo_total: int, secciones: Sequence[Mapping[str, Any]] | None) -> Inventory:
        if not secciones:
            return cls(aforo_total)
        return cls(aforo_total, {str(s["nombre"]): int(s["asientos"]) for s in secciones})

    @classmethod
    def from_json(cls, raw: bytes) -> Inventory:
        doc = orjson.loads(raw)

        def holds(key: str) -> dict[str, Hold]:
            return {r: Hold(u, n, tuple(a), e, lim) for r, (u, n, a, e, lim) in doc.get(key, {}).items()}

        sales = {r: Sale(u, n, tuple(a)) for r, (u, n, a) in doc["vendidas"].items()}
        return cls(doc["capacidad"], doc.get("secciones"), sales, holds("retenidas"), holds("caducadas"))

    def to_json(self) -> bytes:
        return orjson.dumps(
            {
                "capacidad": self.capacidad,
                "secciones": self.secciones,
                "vendidas": {r: [s.usuario, s.cantidad, s.asientos] for r, s in self.vendidas.items()},
                "retenidas": {r: list(h) for r, h in self.retenidas.items()},
                "caducadas": {r: list(h) for r, h in self.caducadas.items()},
            }
        )

    def copy(self) -> Inventory:
        clone = Inventory.__new__(Inventory)
        clone.capacidad, clone.secciones = self.capacidad, self.secciones
        clone.vendidas, clone.retenidas, clone.caducadas = (
            dict(self.vendidas),
            dict(self.retenidas),
            dict(self.caducadas),
        )
        clone._por_usuario, clone._ocupados = dict(self._por_usuario), set(self._ocupados)
        clone.n_vendidas, clone.n_retenidas, clone._next_prune = self.n_vendidas, self.n_retenidas, self._next_prune
        return clone

    @property
    def disponibles(self) -> int:
        return self.capacidad - self.n_vendidas - self.n_retenidas

    def por_usuario(self, usuario_id: str) -> int:
        return self._por_usuario.get(usuario_id, 0)

    def apply(self, op: InventoryOp, now: float) -> HoldOutcome | ConfirmOutcome | None:
        """Apply one op in place (the store works on a copy per batch); see `hold`, `confirm`, `release`."""
        if isinstance(op, HoldRequest):
            return self.hold(op, now)
        if isinstance(op, ConfirmOp):
            return self.confirm(op.reserva_id, now)
        self.release(op.reserva_id, now)
        return None

    def hold(self, req: HoldRequest, now: float) -> HoldOutcome:
        self.prune(now)
        if (sale := self.vendidas.get(req.reserva_id)) is not None:
            return Held(req.reserva_id, now + req.ttl_s, sale.asientos)
        if (held := self.retenidas.get(req.reserva_id)) is not None:
            return Held(req.reserva_id, held.expires_at, held.asientos)
        if req.asientos:
            unknown = tuple(a for a in req.asientos if not self._seat_exists(a))
            if unknown:
                return UnknownSeats(unknown)
        actuales = self.por_usuario(req.usuario_id)
        if req.limite_por_usuario is not None and actuales + req.cantidad > req.limite_por_usuario:
            return LimitExceeded(req.limite_por_usuario, actuales)
        if taken := tuple(a for a in req.asientos if a in self._ocupados):
            return SeatsTaken(taken)
        if req.cantidad > self.disponibles:
            return SoldOut(max(self.disponibles, 0))
        asientos = req.asientos
        if self.secciones is not None and not asientos:
            asientos = self._free_seats(req.cantidad)
            if len(asientos) < req.cantidad:
                return SoldOut(len(asientos))
        hold = Hold(req.usuario_id, req.cantidad, asientos, now + req.ttl_s, req.limite_por_usuario)
        self.caducadas.pop(req.reserva_id, None)
        self.retenidas[req.reserva_id] = hold
        self.n_retenidas += hold.cantidad
        self._take(hold.usuario, hold.cantidad, hold.asientos)
        self._next_prune = min(self._next_prune, hold.expires_at)
        return Held(req.reserva_id, hold.expires_at, asientos)

    def confirm(self, reserva_id: str, now: float) -> ConfirmOutcome:
        """A live hold becomes a sale; an expired one is re-acquired if its tickets are all still free."""
        self.prune(now)
        if (sale := self.vendidas.get(reserva_id)) is not None:
            return Confirmed(reserva_id, sale.asientos)
        if (held := self.retenidas.pop(reserva_id, None)) is not None:
            self.n_retenidas -= held.cantidad
        elif (held := self.caducadas.get(reserva_id)) is not None and self._can_reacquire(held):
            del self.caducadas[reserva_id]
            self._take(held.usuario, held.cantidad, held.asientos)
        else:
            return HoldLost(reserva_id)
        self.vendidas[reserva_id] = Sale(held.usuario, held.cantidad, held.asientos)
        self.n_vendidas += held.cantidad
        return Confirmed(reserva_id, held.asientos)

    def release(self, reserva_id: str, now: float) -> None:
        """Drop a hold or un-sell a sale (cancellation); a no-op for an unknown reservation."""
        self.prune(now)
        self.caducadas.pop(reserva_id, None)
        if (held := self.retenidas.pop(reserva_id, None)) is not None:
            self.n_retenidas -= held.cantidad
            self._give_back(held.usuario, held.cantidad, held.asientos)
        if (sale := self.vendidas.pop(reserva_id, None)) is not None:
            self.n_vendidas -= sale.cantidad
            self._give_back(sale.usuario, sale.cantidad, sale.asientos)

    def availability(self, evento_id: str, now: float, usuario_id: str | None = None) -> Availability:
        self.prune(now)
        mine = self.por_usuario(usuario_id) if usuario_id is not None else None
        return Availability(evento_id, self.capacidad, self.n_vendidas, self.n_retenidas, self.disponibles, mine)

    def prune(self, now: float) -> None:
        """Move expired holds out of the count; forget them for good after the grace period."""
        if now < self._next_prune:
            return
        for rid, held in list(self.retenidas.items()):
            if held.expires_at <= now:
                del self.retenidas[rid]
                self.n_retenidas -= held.cantidad
                self._give_back(held.usuario, held.cantidad, held.asientos)
                self.caducadas[rid] = held
        for rid, held in list(self.caducadas.items()):
            if held.expires_at + EXPIRED_HOLD_GRACE_S <= now:
                del self.caducadas[rid]
        self._next_prune = self._earliest_prune()

    def _earliest_prune(self) -> float:
        expiries = [h.expires_at for h in self.retenidas.values()]
        expiries += [h.expires_at + EXPIRED_HOLD_GRACE_S for h in self.caducadas.values()]
        return min(expiries, default=float("inf"))

    def _can_reacquire(self, held: Hold) -> bool:
        if held.cantidad > self.disponibles or any(a in self._ocupados for a in held.asientos):
            return False
        return held.limite is None or self.por_usuario(held.usuario) + held.cantidad <= held.limite

    def _take(self, usuario: str, cantidad: int, asientos: tuple[str, ...]) -> None:
        self._por_usuario[usuario] = self._por_usuario.get(usuario, 0) + cantidad
        self._ocupados.update(asientos)

    def _give_back(self, usuario: str, cantidad: int, asientos: tuple[str, ...]) -> None:
        left = self._por_usuario.get(usuario, 0) - cantidad
        if left > 0:
            self._por_usuario[usuario] = left
        else:
            self._por_usuario.pop(usuario, None)
        self._ocupados.difference_update(asientos)

    def _seat_exists(self, seat: str) -> bool:
        nombre, _, n = seat.rpartition("-")
        size = (self.secciones or {}).get(nombre)
        return size is not None and n.isascii() and n.isdigit() and n == str(int(n)) and 1 <= int(n) <= size

    def _free_seats(self, cantidad: int) -> tuple[str, ...]:
        found: list[str] = []
        for nombre, size in (self.secciones or {}).items():
            for n in range(1, size + 1):
                if (seat := f"{nombre}-{n}") not in self._ocupados:
                    found.append(seat)
                    if len(found) == cantidad:
                        return tuple(found)
        return tuple(found)


def apply_op(state: Inventory, op: InventoryOp, now: float) -> tuple[Inventory, HoldOutcome | ConfirmOutcome | None]:
    """The pure form: a new state and the op's outcome; `state` is left untouched."""
    new = state.copy()
    return new, new.apply(op, now)
