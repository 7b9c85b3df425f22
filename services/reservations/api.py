"""HTTP: POST /api/reservar, GET /api/reservas/{id} (and /api/reservar/{id}), POST .../cancelar, /metrics.

Thin: build the command, call the handler, shape the answer. Card data stays in this request's memory.
"""

from __future__ import annotations

import uuid
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Header, Request, Response
from fastapi.responses import PlainTextResponse
from pydantic import BaseModel, ConfigDict, Field

from eventflow.responses import JsonResponse
from services.reservations import handlers
from services.reservations.domain import CancelarReserva, ReservarEntradas, Saga, Tarjeta

router = APIRouter(tags=["reservas"])


class PagoIn(BaseModel):
    model_config = ConfigDict(extra="forbid")
    numero_tarjeta: str = Field(min_length=1, max_length=32)
    vencimiento: str = Field(min_length=1, max_length=7, description="MM/YY")
    cvc: str = Field(min_length=1, max_length=4)


class ReservaIn(BaseModel):
    model_config = ConfigDict(extra="forbid")
    usuario_id: str = Field(min_length=1, max_length=64, pattern=r"^[-_a-zA-Z0-9]+$")
    evento_id: str = Field(min_length=1, max_length=64, pattern=r"^[-_a-zA-Z0-9]+$")
    cantidad: int
    asientos: list[Annotated[str, Field(min_length=1, max_length=32)]] | None = Field(default=None, max_length=50)
    pago: PagoIn


def get_deps(request: Request) -> handlers.Deps:
    deps: handlers.Deps = request.app.state.deps
    return deps


DepsDep = Annotated[handlers.Deps, Depends(get_deps)]
IdempotencyKey = Annotated[str | None, Header(alias="Idempotency-Key", min_length=1, max_length=200)]


def reserva_out(saga: Saga) -> dict[str, Any]:
    """The public view: brand and last 4 of the card, never the token; the step history as it happened."""
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
    }


def _answer(saga: Saga, done_status: int, headers: dict[str, str] | None = None) -> JsonResponse:
    headers = dict(headers or {})
    status = done_status
    if not saga.terminada:
        status = 202
        headers["Location"] = f"/api/reservas/{saga.reserva_id}"
    return JsonResponse(reserva_out(saga), status_code=status, headers=headers)


@router.post("/api/reservar", status_code=201, response_model=None)
async def reservar(
    body: ReservaIn, deps: DepsDep, request: Request, idempotency_key: IdempotencyKey = None
) -> Response:
    """201 with the outcome; 200 for a repeated Idempotency-Key; 202 + Location if still running after the wait.

    Without an Idempotency-Key one is generated (IdempotencyKeyMiddleware) and echoed on every answer, errors
    included, so the request can be retried safely with it.
    """
    key = idempotency_key or str(uuid.uuid4())  # the middleware always sets one; direct calls may not
    pago = body.pago
    cmd = ReservarEntradas(
        usuario_id=body.usuario_id,
        evento_id=body.evento_id,
        cantidad=body.cantidad,
        asientos=tuple(body.asientos or ()),
        tarjeta=Tarjeta(pago.numero_tarjeta, pago.vencimiento, pago.cvc),
        idempotency_key=key,
    )
    saga, created = await handlers.reservar(cmd, deps)
    saga = await handlers.esperar(saga, deps, request.app.state.espera_s)
    return _answer(saga, 201 if created else 200, {"Idempotency-Key": key})


@router.get("/api/reservas/{reserva_id}", response_model=None)
@router.get("/api/reservar/{reserva_id}", response_model=None)
async def consultar(reserva_id: str, deps: DepsDep) -> Response:
    """Read from the saga's own record on the CP side: always the latest state."""
    return JsonResponse(reserva_out(await handlers.consultar(reserva_id, deps)))


@router.post("/api/reservas/{reserva_id}/cancelar", response_model=None)
async def cancelar(reserva_id: str, deps: DepsDep, request: Request) -> Response:
    saga = await handlers.cancelar(CancelarReserva(reserva_id), deps)
    saga = await handlers.esperar(saga, deps, request.app.state.espera_s)
    return _answer(saga, 200)


@router.get("/metrics", response_class=PlainTextResponse)
async def metrics(deps: DepsDep) -> str:
    lines = [
        "# TYPE eventflow_reservas_sagas_total counter",
        *(
            f'eventflow_reservas_sagas_total{{resultado="{name}"}} {value}'
            for name, value in sorted(deps.orquestador.metrics.items())
        ),
        "# TYPE eventflow_reservas_sagas_activas gauge",
        f"eventflow_reservas_sagas_activas {deps.orquestador.activas}",
    ]
    return "\n".join(lines) + "\n"
