"""Reservations domain: the command, the saga's durable state, its states, and the domain errors.

No I/O here. The saga document is what the orchestrator persists in the SAGAS bucket before each step and
after each result; everything a restarted process needs to go on (or to unwind) is in it.
"""

from __future__ import annotations

import hashlib
import time
import uuid
from dataclasses import dataclass, field, fields
from datetime import UTC, datetime
from enum import StrEnum
from typing import Any, Protocol

from eventflow.errors import Conflict, DomainError, NotFound, Unprocessable


class Estado(StrEnum):
    PENDIENTE = "pendiente"
    CONFIRMADA = "confirmada"
    RECHAZADA = "rechazada"
    CANCELADA = "cancelada"
    REQUIERE_INTERVENCION = "requiere_intervencion"


class Fase(StrEnum):
    """Where the orchestrator is: what a restarted process must resume."""

    ADELANTE = "adelante"  # running the purchase steps
    COMPENSANDO = "compensando"  # unwinding registered compensations in reverse
    CANCELANDO = "cancelando"  # running the cancellation saga of a confirmed reservation
    TERMINADA = "terminada"


PASOS_COMPRA = ("hold", "authorize", "confirm", "capture", "record")
PASOS_CANCELACION = ("refund", "return_sale", "record_cancel")
# The compensation registered before each purchase step runs (None: nothing new to undo).
COMPENSACION_DE = {"hold": "release", "authorize": "void", "confirm": None, "capture": None, "record": None}
# The steps the saga's state is written before (besides its creation, and unless a compensation is registered
# for the step: that is always durable before the step runs). Every step is idempotent by reserva_id, so a
# restart re-runs everything from the last write: hold, authorize and confirm again (each answers as the first
# time), or capture and record. The pivot is written: from there on the saga never unwinds.
PERSISTIR_ANTES = ("capture",)
ANTES_DEL_PIVOTE = PASOS_COMPRA[: PASOS_COMPRA.index("capture")]  # their compensations are registered at creation


class Ids(Protocol):
    """Keyed ids (eventflow.crypto.Pseudonymizer): the same value gives the same id, only with the key."""

    def id_for(self, kind: str, value: str) -> str: ...


def reserva_id_para(ids: Ids, usuario_id: str, idempotency_key: str) -> str:
    """The saga's create under this id is the idempotency claim. Keyed (HMAC): nobody without the key can compute
    a reservation's id from a buyer's id and a key they saw, so ids reveal nothing and cannot be claimed first."""
    return ids.id_for("reserva", f"{usuario_id}:{idempotency_key}")


def es_reserva_id(texto: str) -> bool:
    """Reservation ids are canonical UUIDs; anything else names no reservation (a 404, never a KV error)."""
    try:
        return str(uuid.UUID(texto)) == texto
    except ValueError:
        return False


def ahora_iso() -> str:
    return datetime.now(UTC).isoformat()


@dataclass(frozen=True)
class Tarjeta:
    """Card data as typed by the buyer: lives only in the request, never stored or logged."""

    numero: str = field(repr=False)
    vencimiento: str = field(repr=False)
    cvc: str = field(repr=False)


@dataclass(frozen=True)
class ReservarEntradas:
    usuario_id: str
    evento_id: str
    cantidad: int
    asientos: tuple[str, ...]
    tarjeta: Tarjeta = field(repr=False)
    idempotency_key: str
    reserva_id: str  # reserva_id_para(ids, usuario_id, idempotency_key)

    def huella(self) -> str:
        """What "the same request" means for an Idempotency-Key: the order, not the card (never hashed)."""
        canon = f"{self.usuario_id}|{self.evento_id}|{self.cantidad}|{','.join(sorted(self.asientos))}"
        return hashlib.sha256(canon.encode()).hexdigest()[:32]


@dataclass(frozen=True)
class CancelarReserva:
    reserva_id: str


@dataclass(frozen=True)
class EventoInfo:
    """What the chain needs from the events read model (eventual: a pre-check, never the authority)."""

    id: str
    aforo_total: int
    entradas_disponibles: int
    precio_centimos: int
    fecha: datetime
    venta_desde: datetime | None
    numerado: bool
    limite_por_usuario: int = 10  # tickets per user for this event, sold + held (the organizer's choice)
    max_por_solicitud: int = 10  # tickets in one request; never above limite_por_usuario
    organizador_id: str | None = None  # may read the event's reservations (None: created before accounts)
    nombre: str = ""  # printed on the tickets
    lugar: str = ""


@dataclass
class Saga:
    """The durable state of one reservation's saga (one KV key); `revision` is the CAS token, not stored."""

    reserva_id: str
    usuario_id: str
    evento_id: str
    cantidad: int
    asientos: list[str]
    importe_centimos: int
    metodo: dict[str, str]  # token, marca, ultimos4: never the PAN
    huella: str
    limite_por_usuario: int | None = None  # the event's, copied when the saga starts
    estado: Estado = Estado.PENDIENTE
    fase: Fase = Fase.ADELANTE
    paso: str | None = "hold"
    motivo: str | None = None
    compensaciones: list[str] = field(default_factory=list)  # registered, in the order they were registered
    compensadas: list[str] = field(default_factory=list)
    datos: dict[str, Any] = field(default_factory=dict)  # step results: authorization_id, expires_at, ...
    historial: list[dict[str, Any]] = field(default_factory=list)
    owner: str = ""
    lease_until: float = 0.0
    reanudaciones: int = 0  # drivers that took it over after a crash or a lost lease: bounded (MAX_REANUDACIONES)
    creada_en: str = field(default_factory=ahora_iso)
    actualizada_en: str = field(default_factory=ahora_iso)
    revision: int = 0
    persistido: bytes = field(default=b"", repr=False)  # the document as last written: what a failed save leaves
    # Not stored: False while the process that created the saga knows it never sent the authorize, True once it
    # may have; None for a saga read back from the store (a run that died may have sent it, so a void is due).
    pago_enviado: bool | None = field(default=False, repr=False)

    @property
    def terminada(self) -> bool:
        return self.fase == Fase.TERMINADA

    def anotar(self, paso: str, resultado: str, detalle: str | None = None) -> None:
        entry: dict[str, Any] = {"paso": paso, "resultado": resultado, "en": ahora_iso()}
        if detalle:
            entry["detalle"] = detalle
        self.historial.append(entry)

    def registrar(self, compensacion: str | None) -> None:
        if compensacion and compensacion not in self.compensaciones:
            self.compensaciones.append(compensacion)

    def registrar_antes_del_pivote(self) -> None:
        """Every compensation before the pivot, registered (so persisted with the create) before the hold runs:
        then no write is needed between hold, authorize and confirm (saga.py)."""
        for paso in ANTES_DEL_PIVOTE:
            self.registrar(COMPENSACION_DE[paso])

    def pendientes_de_compensar(self) -> list[str]:
        return [c for c in reversed(self.compensaciones) if c not in self.compensadas]

    def arrendar(self, owner: str, lease_s: float) -> None:
        self.owner = owner
        self.lease_until = time.time() + lease_s
        self.actualizada_en = ahora_iso()

    def to_doc(self) -> dict[str, Any]:
        """Shallow on purpose (orjson serializes the nested lists and dicts): written several times per saga."""
        return {name: getattr(self, name) for name in _DOC_FIELDS}

    @classmethod
    def from_doc(cls, doc: dict[str, Any], revision: int) -> Saga:
        doc = dict(doc, estado=Estado(doc["estado"]), fase=Fase(doc["fase"]))
        if doc["fase"] == Fase.CANCELANDO and doc.get("paso") == "release":
            doc["paso"] = "return_sale"  # sagas written before the cancellation's step had its own name
        return cls(**doc, revision=revision, pago_enviado=None)

    def resultado(self) -> dict[str, Any]:
        """What the outcome event keeps of a finished saga, so the reservation reads the same once the saga's
        own record is gone (see `desde_resultado`): never the payment token."""
        return {
            "estado": self.estado.value,
            "motivo": self.motivo,
            "importe_centimos": self.importe_centimos,
            "asientos": self.datos.get("asientos", self.asientos),
            "pago": {"marca": self.metodo.get("marca"), "ultimos4": self.metodo.get("ultimos4")},
            "autorizacion": self.datos.get("autorizacion"),
            "huella": self.huella,
            "historial": self.historial,
            "creada_en": self.creada_en,
        }

    @classmethod
    def desde_resultado(cls, data: dict[str, Any], actualizada_en: str) -> Saga:
        """A finished reservation rebuilt from its last outcome event (ReservaConfirmada/Rechazada/Cancelada)."""
        datos: dict[str, Any] = {"asientos": list(data.get("asientos") or [])}
        if data.get("autorizacion"):
            datos["autorizacion"] = data["autorizacion"]
        return cls(
            reserva_id=data["reserva_id"],
            usuario_id=data["usuario_id"],
            evento_id=data["evento_id"],
            cantidad=int(data["cantidad"]),
            asientos=list(data.get("asientos") or []),
            importe_centimos=int(data.get("importe_centimos", 0)),
            metodo=dict(data.get("pago") or {}),
            huella=data.get("huella", ""),
            estado=Estado(data["estado"]),
            fase=Fase.TERMINADA,
            paso=None,
            motivo=data.get("motivo"),
            datos=datos,
            historial=list(data.get("historial") or []),
            creada_en=data.get("creada_en", actualizada_en),
            actualizada_en=actualizada_en,
            pago_enviado=None,  # read back, like from_doc: whether an authorize went out is not known here
        )


_DOC_FIELDS = tuple(f.name for f in fields(Saga) if f.name not in ("revision", "persistido", "pago_enviado"))
MAX_REANUDACIONES = 10


class PasoFallido(Exception):
    """A saga step's business answer was no (sold out, declined, hold lost): unwind, do not retry."""

    def __init__(self, motivo: str) -> None:
        super().__init__(motivo)
        self.motivo = motivo


# --- errors --------------------------------------------------------------------------------------
class ReservaNoEncontrada(NotFound):
    slug, title = "reserva-no-encontrada", "Reservation not found"


class ClaveReutilizada(Unprocessable):
    slug, title = "idempotency-key-reused", "Idempotency-Key reused with a different request"


class ReservaNoCancelable(Conflict):
    slug, title = "reserva-no-cancelable", "Reservation cannot be cancelled"


class RechazoDeCadena(DomainError):
    """A handler of the chain said no: the problem body names it (`handler`) and why (`motivo`)."""

    slug, title = "reserva-rechazada", "Reservation rejected"

    def __init__(self, handler: str, motivo: str, detail: str, status: int = 422, **extra: Any) -> None:
        super().__init__(detail, handler=handler, motivo=motivo, **extra)
        self.status = status
        self.handler = handler
        self.motivo = motivo
