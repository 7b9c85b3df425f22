"""The event (espectáculo) aggregate: what a valid event is, decided before anything is written."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from decimal import Decimal

from eventflow.errors import NotFound, Unprocessable


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
