"""HTTP entry points: translate JSON to commands and queries, and documents back to JSON. Nothing else."""

from __future__ import annotations

from decimal import Decimal
from typing import Annotated, Literal

from fastapi import APIRouter, Depends, Header, Path, Query, Request, Response
from pydantic import BaseModel, Field
from redis.exceptions import RedisError

from eventflow.auth import ADMIN, ORGANIZADOR, Caller, Principal, Prohibido, con_rol
from eventflow.eventstore import OutcomeUnknown
from eventflow.responses import JsonResponse
from services.events import views
from services.events.caching import cached_json
from services.events.deps import DepsDep
from services.events.documents import documento, with_availability
from services.events.domain import CrearEvento, EventoNoEncontrado, Seccion
from services.events.handlers import crear_evento
from services.events.log_fallback import SOURCE_HEADER
from services.events.rules import filtro

router = APIRouter(prefix="/api/eventos", tags=["eventos"])
DATE_TIME = {"format": "date-time"}
# Generous caps on size only; the domain rules (services/events/rules.py) are the real limits.
LongText = Annotated[str, Field(max_length=10_000)]
ShortText = Annotated[str, Field(max_length=1_000)]
IdempotencyKey = Annotated[str | None, Header(alias="Idempotency-Key", min_length=1, max_length=200)]
Organizer = Annotated[Principal, Depends(con_rol(ORGANIZADOR, ADMIN))]


class SeccionIn(BaseModel):
    nombre: ShortText
    asientos: int


class EventoIn(BaseModel):
    nombre: ShortText
    descripcion: LongText = ""
    fecha: Annotated[str, Field(max_length=64, json_schema_extra=DATE_TIME, examples=["2030-05-01T21:00:00-03:00"])]
    lugar: ShortText
    aforo_total: int | None = Field(None, description="Required without sections; with sections omit or give the sum")
    precio: Decimal = Field(description="At most 2 decimals; stored as integer cents")
    categoria: ShortText
    secciones: list[SeccionIn] | None = Field(None, max_length=1_000)
    venta_desde: Annotated[str | None, Field(max_length=64, json_schema_extra=DATE_TIME)] = None
    limite_por_usuario: int | None = Field(
        None,
        description="Tickets one buyer may hold for this event: 1..1000, >= max_por_solicitud. "
        "Omitted: 10, or max_por_solicitud if that is larger",
    )
    max_por_solicitud: int | None = Field(
        None,
        description="Tickets (seats) one reservation may ask for: 1..50. "
        "Omitted: 10, or limite_por_usuario if that is smaller",
    )

    def command(self) -> CrearEvento:
        secciones = None if self.secciones is None else [Seccion(s.nombre, s.asientos) for s in self.secciones]
        return CrearEvento(
            nombre=self.nombre,
            descripcion=self.descripcion,
            fecha=self.fecha,
            lugar=self.lugar,
            aforo_total=self.aforo_total,
            precio=self.precio,
            categoria=self.categoria,
            secciones=secciones,
            venta_desde=self.venta_desde,
            limite_por_usuario=self.limite_por_usuario,
            max_por_solicitud=self.max_por_solicitud,
        )


class SeccionOut(BaseModel):
    nombre: str
    asientos: int
    disponibles: int


class EventoOut(BaseModel):
    id: str
    nombre: str
    descripcion: str
    fecha: str
    lugar: str
    categoria: str
    aforo_total: int
    entradas_disponibles: int
    precio: float
    precio_centimos: int
    secciones: list[SeccionOut] | None
    venta_desde: str | None
    limite_por_usuario: int
    max_por_solicitud: int
    organizador_id: str | None


class PaginaOut(BaseModel):
    items: list[EventoOut]
    total: int
    limit: int
    offset: int
    next_offset: int | None


@router.post("", status_code=201, response_model=EventoOut)
async def crear(body: EventoIn, caller: Organizer, deps: DepsDep, idempotency_key: IdempotencyKey = None) -> Response:
    """An organizador or admin (401 without a valid token, 403 without the role); the event records them as its
    organizer. 201 when created; 200 with the same event when the same caller sends the same Idempotency-Key and
    body again."""
    try:
        creado = await crear_evento(body.command(), caller.sub, deps.write, idempotency_key)
    except OutcomeUnknown as unknown:
        raise unknown.located(f"{router.prefix}/{unknown.aggregate_id}") from None
    doc = with_availability(documento(creado.id, creado.data), {})
    headers = {"Location": f"{router.prefix}/{creado.id}"}
    if idempotency_key is not None:
        headers["Idempotency-Key"] = idempotency_key
    return JsonResponse(doc, status_code=201 if creado.creado else 200, headers=headers)


# Reads are public: they take no caller, so a token sent along (valid or not) is neither checked nor needed.
@router.get("/{evento_id}", response_model=EventoOut)
async def leer(request: Request, evento_id: Annotated[str, Path(max_length=64)], deps: DepsDep) -> Response:
    """From the read model. With Redis unreachable, folded from the event log instead (header `EventFlow-Source:
    log`, not cacheable: no sales counted, so `entradas_disponibles` is the capacity), so that reservations, which
    need the event's price, date and limits, keep working without Redis. After a Redis failure the log answers
    alone for a moment (eventflow.breaker): a hung Redis costs its timeout once, not on every read."""
    if not deps.read_model_breaker.open:
        try:
            doc = await views.evento(deps.redis, evento_id)
        except RedisError as err:
            deps.read_model_breaker.failed()
            deps.from_log.warn(err)
        else:
            if doc is None:
                raise EventoNoEncontrado(evento_id)
            return cached_json(request, doc, deps.cache_max_age)
    doc = await deps.from_log.evento(evento_id)
    if doc is None:
        raise EventoNoEncontrado(evento_id)
    response = cached_json(request, doc, 0)
    response.headers.update({"Cache-Control": "no-store", SOURCE_HEADER: "log"})
    return response


@router.get("", response_model=PaginaOut)
async def listar(
    request: Request,
    deps: DepsDep,
    q: Annotated[
        str | None, Query(max_length=200, description="Up to 8 words; each must start a word of the name")
    ] = None,
    categoria: Annotated[str | None, Query(max_length=200)] = None,
    desde: Annotated[str | None, Query(max_length=64, description="ISO 8601 instant with offset")] = None,
    hasta: Annotated[str | None, Query(max_length=64, description="ISO 8601 instant with offset")] = None,
    limit: Annotated[int, Query(ge=1, le=100)] = 20,
    offset: Annotated[int, Query(ge=0, le=100_000)] = 0,
    organizador_id: Annotated[
        str | None, Query(max_length=64, pattern=r"^[-_a-zA-Z0-9]+$", description="Only this organizer's events")
    ] = None,
) -> Response:
    page = await views.eventos(deps.redis, filtro(q, categoria, desde, hasta, limit, offset, organizador_id))
    return cached_json(request, page, deps.cache_max_age)


@router.get("/{evento_id}/ventas")
async def ventas(
    evento_id: Annotated[str, Path(max_length=64)],
    caller: Caller,
    deps: DepsDep,
    por: Annotated[Literal["hora", "dia"], Query(description="Series buckets: per hour or per day (UTC)")] = "hora",
) -> Response:
    """The event's sales dashboard: its organizer or an admin (403 for anyone else signed in: the event is
    public, its sales are not). Eventual, like every read here: a projection of RESERVAS."""
    doc = await views.evento(deps.redis, evento_id)
    if doc is None:
        raise EventoNoEncontrado(evento_id)
    if not caller.es_admin and (doc.get("organizador_id") is None or doc["organizador_id"] != caller.sub):
        raise Prohibido("Only the event's organizer or an admin can see its sales.")
    body = {
        "evento_id": evento_id,
        "aforo_total": doc["aforo_total"],
        **await views.ventas(deps.redis, evento_id, por == "dia"),
    }
    body["entradas_disponibles"] = doc["entradas_disponibles"]
    return JsonResponse(body, headers={"Cache-Control": "private, no-cache"})
