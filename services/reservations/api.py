"""HTTP: POST /api/reservar, GET /api/reservas (the caller's own), GET /api/reservas/{id} (and /api/reservar/{id}),
POST .../cancelar (/metrics, for the internal scraper, is eventflow.metrics's, like every service's).

Thin: build the command, call the handler, shape the answer. Card data stays in this request's memory. Every
/api route needs a signed-in caller (eventflow.auth verifies the token here, whoever forwarded the request);
who may see or cancel which reservation is decided in handlers.py.
"""

from __future__ import annotations

import uuid
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Header, Query, Request, Response
from pydantic import BaseModel, ConfigDict, Field

from eventflow.auth import Caller, Principal, Prohibido
from eventflow.eventstore import OutcomeUnknown
from eventflow.responses import JsonResponse
from services.reservations import entradas, handlers, mias
from services.reservations.domain import CancelarReserva, ReservarEntradas, Saga, Tarjeta, reserva_id_para

router = APIRouter(tags=["reservas"])


class PagoIn(BaseModel):
    model_config = ConfigDict(extra="forbid")
    numero_tarjeta: str = Field(min_length=1, max_length=32)
    vencimiento: str = Field(min_length=1, max_length=7, description="MM/YY")
    cvc: str = Field(min_length=1, max_length=4)


class ReservaIn(BaseModel):
    model_config = ConfigDict(extra="forbid")
    usuario_id: str | None = Field(
        default=None,
        min_length=1,
        max_length=64,
        pattern=r"^[-_a-zA-Z0-9]+$",
        description="The buyer: the signed-in caller (may be omitted); anyone else's id is refused with 403",
    )
    evento_id: str = Field(min_length=1, max_length=64, pattern=r"^[-_a-zA-Z0-9]+$")
    cantidad: int
    asientos: list[Annotated[str, Field(min_length=1, max_length=32)]] | None = Field(default=None, max_length=50)
    pago: PagoIn


async def get_deps(request: Request) -> handlers.Deps:
    deps: handlers.Deps = request.app.state.deps
    return deps


DepsDep = Annotated[handlers.Deps, Depends(get_deps)]
IdempotencyKey = Annotated[str | None, Header(alias="Idempotency-Key", min_length=1, max_length=200)]


def reserva_out(saga: Saga, tickets: list[dict[str, Any]] | None = None) -> dict[str, Any]:
    """The public view: brand and last 4 of the card, never the token; the step history as it happened; the
    tickets (id, signed code, seat) once it is confirmed (entradas.con_codigos)."""
    reembolso = saga.importe_centimos if saga.estado == "cancelada" and "autorizacion" in saga.datos else 0
    return {
        "id": saga.reserva_id,
        "estado": saga.estado,
        "motivo": saga.motivo,
        "usuario_id": saga.usuario_id,
        "evento_id": saga.evento_id,
        "importe_centimos": saga.importe_centimos,
        "entradas": {"cantidad": saga.cantidad, "asientos": saga.datos.get("asientos", saga.asientos)},
        "pago": {"marca": saga.metodo.get("marca"), "ultimos4": saga.metodo.get("ultimos4")},
        "en_curso": not saga.terminada,
        "historial": saga.historial,
        "creada_en": saga.creada_en,
        "actualizada_en": saga.actualizada_en,
        "reembolso_centimos": reembolso,
        "tickets": tickets or [],
    }


async def _answer(
    saga: Saga, request: Request, caller: Principal, done_status: int, headers: dict[str, str] | None = None
) -> JsonResponse:
    headers = dict(headers or {})
    status = done_status
    if not saga.terminada:
        status = 202
        headers["Location"] = f"/api/reservas/{saga.reserva_id}"
    return JsonResponse(reserva_out(saga, await _tickets(saga, request, caller)), status_code=status, headers=headers)


async def _tickets(saga: Saga, request: Request, caller: Principal) -> list[dict[str, Any]]:
    return await entradas.con_codigos(saga, request.app.state.entradas.claves, caller.sub == saga.usuario_id)


def comprador(caller: Principal, usuario_id: str | None) -> str:
    """One buys in one's own name only: another user's id is 403 for everyone (an admin too: their purchases
    would use up that user's per-event limit). A service's token buys nothing."""
    if caller.es_servicio:
        raise Prohibido("A service cannot make reservations.")
    if usuario_id is not None and usuario_id != caller.sub:
        raise Prohibido("A reservation is made in the signed-in buyer's own name: omit usuario_id or send yours.")
    return caller.sub


@router.post("/api/reservar", status_code=201, response_model=None)
async def reservar(
    body: ReservaIn, caller: Caller, deps: DepsDep, request: Request, idempotency_key: IdempotencyKey = None
) -> Response:
    """201 with the outcome; 200 for a repeated Idempotency-Key; 202 + Location if still running after the wait.

    Needs a signed-in buyer (401), buying in their own name (403). Without an Idempotency-Key one is generated
    (IdempotencyKeyMiddleware) and echoed on every answer, errors included, so the request can be retried safely.
    """
    key = idempotency_key or str(uuid.uuid4())  # the middleware always sets one; direct calls may not
    usuario_id = comprador(caller, body.usuario_id)
    pago = body.pago
    cmd = ReservarEntradas(
        usuario_id=usuario_id,
        evento_id=body.evento_id,
        cantidad=body.cantidad,
        asientos=tuple(body.asientos or ()),
        tarjeta=Tarjeta(pago.numero_tarjeta, pago.vencimiento, pago.cvc),
        idempotency_key=key,
        reserva_id=reserva_id_para(deps.ids, usuario_id, key),
    )
    try:
        saga, created = await handlers.reservar(cmd, deps)
        saga = await handlers.esperar(saga, deps, request.app.state.espera_s)
        with handlers.reserva_guardada(saga.reserva_id):  # the tickets' signing key may be out of reach
            return await _answer(saga, request, caller, 201 if created else 200, {"Idempotency-Key": key})
    except OutcomeUnknown as unknown:  # stored, or maybe: say where to look
        raise unknown.located(f"/api/reservas/{unknown.aggregate_id}") from None


@router.get("/api/reservas", response_model=None)
async def mis_reservas(
    caller: Caller,
    deps: DepsDep,
    request: Request,
    limit: Annotated[int, Query(ge=1, le=mias.MAX_PAGINA)] = 20,
    offset: Annotated[int, Query(ge=0, le=100_000)] = 0,
) -> Response:
    """ "My tickets": the caller's own confirmed reservations, newest first, each as it stands now (mias.py)."""
    if caller.es_servicio:
        raise Prohibido("A service has no reservations.")
    state = request.app.state
    sagas, total = await mias.pagina(state.redis, state.generation, caller.sub, limit, offset, deps)
    items = [reserva_out(saga, await _tickets(saga, request, caller)) for saga in sagas]
    return JsonResponse(mias.pagina_out(items, total, limit, offset), headers={"Cache-Control": "private, no-store"})


@router.get("/api/reservas/{reserva_id}", response_model=None)
@router.get("/api/reservar/{reserva_id}", response_model=None)
async def consultar(reserva_id: str, caller: Caller, deps: DepsDep, request: Request) -> Response:
    """Its buyer, its event's organizer or an admin (anyone else: 404, as for an unknown id). Read from the saga's
    own record on the CP side: always the latest state."""
    saga = await handlers.ver(reserva_id, caller, deps)
    return JsonResponse(reserva_out(saga, await _tickets(saga, request, caller)))


@router.post("/api/reservas/{reserva_id}/cancelar", response_model=None)
async def cancelar(reserva_id: str, caller: Caller, deps: DepsDep, request: Request) -> Response:
    """Its buyer or an admin; 403 for its event's organizer, 404 for anyone who may not read it."""
    actual = await handlers.autorizar_cancelacion(reserva_id, caller, deps)
    await entradas.anular_entradas(actual, request.app.state.entradas)
    saga = await handlers.cancelar(CancelarReserva(reserva_id), deps)
    saga = await handlers.esperar(saga, deps, request.app.state.espera_s)
    return await _answer(saga, request, caller, 200)
