"""HTTP for e-tickets, check-in and live availability. Thin: parse, call entradas.py / the relay, shape.

| route | who |
|---|---|
| `GET /api/tickets/{id}/qr?formato=svg|png`, `.../pdf`, `GET /api/reservas/{id}/pdf` | the buyer (others: 404) |
| `POST /api/checkin` `{"codigo"}`, `GET /api/checkin/eventos/{evento_id}` | `control`, the event's organizer, `admin` |
| `GET /api/checkin/claves/{evento_id}` | anyone: the event's public key (JWK), to verify codes offline |
| `GET /api/disponibilidad/{evento_id}`, `.../en-vivo` (SSE) | anyone: counts and the seat map, live |

A ticket's code is a bearer credential (whoever shows it enters once), so its QR and PDF are never cached.
"""

from __future__ import annotations

import asyncio
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Depends, Header, Query, Request, Response
from fastapi.responses import StreamingResponse
from pydantic import BaseModel, ConfigDict, Field

from eventflow.auth import ADMIN, CONTROL, ORGANIZADOR, Caller, Principal, con_rol
from eventflow.errors import NotFound
from eventflow.responses import JsonResponse
from services.reservations import entradas, handlers
from services.reservations.domain import ReservaNoEncontrada, Saga
from services.reservations.impresion import Impreso, pdf, qr_png, qr_svg
from services.reservations.live import LeerEstado, Relay
from services.reservations.ticket_keys import jwk
from services.reservations.tickets import Ticket, codigo, tickets_de, tiene_entradas

router = APIRouter(tags=["entradas"])
NO_STORE = {"Cache-Control": "no-store", "X-Content-Type-Options": "nosniff"}
Portero = Annotated[Principal, Depends(con_rol(CONTROL, ORGANIZADOR, ADMIN))]


IdempotencyKey = Annotated[str | None, Header(alias="Idempotency-Key", min_length=1, max_length=200)]


class CheckinIn(BaseModel):
    model_config = ConfigDict(extra="forbid")
    codigo: str = Field(min_length=1, max_length=1000, description="The code read from the ticket's QR")
    evento_id: str | None = Field(
        default=None, max_length=64, description="The event this door admits to: a ticket of another is 409 otro_evento"
    )


async def get_entradas(request: Request) -> entradas.EntradasDeps:
    deps: entradas.EntradasDeps = request.app.state.entradas
    return deps


Deps = Annotated[entradas.EntradasDeps, Depends(get_entradas)]


@router.get("/api/tickets/{ticket_id}/qr", response_model=None)
async def qr(
    ticket_id: str, caller: Caller, deps: Deps, formato: Annotated[Literal["svg", "png"], Query()] = "svg"
) -> Response:
    _, _, code = await entradas.ticket_propio(ticket_id, caller, deps)
    if formato == "png":
        return Response(qr_png(code), media_type="image/png", headers=NO_STORE)
    return Response(qr_svg(code), media_type="image/svg+xml", headers=NO_STORE)


@router.get("/api/tickets/{ticket_id}/pdf", response_model=None)
async def ticket_pdf(ticket_id: str, caller: Caller, deps: Deps) -> Response:
    ticket, saga, code = await entradas.ticket_propio(ticket_id, caller, deps)
    return await _pdf_response([(ticket, code)], saga, deps, f"entrada-{ticket.id}.pdf")


@router.get("/api/reservas/{reserva_id}/pdf", response_model=None)
async def reserva_pdf(reserva_id: str, caller: Caller, deps: Deps) -> Response:
    """Every ticket of one's own confirmed reservation, one page each."""
    try:
        saga = await handlers.consultar(reserva_id, deps.reservas)
    except ReservaNoEncontrada:
        raise entradas.TicketNoEncontrado() from None
    if saga.usuario_id != caller.sub or not tiene_entradas(saga):
        raise entradas.TicketNoEncontrado()
    firmante = await deps.claves.firmante(saga.evento_id)
    pares = [(t, codigo(t, firmante.sign)) for t in tickets_de(saga)]
    return await _pdf_response(pares, saga, deps, f"entradas-{reserva_id}.pdf")


async def _pdf_response(pares: list[tuple[Ticket, str]], saga: Saga, deps: Deps, nombre: str) -> Response:
    evento = await entradas.evento_de(saga.evento_id, deps)
    fecha = evento.fecha.isoformat() if evento else ""
    impresos = [
        Impreso(t.id, code, evento.nombre if evento else "", fecha, evento.lugar if evento else "", t.asiento)
        for t, code in pares
    ]
    body = await asyncio.to_thread(pdf, impresos)  # a few ms of CPU: off the event loop
    headers = {**NO_STORE, "Content-Disposition": f'attachment; filename="{nombre}"'}
    return Response(body, media_type="application/pdf", headers=headers)


@router.post("/api/checkin", response_model=None)
async def checkin(body: CheckinIn, caller: Portero, deps: Deps, idempotency_key: IdempotencyKey = None) -> Response:
    """200 on first entry; 409 `ya_usado` (with `primera_entrada_en`) after; 409 `cancelada`; 422 bad signature.
    The same scan resent by the same account with its Idempotency-Key answers 200 again (the entry it made)."""
    return JsonResponse(await entradas.validar(body.codigo, caller, deps, body.evento_id, idempotency_key))


@router.get("/api/checkin/eventos/{evento_id}", response_model=None)
async def checkins(evento_id: str, caller: Portero, deps: Deps) -> Response:
    return JsonResponse(await entradas.contar_checkins(evento_id, caller, deps))


@router.get("/api/checkin/claves/{evento_id}", response_model=None)
async def clave_publica(evento_id: str, deps: Deps) -> Response:
    """Public: the key that verifies this event's ticket codes (made now if the event exists and has none)."""
    if await entradas.evento_de(evento_id, deps) is None:
        raise NotFound(f"No event with id {evento_id!r}.")
    key = await deps.claves.publica(evento_id, crear=True)
    assert key is not None
    return JsonResponse(jwk(evento_id, key), headers={"Cache-Control": "public, max-age=3600"})


async def leer_estado(request: Request, evento_id: str) -> dict[str, Any]:
    leer: LeerEstado = request.app.state.leer_estado
    return await leer(evento_id)


@router.get("/api/disponibilidad/{evento_id}", response_model=None)
async def disponibilidad(evento_id: str, request: Request) -> Response:
    """Counts and every seat's state (L free, R held, V sold), read from the inventory on the CP side."""
    return JsonResponse(await leer_estado(request, evento_id), headers={"Cache-Control": "no-cache"})


@router.get("/api/disponibilidad/{evento_id}/en-vivo", response_model=None)
async def en_vivo(evento_id: str, request: Request) -> Response:
    """Server-Sent Events: `estado` (the whole map) first, then `cambio` (counts + changed seats) per write."""
    await leer_estado(request, evento_id)  # a 404 problem now, not a stream that fails at once
    relay: Relay = request.app.state.relay
    headers = {"Cache-Control": "no-cache", "X-Accel-Buffering": "no"}
    return StreamingResponse(relay.stream(evento_id), media_type="text/event-stream", headers=headers)
