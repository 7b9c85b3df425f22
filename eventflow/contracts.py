"""The published language between services: event types other services consume, and their payloads.

Events are stored by `eventflow.eventstore.EventStore` (payload `data` below, type in `type`). A service
owns the stream it writes; any service may project any stream. Amounts are integer cents; instants are
ISO 8601 with offset. Personal data never appears here in plain text.
"""

from typing import NotRequired, TypedDict

from eventflow.jetstream import EVENTOS, RESERVAS, USUARIOS

__all__ = ["EVENTOS", "RESERVAS", "USUARIOS"]

# --- stream EVENTOS (owner: events service), subject eventos.<evento_id> -------------------------
EVENTO_CREADO = "EventoCreado"


class Seccion(TypedDict):
    nombre: str  # seat ids are f"{nombre}-{n}" for n in 1..asientos
    asientos: int


# An event's purchase limits: tickets one buyer may hold in all, and seats one request may list. Events created
# before they existed lack both fields; every reader uses these defaults for them.
LIMITE_POR_USUARIO_PREDETERMINADO = 10
MAX_POR_SOLICITUD_PREDETERMINADO = 10
TOPE_POR_SOLICITUD = 50  # hard cap whatever the organizer sets: a request lists at most this many seats


class EventoCreadoData(TypedDict):
    nombre: str
    descripcion: str
    fecha: str
    lugar: str
    aforo_total: int  # equals the sum of the sections' seats when there are sections
    precio_centimos: int
    categoria: str
    secciones: list[Seccion] | None
    venta_desde: str | None  # sales open at this instant; None = on sale from creation
    limite_por_usuario: NotRequired[int]  # always written since they exist; absent = the defaults above
    max_por_solicitud: NotRequired[int]  # <= limite_por_usuario <= 1000, 1..TOPE_POR_SOLICITUD
    organizador_id: NotRequired[str]  # the usuario_id who created it; absent in events created before accounts
    huella: NotRequired[str]  # fingerprint of the request, present when it came with an Idempotency-Key


# --- stream USUARIOS (owner: users service), subject usuarios.<usuario_id> ----------------------
USUARIO_REGISTRADO = "UsuarioRegistrado"  # payload holds only ciphertext and pseudonyms
USUARIO_BORRADO = "UsuarioBorrado"  # the user was erased (crypto-shredding): no personal data in it

# --- stream RESERVAS (owner: reservations service), subject reservas.<reserva_id> ---------------
RESERVA_CONFIRMADA = "ReservaConfirmada"
RESERVA_RECHAZADA = "ReservaRechazada"
RESERVA_CANCELADA = "ReservaCancelada"


class PagoResumen(TypedDict):
    marca: str | None  # "visa" | "mastercard" | "amex"
    ultimos4: str | None  # truncated card number (PCI DSS allows it in clear); never the PAN, never the token


class PasoHistorial(TypedDict):
    paso: str
    resultado: str
    en: str
    detalle: NotRequired[str]


class ReservaTerminada(TypedDict):
    """What every outcome event carries of the finished reservation (since the saga's own record is purged
    once it is stored): enough to answer GET /api/reservas/{id}, recognise a repeated Idempotency-Key, and
    refund on cancellation. Events written before these fields existed lack them (readers use .get)."""

    estado: NotRequired[str]  # confirmada | rechazada | cancelada (motivo: in ReservaRechazada)
    pago: NotRequired[PagoResumen]
    autorizacion: NotRequired[str | None]  # the processor's authorization id (refunds)
    huella: NotRequired[str]  # fingerprint of the request behind the Idempotency-Key (not personal data)
    historial: NotRequired[list[PasoHistorial]]
    creada_en: NotRequired[str]


class ReservaConfirmadaData(ReservaTerminada):
    reserva_id: str
    usuario_id: str
    evento_id: str
    cantidad: int
    asientos: list[str]
    importe_centimos: int
    confirmada_en: str


class ReservaRechazadaData(ReservaTerminada):
    reserva_id: str
    usuario_id: str
    evento_id: str
    cantidad: int
    motivo: str
    rechazada_en: str
    importe_centimos: NotRequired[int]
    asientos: NotRequired[list[str]]


class ReservaCanceladaData(ReservaTerminada):
    reserva_id: str
    usuario_id: str
    evento_id: str
    cantidad: int
    asientos: list[str]
    importe_reembolsado_centimos: int
    cancelada_en: str
    importe_centimos: NotRequired[int]
