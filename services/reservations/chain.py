"""The Chain of Responsibility a reservation request passes before anything is held or charged.

Each handler does one job and either enriches the request (event info, price, payment token) or rejects it
with a `RechazoDeCadena` naming itself and the reason. `encadenar` links any handlers in the given order, so
the chain is composed in bootstrap and each handler is tested alone.
"""

from __future__ import annotations

import itertools
import re
from abc import ABC, abstractmethod
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from services.reservations.catalog import CatalogoEventos, DirectorioUsuarios
from services.reservations.domain import EventoInfo, RechazoDeCadena, ReservarEntradas
from services.reservations.inventory import EventoSinInventario, InventoryStore
from services.reservations.payments import CardDetails, InvalidCard, PaymentGateway, PaymentMethod

Reloj = Callable[[], datetime]


def reloj_utc() -> datetime:
    return datetime.now(UTC)


@dataclass
class Solicitud:
    """The request as it travels down the chain; handlers fill in what later ones and the saga need."""

    comando: ReservarEntradas
    evento: EventoInfo | None = None
    importe_centimos: int | None = None
    metodo: PaymentMethod | None = None


class Manejador(ABC):
    def __init__(self) -> None:
        self.siguiente: Manejador | None = None

    @property
    def nombre(self) -> str:
        return type(self).__name__

    def enlazar(self, siguiente: Manejador) -> Manejador:
        self.siguiente = siguiente
        return siguiente

    async def manejar(self, solicitud: Solicitud) -> Solicitud:
        await self.procesar(solicitud)
        if self.siguiente is not None:
            await self.siguiente.manejar(solicitud)
        return solicitud

    @abstractmethod
    async def procesar(self, solicitud: Solicitud) -> None: ...

    def rechazo(self, motivo: str, detail: str, status: int = 422, **extra: Any) -> RechazoDeCadena:
        return RechazoDeCadena(self.nombre, motivo, detail, status, **extra)


def encadenar(*manejadores: Manejador) -> Manejador:
    for actual, siguiente in itertools.pairwise(manejadores):
        actual.enlazar(siguiente)
    return manejadores[0]


_VENCIMIENTO = re.compile(r"^(0[1-9]|1[0-2])/\d{2}$")


class ValidadorDeDatos(Manejador):
    """Shape and ranges the API types cannot express: quantity bounds, seat list, card formats.

    `max_por_solicitud` here is the service's hard cap; each event's own (lower) one is ValidadorDeEvento's.
    """

    def __init__(self, max_por_solicitud: int = 50) -> None:
        super().__init__()
        self.max_por_solicitud = max_por_solicitud

    async def procesar(self, solicitud: Solicitud) -> None:
        cmd = solicitud.comando
        if not 1 <= cmd.cantidad <= self.max_por_solicitud:
            raise self.rechazo("cantidad_invalida", f"cantidad must be between 1 and {self.max_por_solicitud}")
        if cmd.asientos and len(cmd.asientos) != cmd.cantidad:
            raise self.rechazo("asientos_invalidos", "asientos must list exactly cantidad seats")
        if len(set(cmd.asientos)) != len(cmd.asientos) or any(not a.strip() for a in cmd.asientos):
            raise self.rechazo("asientos_invalidos", "asientos must be distinct, non-empty seat ids")
        numero = cmd.tarjeta.numero.replace(" ", "").replace("-", "")
        if not (numero.isdigit() and 12 <= len(numero) <= 19):
            raise self.rechazo("tarjeta_invalida", "numero_tarjeta must have 12 to 19 digits")
        if not _VENCIMIENTO.match(cmd.tarjeta.vencimiento):
            raise self.rechazo("tarjeta_invalida", "vencimiento must be MM/YY")
        if not (cmd.tarjeta.cvc.isdigit() and len(cmd.tarjeta.cvc) in (3, 4)):
            raise self.rechazo("tarjeta_invalida", "cvc must have 3 or 4 digits")


class ValidadorDeUsuario(Manejador):
    def __init__(self, directorio: DirectorioUsuarios) -> None:
        super().__init__()
        self.directorio = directorio

    async def procesar(self, solicitud: Solicitud) -> None:
        if not await self.directorio.existe(solicitud.comando.usuario_id):
            raise self.rechazo("usuario_inexistente", "no user has this usuario_id")


class ValidadorDeEvento(Manejador):
    """Exists, not past, on sale (venta_desde), at most the event's tickets per request, seats only if seated."""

    def __init__(self, catalogo: CatalogoEventos, reloj: Reloj = reloj_utc) -> None:
        super().__init__()
        self.catalogo = catalogo
        self.reloj = reloj

    async def procesar(self, solicitud: Solicitud) -> None:
        cmd = solicitud.comando
        evento = await self.catalogo.evento(cmd.evento_id)
        if evento is None:
            raise self.rechazo("evento_inexistente", "no event has this evento_id")
        now = self.reloj()
        if evento.fecha <= now:
            raise self.rechazo("evento_pasado", "the event has already taken place")
        if evento.venta_desde is not None and evento.venta_desde > now:
            raise self.rechazo(
                "venta_no_iniciada", "sales have not opened yet", 409, venta_desde=evento.venta_desde.isoformat()
            )
        if cmd.asientos and not evento.numerado:
            raise self.rechazo("evento_sin_asientos", "this event has no numbered seats; omit asientos")
        if cmd.cantidad > evento.max_por_solicitud:
            raise self.rechazo(
                "cantidad_invalida",
                f"at most {evento.max_por_solicitud} tickets per request for this event",
                max_por_solicitud=evento.max_por_solicitud,
            )
        solicitud.evento = evento


class ValidadorDeLimite(Manejador):
    """Pre-check of the event's per-user limit (sold + held); the hold enforces it atomically."""

    def __init__(self, inventario: InventoryStore, activo: bool = True) -> None:
        super().__init__()
        self.inventario = inventario
        self.activo = activo

    async def procesar(self, solicitud: Solicitud) -> None:
        evento = solicitud.evento
        if not self.activo or evento is None:
            return
        cmd = solicitud.comando
        try:
            disponibilidad = await self.inventario.availability(cmd.evento_id, cmd.usuario_id, reciente=True)
        except EventoSinInventario:
            raise self.rechazo("evento_inexistente", "the event has no inventory") from None
        actuales = disponibilidad.por_usuario or 0
        if actuales + cmd.cantidad > evento.limite_por_usuario:
            raise self.rechazo(
                "limite_por_usuario",
                f"at most {evento.limite_por_usuario} tickets per user for this event",
                409,
                limite=evento.limite_por_usuario,
                actuales=actuales,
            )


class ValidadorDeInventario(Manejador):
    """Fail fast on the events read model (eventual): the hold in the CP store is the authority."""

    async def procesar(self, solicitud: Solicitud) -> None:
        evento = solicitud.evento
        if evento is not None and evento.entradas_disponibles < solicitud.comando.cantidad:
            raise self.rechazo("agotado", "not enough tickets left", 409, disponibles=evento.entradas_disponibles)


class CalculadorDePrecio(Manejador):
    """importe = cantidad x (precio + cargo); cargo = max(minimo, precio x tasa), per ticket, integer cents.

    Free events pay no fee. The rate is in basis points (500 = 5 %), rounded half up to the cent.
    """

    def __init__(self, tasa_bp: int = 500, cargo_minimo_centimos: int = 50) -> None:
        super().__init__()
        self.tasa_bp = tasa_bp
        self.cargo_minimo_centimos = cargo_minimo_centimos

    def cargo(self, precio_centimos: int) -> int:
        if precio_centimos == 0:
            return 0
        return max(self.cargo_minimo_centimos, (precio_centimos * self.tasa_bp + 5000) // 10000)

    async def procesar(self, solicitud: Solicitud) -> None:
        if solicitud.evento is None:
            raise self.rechazo("sin_evento", "the price needs the event: put ValidadorDeEvento first", 500)
        precio = solicitud.evento.precio_centimos
        solicitud.importe_centimos = solicitud.comando.cantidad * (precio + self.cargo(precio))


class TokenizadorDePago(Manejador):
    """Swaps the card for a processor token, so the saga (and its durable state) never holds the PAN."""

    def __init__(self, pagos: PaymentGateway) -> None:
        super().__init__()
        self.pagos = pagos

    async def procesar(self, solicitud: Solicitud) -> None:
        t = solicitud.comando.tarjeta
        card = CardDetails(numero=t.numero.replace(" ", "").replace("-", ""), vencimiento=t.vencimiento, cvc=t.cvc)
        try:
            solicitud.metodo = await self.pagos.tokenize(card)
        except InvalidCard as err:
            codigo = str(getattr(err, "codigo", "") or err)
            raise self.rechazo("tarjeta_invalida", "the card was refused", 402, codigo=codigo) from None
