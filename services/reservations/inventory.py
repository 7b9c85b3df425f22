"""Inventory of one event: the only authority on WHAT is sold (issue #3 §6, issue #6 defect 3).

Pure domain, no I/O. `Inventory` is the aggregate stored in one KV key per event. It keeps only what is bounded
by capacity or by work in flight: counters, a bitmap of sold seats, active and recently expired holds, and
confirmations the saga has not yet recorded. Once the saga has recorded a sale (`settle`) the inventory keeps
only its count and seat bits; WHO bought it lives in the reservation (the RESERVAS stream). The store applies a
batch of ops in order to one working copy and writes it with a single compare-and-set (group commit); every op
is idempotent per reserva_id, so replaying a batch after a conflict or an ambiguous timeout is harmless.
"""

from __future__ import annotations

import base64
import bisect
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, NamedTuple, Protocol

import orjson

from eventflow.errors import Conflict, NotFound, Unavailable

# An expired hold is kept (uncounted) this long so that a late confirm can still re-acquire its tickets.
EXPIRED_HOLD_GRACE_S = 900.0
FORMAT_VERSION = 2  # v1 kept every sale ({reserva_id: [usuario, n, seats]}); it is converted on load


@dataclass(frozen=True)
class HoldRequest:
    reserva_id: str
    evento_id: str
    usuario_id: str
    cantidad: int  # >= 1; for seated requests == len(asientos)
    asientos: tuple[str, ...]  # () for general admission (seated events then get seats assigned)
    ttl_s: float  # the hold expires by itself after this
    limite_por_usuario: int | None  # max tickets per user per event (the store's quota keys); None: no limit

    def __post_init__(self) -> None:
        if self.cantidad < 1 or not 0 < self.ttl_s < math.inf:
            raise ValueError("cantidad must be >= 1 and ttl_s > 0 and finite")
        if self.asientos and (len(set(self.asientos)) != len(self.asientos) or len(self.asientos) != self.cantidad):
            raise ValueError("asientos must be distinct and as many as cantidad")


@dataclass(frozen=True)
class SaleRecord:
    """A recorded sale as the reservation knows it: what `return_sale` un-sells on a cancellation."""

    reserva_id: str
    usuario_id: str
    cantidad: int
    asientos: tuple[str, ...]  # () for general admission

    def __post_init__(self) -> None:
        if self.cantidad < 1:
            raise ValueError("cantidad must be >= 1")
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


@dataclass(frozen=True)
class SettleOp:
    evento_id: str
    reserva_id: str


@dataclass(frozen=True)
class ReturnSaleOp:
    evento_id: str
    sale: SaleRecord


InventoryOp = HoldRequest | ConfirmOp | ReleaseOp | SettleOp | ReturnSaleOp


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
Outcome = HoldOutcome | ConfirmOutcome | None


@dataclass(frozen=True)
class Availability:
    evento_id: str
    capacidad: int
    vendidas: int
    retenidas: int  # active (unexpired) holds only
    disponibles: int  # capacidad - vendidas - retenidas
    por_usuario: int | None  # when asked for a user: the tickets of that user's live reservations (quota)


class EventoSinInventario(NotFound):
    slug, title = "evento-sin-inventario", "Event without inventory"

    def __init__(self, evento_id: str) -> None:
        super().__init__(f"event {evento_id} does not exist, so it has no tickets", evento_id=evento_id)


class InventarioNoDisponible(Unavailable):
    """The inventory store could not write for a long while (e.g. a leader election): retry the op later."""

    slug, title = "inventario-no-disponible", "Inventory unavailable"


class VentaInconsistente(Conflict):
    """A returned sale does not match what the inventory sold (more tickets than are sold, seats not sold):
    un-selling it would free tickets someone else bought, so nothing changes and an operator must look."""

    slug, title = "venta-inconsistente", "Sale does not match the inventory"


class InventoryStore(Protocol):
    async def hold(self, req: HoldRequest) -> HoldOutcome: ...
    async def confirm(self, evento_id: str, reserva_id: str) -> ConfirmOutcome: ...
    async def release(self, evento_id: str, reserva_id: str, usuario_id: str) -> None: ...
    async def settle(self, evento_id: str, reserva_id: str) -> None: ...
    async def return_sale(self, evento_id: str, sale: SaleRecord) -> None: ...
    async def availability(
        self, evento_id: str, usuario_id: str | None = None, *, reciente: bool = False
    ) -> Availability: ...


class Hold(NamedTuple):
    usuario: str
    cantidad: int
    asientos: tuple[int, ...]  # seat indexes (see Venue)
    expires_at: float


class Sale(NamedTuple):
    """A confirmation the saga has not recorded yet (settled sales are only counts and bits)."""

    usuario: str
    cantidad: int
    asientos: tuple[int, ...]


class Venue:
    """A seated event's seats in section order: index i <-> "A-7". Immutable, so every copy shares it."""

    def __init__(self, secciones: Mapping[str, int]) -> None:
        self.secciones = dict(secciones)
        self._names = list(self.secciones)
        self._starts: list[int] = []
        self._by_name: dict[str, tuple[int, int]] = {}
        start = 0
        for nombre, size in self.secciones.items():
            self._starts.append(start)
            self._by_name[nombre] = (start, size)
            start += size
        self.size = start

    def index(self, seat: str) -> int | None:
        nombre, _, n = seat.rpartition("-")
        found = self._by_name.get(nombre)
        if found is None or not (n.isascii() and n.isdigit()) or len(n) > 9 or n != str(int(n)):
            return None
        if not 1 <= int(n) <= found[1]:
            return None
        return found[0] + int(n) - 1

    def name(self, index: int) -> str:
        k = bisect.bisect_right(self._starts, index) - 1
        return f"{self._names[k]}-{index - self._starts[k] + 1}"


_BITS_TO_FLAGS = bytes.maketrans(b"01", b"\x00\x01")


class Inventory:
    """sold + active holds <= capacidad; a seat is in at most one hold or sale; expired holds never count.

    Stored: counters, the sold-seat bitmap (`_vendido`, 1 bit per seat, section order), holds and unsettled
    confirmations. Derived on load: `_ocupado` (1 byte per seat, sold or held), so free seats are found with
    C-speed `bytearray.find`, from `_libre_desde` (every seat before it is taken). No op loops over the venue.
    """

    def __init__(self, capacidad: int, secciones: Mapping[str, int] | None = None) -> None:
        self.capacidad = capacidad
        self.venue = Venue(secciones) if secciones is not None else None
        self.n_vendidas = 0  # sold tickets, settled or not
        self.n_retenidas = 0  # tickets in active holds
        self.retenidas: dict[str, Hold] = {}
        self.caducadas: dict[str, Hold] = {}  # expired within the grace period: uncounted, re-acquirable
        self.confirmadas: dict[str, Sale] = {}  # sold, not yet settled
        # Returned (un-sold) sales: (cantidad, settled at). Kept EXPIRED_HOLD_GRACE_S past their settle, so a
        # return replayed late (a step another driver cancelled, still queued) is a no-op, never a second un-sell.
        self.devueltas: dict[str, tuple[int, float | None]] = {}
        seats = self.venue.size if self.venue else 0
        self._vendido = bytearray((seats + 7) // 8)
        self._ocupado = bytearray(seats)
        self._libre_desde = 0
        self._next_prune = float("inf")

    @classmethod
    def for_event(cls, aforo_total: int, secciones: Sequence[Mapping[str, Any]] | None) -> Inventory:
        if not secciones:
            return cls(aforo_total)
        return cls(aforo_total, {str(s["nombre"]): int(s["asientos"]) for s in secciones})

    @property
    def secciones(self) -> dict[str, int] | None:
        return self.venue.secciones if self.venue else None

    @property
    def disponibles(self) -> int:
        return self.capacidad - self.n_vendidas - self.n_retenidas

    # -- (de)serialization -------------------------------------------------------------------------------
    @classmethod
    def from_json(cls, raw: bytes) -> Inventory:
        doc = orjson.loads(raw)
        inv = cls(doc["capacidad"], doc.get("secciones"))
        if doc.get("v") == FORMAT_VERSION:
            inv._load(doc)
        else:
            inv._load_v1(doc)
        inv._derive()
        return inv

    def to_json(self) -> bytes:
        doc: dict[str, Any] = {
            "v": FORMAT_VERSION,
            "capacidad": self.capacidad,
            "secciones": self.secciones,
            "vendidas": self.n_vendidas,
            "retenidas": {r: [h.usuario, h.cantidad, h.asientos, h.expires_at] for r, h in self.retenidas.items()},
            "caducadas": {r: [h.usuario, h.cantidad, h.asientos, h.expires_at] for r, h in self.caducadas.items()},
            "confirmadas": {r: [s.usuario, s.cantidad, s.asientos] for r, s in self.confirmadas.items()},
            "devueltas": {r: [n, settled] for r, (n, settled) in self.devueltas.items()},
        }
        if self.venue is not None:
            doc["mapa_vendidas"] = base64.b64encode(self._vendido).decode()
        return orjson.dumps(doc)

    def _load(self, doc: dict[str, Any]) -> None:
        self.n_vendidas = doc["vendidas"]
        if self.venue is not None:
            self._vendido = bytearray(base64.b64decode(doc["mapa_vendidas"]))
        self.retenidas = {r: Hold(u, n, tuple(a), e) for r, (u, n, a, e) in doc["retenidas"].items()}
        self.caducadas = {r: Hold(u, n, tuple(a), e) for r, (u, n, a, e) in doc["caducadas"].items()}
        self.confirmadas = {r: Sale(u, n, tuple(a)) for r, (u, n, a) in doc["confirmadas"].items()}
        self.devueltas = {
            r: (v, None) if isinstance(v, int) else (int(v[0]), v[1]) for r, v in doc["devueltas"].items()
        }

    def _load_v1(self, doc: dict[str, Any]) -> None:
        """Every v1 sale becomes settled counts and bits (their per-user quotas are not migrated)."""
        for _, n, seats in doc["vendidas"].values():
            self.n_vendidas += n
            for i in self._indexes(seats):
                self._set_sold(i)

        def holds(key: str) -> dict[str, Hold]:
            return {r: Hold(u, n, self._indexes(a), e) for r, (u, n, a, e, _) in doc.get(key, {}).items()}

        self.retenidas, self.caducadas = holds("retenidas"), holds("caducadas")

    def _derive(self) -> None:
        if self.venue is not None:
            bits = format(int.from_bytes(self._vendido, "big"), f"0{len(self._vendido) * 8}b")
            self._ocupado = bytearray(bits[: self.venue.size].encode().translate(_BITS_TO_FLAGS))
            for held in self.retenidas.values():
                for i in held.asientos:
                    self._ocupado[i] = 1
        self.n_retenidas = sum(h.cantidad for h in self.retenidas.values())
        self._next_prune = self._earliest_prune()

    def copy(self) -> Inventory:
        clone = type(self).__new__(type(self))
        clone.__dict__.update(self.__dict__)  # scalars and the shared, immutable venue
        clone.retenidas, clone.caducadas = dict(self.retenidas), dict(self.caducadas)
        clone.confirmadas, clone.devueltas = dict(self.confirmadas), dict(self.devueltas)
        clone._vendido, clone._ocupado = bytearray(self._vendido), bytearray(self._ocupado)
        return clone

    # -- ops -----------------------------------------------------------------------------------------------
    def apply(self, op: InventoryOp, now: float) -> Outcome:
        """Apply one op in place. An op that raises has changed nothing (each validates before it mutates)."""
        if isinstance(op, HoldRequest):
            return self.hold(op, now)
        if isinstance(op, ConfirmOp):
            return self.confirm(op.reserva_id, now)
        if isinstance(op, ReleaseOp):
            self.release(op.reserva_id, now)
        elif isinstance(op, SettleOp):
            self.settle(op.reserva_id, now)
        else:
            self.return_sale(op.sale, now)
        return None

    def hold(self, req: HoldRequest, now: float) -> HoldOutcome:
        """Check order: idempotent replay, unknown seats, taken seats, capacity (the limit is the quota's).

        A new hold of an expired reservation replaces it, even when refused (its quota is given back then).
        """
        self.prune(now)
        if (sale := self.confirmadas.get(req.reserva_id)) is not None:
            return Held(req.reserva_id, now + req.ttl_s, self.names(sale.asientos))
        if (held := self.retenidas.get(req.reserva_id)) is not None:
            return Held(req.reserva_id, held.expires_at, self.names(held.asientos))
        self.caducadas.pop(req.reserva_id, None)
        seats: tuple[int, ...] = ()
        if req.asientos:
            found = [self.venue.index(a) if self.venue else None for a in req.asientos]
            if unknown := tuple(a for a, i in zip(req.asientos, found, strict=True) if i is None):
                return UnknownSeats(unknown)
            seats = tuple(i for i in found if i is not None)
            if taken := self.names([i for i in seats if self._ocupado[i]]):
                return SeatsTaken(taken)
        if req.cantidad > self.disponibles:
            return SoldOut(max(self.disponibles, 0))
        if self.venue is not None and not seats:
            seats = self._free_seats(req.cantidad)
            if len(seats) < req.cantidad:
                return SoldOut(len(seats))
        hold = Hold(req.usuario_id, req.cantidad, seats, now + req.ttl_s)
        self.retenidas[req.reserva_id] = hold
        self.n_retenidas += hold.cantidad
        for i in seats:
            self._ocupado[i] = 1
        self._next_prune = min(self._next_prune, hold.expires_at)
        return Held(req.reserva_id, hold.expires_at, self.names(seats))

    def confirm(self, reserva_id: str, now: float) -> ConfirmOutcome:
        """A live hold becomes an unsettled sale; an expired one is re-acquired if its tickets are all free."""
        self.prune(now)
        if (sale := self.confirmadas.get(reserva_id)) is not None:
            return Confirmed(reserva_id, self.names(sale.asientos))
        if (held := self.retenidas.pop(reserva_id, None)) is not None:
            self.n_retenidas -= held.cantidad
        elif (held := self.caducadas.get(reserva_id)) is not None and self._can_reacquire(held):
            del self.caducadas[reserva_id]
            for i in held.asientos:
                self._ocupado[i] = 1
        else:
            return HoldLost(reserva_id)
        self.confirmadas[reserva_id] = Sale(held.usuario, held.cantidad, held.asientos)
        self.n_vendidas += held.cantidad
        for i in held.asientos:
            self._set_sold(i)
        return Confirmed(reserva_id, self.names(held.asientos))

    def release(self, reserva_id: str, now: float) -> None:
        """Drop a live or expired hold, or un-sell an unsettled confirmation. A no-op for an unknown or settled
        reservation: a settled sale is undone only by `return_sale`, which is told its seats."""
        self.prune(now)
        self.caducadas.pop(reserva_id, None)
        if (held := self.retenidas.pop(reserva_id, None)) is not None:
            self.n_retenidas -= held.cantidad
            self._free(held.asientos)
        elif (sale := self.confirmadas.pop(reserva_id, None)) is not None:
            self._unsell(sale.cantidad, sale.asientos)

    def settle(self, reserva_id: str, now: float) -> None:
        """The saga recorded the outcome: the sale is now only counts and bits; a return is forgotten after
        the grace period (until then a late replay of it still finds its marker)."""
        self.prune(now)
        self.confirmadas.pop(reserva_id, None)
        if (returned := self.devueltas.get(reserva_id)) is not None and returned[1] is None:
            self.devueltas[reserva_id] = (returned[0], now)
            self._next_prune = min(self._next_prune, now + EXPIRED_HOLD_GRACE_S)

    def return_sale(self, sale: SaleRecord, now: float) -> None:
        """Un-sell a cancelled sale (its unsettled confirmation if there still is one); a replay before
        `settle` is a no-op. Raises `VentaInconsistente`, changing nothing, if the record does not fit."""
        self.prune(now)
        rid = sale.reserva_id
        if rid in self.devueltas:
            return
        if (mine := self.confirmadas.get(rid)) is not None:
            del self.confirmadas[rid]
            self._unsell(mine.cantidad, mine.asientos)
        elif rid in self.retenidas or rid in self.caducadas:
            self.release(rid, now)  # never sold: there is only a hold to drop
        else:
            self._unsell(sale.cantidad, self._returnable(sale))
        self.devueltas[rid] = (sale.cantidad, None)

    def availability(self, evento_id: str, now: float, por_usuario: int | None = None) -> Availability:
        self.prune(now)
        return Availability(evento_id, self.capacidad, self.n_vendidas, self.n_retenidas, self.disponibles, por_usuario)

    def prune(self, now: float) -> None:
        """Move expired holds out of the count; forget them for good after the grace period."""
        if now < self._next_prune:
            return
        for rid, held in list(self.retenidas.items()):
            if held.expires_at <= now:
                del self.retenidas[rid]
                self.n_retenidas -= held.cantidad
                self._free(held.asientos)
                self.caducadas[rid] = held
        for rid, held in list(self.caducadas.items()):
            if held.expires_at + EXPIRED_HOLD_GRACE_S <= now:
                del self.caducadas[rid]
        for rid, (_, settled) in list(self.devueltas.items()):
            if settled is not None and settled + EXPIRED_HOLD_GRACE_S <= now:
                del self.devueltas[rid]
        self._next_prune = self._earliest_prune()

    # -- seats -----------------------------------------------------------------------------------------------
    def names(self, seats: Sequence[int]) -> tuple[str, ...]:
        return tuple(self.venue.name(i) for i in seats) if self.venue else ()

    def is_sold(self, index: int) -> bool:
        return bool(self._vendido[index >> 3] & (0x80 >> (index & 7)))

    def is_taken(self, index: int) -> bool:
        return bool(self._ocupado[index])

    def _free_seats(self, cantidad: int) -> tuple[int, ...]:
        """The first `cantidad` free seats in section order: one C-speed search per seat, from the cursor."""
        found: list[int] = []
        pos = self._libre_desde
        while len(found) < cantidad and (i := self._ocupado.find(0, pos)) >= 0:
            found.append(i)
            pos = i + 1
        self._libre_desde = found[0] if found else len(self._ocupado)  # a hint: seats before it are taken
        return tuple(found)

    def _returnable(self, sale: SaleRecord) -> tuple[int, ...]:
        """The seat indexes of a settled sale to un-sell, if the record fits what is sold."""
        settled = self.n_vendidas - sum(s.cantidad for s in self.confirmadas.values())
        if sale.cantidad > settled:
            raise VentaInconsistente(f"{sale.cantidad} tickets returned but only {settled} are sold and settled")
        if self.venue is None:
            if sale.asientos:
                raise VentaInconsistente("a general-admission sale has no seats")
            return ()
        if len(sale.asientos) != sale.cantidad:
            raise VentaInconsistente("a seated sale names one seat per ticket")
        found = [self.venue.index(a) for a in sale.asientos]
        unsettled = {i for s in self.confirmadas.values() for i in s.asientos}
        if any(i is None or not self.is_sold(i) or i in unsettled for i in found):
            raise VentaInconsistente("the sale names seats that are not sold (or belong to another sale)")
        return tuple(i for i in found if i is not None)

    def _can_reacquire(self, held: Hold) -> bool:
        return held.cantidad <= self.disponibles and not any(self._ocupado[i] for i in held.asientos)

    def _unsell(self, cantidad: int, seats: tuple[int, ...]) -> None:
        self.n_vendidas -= cantidad
        for i in seats:
            self._vendido[i >> 3] &= ~(0x80 >> (i & 7)) & 0xFF
        self._free(seats)

    def _free(self, seats: tuple[int, ...]) -> None:
        for i in seats:
            self._ocupado[i] = 0
        if seats:
            self._libre_desde = min(self._libre_desde, *seats)

    def _set_sold(self, index: int) -> None:
        self._vendido[index >> 3] |= 0x80 >> (index & 7)

    def _indexes(self, seats: Sequence[str]) -> tuple[int, ...]:
        found = [self.venue.index(a) for a in seats] if self.venue else []
        return tuple(i for i in found if i is not None)

    def _earliest_prune(self) -> float:
        expiries = [h.expires_at for h in self.retenidas.values()]
        expiries += [h.expires_at + EXPIRED_HOLD_GRACE_S for h in self.caducadas.values()]
        expiries += [settled + EXPIRED_HOLD_GRACE_S for _, settled in self.devueltas.values() if settled is not None]
        return min(expiries, default=float("inf"))


def apply_op(state: Inventory, op: InventoryOp, now: float) -> tuple[Inventory, Outcome]:
    """The pure form: a new state and the op's outcome; `state` is left untouched."""
    new = state.copy()
    return new, new.apply(op, now)


def apply_batch(
    state: Inventory, ops: Sequence[InventoryOp], now: float
) -> tuple[Inventory, list[Outcome | Exception]]:
    """Apply a group commit's ops in order to one copy of `state`: each op's outcome, or the exception it raised.

    An op that raises fails alone. Ops validate before they mutate; in case one did not, the working copy is
    rebuilt from `state` by re-applying the ops that succeeded before it (deterministic at the same `now`).
    """
    work = state.copy()
    results: list[Outcome | Exception] = []
    for k, op in enumerate(ops):
        try:
            results.append(work.apply(op, now))
        except Exception as err:
            results.append(err)
            work = state.copy()
            for earlier, result in zip(ops[:k], results[:k], strict=True):
                if not isinstance(result, Exception):
                    work.apply(earlier, now)
    return work, results


# -- what a seat map shows (the live availability feed) ----------------------------------------------------
LIBRE, RETENIDO, VENDIDO = "L", "R", "V"
_STATE_LETTERS = bytes.maketrans(b"\x00\x01\x02", b"LRV")
_DIFF_CHUNK = 512


@dataclass(frozen=True)
class Ocupacion:
    """Counts, and per section a string with one letter per seat: L free, R held, V sold."""

    capacidad: int
    vendidas: int
    retenidas: int
    disponibles: int
    secciones: tuple[tuple[str, int, str], ...] | None  # (nombre, asientos, estados)


def ocupacion(inv: Inventory, now: float) -> Ocupacion:
    """The whole map without a Python loop over the seats: held = 1 and sold = 1 more, added as big integers
    (one byte per seat, no carries), then one translate to letters."""
    inv.prune(now)
    if inv.venue is None:
        return Ocupacion(inv.capacidad, inv.n_vendidas, inv.n_retenidas, inv.disponibles, None)
    size = inv.venue.size
    bits = format(int.from_bytes(inv._vendido, "big"), f"0{len(inv._vendido) * 8}b")[:size]
    sold = bits.encode().translate(_BITS_TO_FLAGS)
    both = int.from_bytes(bytes(inv._ocupado), "big") + int.from_bytes(sold, "big")
    letters = both.to_bytes(size, "big").translate(_STATE_LETTERS).decode()
    sections, start = [], 0
    for nombre, asientos in inv.venue.secciones.items():
        sections.append((nombre, asientos, letters[start : start + asientos]))
        start += asientos
    return Ocupacion(inv.capacidad, inv.n_vendidas, inv.n_retenidas, inv.disponibles, tuple(sections))


def asientos_cambiados(antes: Inventory, despues: Inventory) -> dict[str, list[str]]:
    """The seats whose state differs between two states of one event, by their new state ({"L": [...], ...}).

    Compares the per-seat arrays chunk by chunk (C-speed slices), looking at single seats only inside a chunk
    that changed: a group commit touches a few seats of a venue that may have 100,000.
    """
    out: dict[str, list[str]] = {LIBRE: [], RETENIDO: [], VENDIDO: []}
    if despues.venue is None or antes.venue is None or antes.venue.size != despues.venue.size:
        return out
    changed: set[int] = set()
    a, b = antes._ocupado, despues._ocupado
    for start in range(0, len(b), _DIFF_CHUNK):
        if a[start : start + _DIFF_CHUNK] != b[start : start + _DIFF_CHUNK]:
            changed.update(i for i in range(start, min(start + _DIFF_CHUNK, len(b))) if a[i] != b[i])
    va, vb = antes._vendido, despues._vendido
    for start in range(0, len(vb), _DIFF_CHUNK):
        if va[start : start + _DIFF_CHUNK] != vb[start : start + _DIFF_CHUNK]:
            for byte in range(start, min(start + _DIFF_CHUNK, len(vb))):
                if va[byte] != vb[byte]:
                    changed.update(byte * 8 + k for k in range(8) if (va[byte] ^ vb[byte]) & (0x80 >> k))
    for i in sorted(changed):
        state = VENDIDO if despues.is_sold(i) else RETENIDO if despues.is_taken(i) else LIBRE
        out[state].append(despues.venue.name(i))
    return out
