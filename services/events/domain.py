"""The event (espectáculo) aggregate: what a valid event is, decided before anything is written."""

from __future__ import annotations

import hashlib
import uuid
from dataclasses import asdict, dataclass
from datetime import datetime
from decimal import Decimal
from typing import Protocol

import orjson

from eventflow.errors import NotFound, Unprocessable


class Ids(Protocol):
    """Keyed ids (eventflow.crypto.Pseudonymizer): the same value gives the same id, only with the key."""

    def id_for(self, kind: str, value: str) -> str: ...


def evento_id_para(ids: Ids, organizador_id: str, idempotency_key: str) -> str:
    """The append with expected_version 0 to this id is the idempotency claim. Keyed (HMAC) and per organizer:
    nobody can compute another organizer's event id from a key they saw, or claim it first."""
    return ids.id_for("evento", f"{organizador_id}:{idempotency_key}")


def es_evento_id(texto: str) -> bool:
    """Event ids are canonical UUIDs (random, or keyed from an Idempotency-Key); anything else names no event."""
    try:
        return str(uuid.UUID(texto)) == texto
    except ValueError:
        return False


@dataclass(frozen=True)
class Seccion:
    """A seated block; its seats are f"{nombre}-{n}" for n in 1..asientos."""

    nombre: str
    asientos: int

    def asiento(self, n: int) -> str:
        return f"{self.nombre}-{n}"


@dataclass(frozen=True)
class CrearEvento:
    """Command: the caller's values, already typed but not yet judged by the rules."""

    nombre: str
    fecha: str
    lugar: str
    precio: Decimal
    categoria: str
    descripcion: str = ""
    aforo_total: int | None = None
    secciones: list[Seccion] | None = None
    venta_desde: str | None = None
    limite_por_usuario: int | None = None  # None: derived from the other one, or the default
    max_por_solicitud: int | None = None

    def huella(self) -> str:
        """What "the same request" means for an Idempotency-Key: every field as the caller sent it.

        The limits count only when sent, so a request without them keeps the fingerprint it had before
        they existed (a retry across that deploy is still recognized as the same request).
        """
        fields = asdict(self)
        for name in ("limite_por_usuario", "max_por_solicitud"):
            if fields[name] is None:
                del fields[name]
        canon = orjson.dumps(fields, default=str, option=orjson.OPT_SORT_KEYS)
        return hashlib.sha256(canon).hexdigest()[:32]


@dataclass(frozen=True)
class Evento:
    id: str
    nombre: str
    descripcion: str
    fecha: datetime
    lugar: str
    aforo_total: int
    precio_centimos: int
    categoria: str
    secciones: tuple[Seccion, ...] | None
    venta_desde: datetime | None
    limite_por_usuario: int  # tickets one buyer may hold for this event, over all their reservations
    max_por_solicitud: int  # tickets (seats) one reservation request may ask for
    organizador_id: str | None = None  # who created it (their usuario_id): may read its reservations


@dataclass(frozen=True)
class FieldError:
    field: str
    message: str
    code: str

    def as_dict(self) -> dict[str, str]:
        return {"field": self.field, "message": self.message, "code": self.code}


class DatosInvalidos(Unprocessable):
    """Same problem shape as a malformed request (`errors` with field/message/code), every rule at once."""

    slug, title = "validation", "Validation failed"

    def __init__(self, errors: list[FieldError], what: str = "event") -> None:
        super().__init__(f"The {what} breaks the rules listed in `errors`.", errors=[e.as_dict() for e in errors])
        self.errors = errors


class ClaveReutilizada(Unprocessable):
    slug, title = "idempotency-key-reused", "Idempotency-Key reused with a different request"

    def __init__(self) -> None:
        super().__init__("This Idempotency-Key was used for a different event.")


class EventoNoEncontrado(NotFound):
    slug, title = "evento-no-encontrado", "Event not found"

    def __init__(self, evento_id: str) -> None:
        super().__init__(f"No event with id {evento_id!r}.")


@dataclass(frozen=True)
class FiltroEventos:
    """Query: a page of events ordered by date (then id), every filter optional."""

    q: str | None = None
    categoria: str | None = None
    desde: datetime | None = None
    hasta: datetime | None = None
    limit: int = 20
    offset: int = 0
    organizador_id: str | None = None  # only this organizer's events
