"""Service layer for e-tickets and check-in: a reservation's tickets with their codes, a ticket for its owner,
and the door's decision.

Who may do what:
- the codes of a reservation's tickets: whoever may read the reservation (its buyer, its event's organizer, admin);
- a ticket's QR and PDF: its buyer only (anyone else gets the unknown ticket's 404);
- check-in: `control`, the event's organizer, `admin`. The answer names the ticket, its event and seat, never
  the buyer: door staff see what entry needs and nothing more.

Check-in order: the code's signature (offline-verifiable: 422 if it does not verify), the caller's right over the
event, the reservation's state on the CP side (409 `cancelada` once a cancellation has started), then the claim
(create-if-absent in CHECKIN: the first scan wins, every later one is 409 `ya_usado` with the first one's time).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

from eventflow.auth import ADMIN, CONTROL, ORGANIZADOR, Principal, Prohibido
from eventflow.errors import NotFound
from services.reservations import handlers
from services.reservations.checkin_store import CheckinStore
from services.reservations.domain import EventoInfo, ReservaNoEncontrada, Saga
from services.reservations.ticket_keys import TicketKeys
from services.reservations.tickets import (
    CodigoInvalido,
    EntradaAnulada,
    EntradaDeOtroEvento,
    EntradaYaUsada,
    ReservaConEntradasUsadas,
    Ticket,
    codigo,
    leer_codigo,
    partes_de,
    ticket_de,
    ticket_publico,
    tickets_de,
    tiene_entradas,
)

EVENTO_ID = re.compile(r"^[-_a-zA-Z0-9]{1,64}$")


class TicketNoEncontrado(NotFound):
    slug, title = "ticket-no-encontrado", "Ticket not found"

    def __init__(self) -> None:
        super().__init__("no ticket has this id")


@dataclass
class EntradasDeps:
    reservas: handlers.Deps
    claves: TicketKeys
    checkins: CheckinStore


async def con_codigos(saga: Saga, claves: TicketKeys, del_comprador: bool = True) -> list[dict[str, Any]]:
    """`tickets: [{id, codigo, asiento}]` of a confirmed reservation; none for any other state. The code is the
    ticket itself (whoever holds it gets in): only its buyer gets it; the organizer or an admin sees the rest."""
    if not tiene_entradas(saga):
        return []
    if not del_comprador:
        return [ticket_publico(t) for t in tickets_de(saga)]
    firmante = await claves.firmante(saga.evento_id)
    return [{**ticket_publico(t), "codigo": codigo(t, firmante.sign)} for t in tickets_de(saga)]


async def ticket_propio(ticket_id: str, caller: Principal, deps: EntradasDeps) -> tuple[Ticket, Saga, str]:
    """A ticket of a confirmed reservation of the caller's, with its code; anyone else: the unknown id's 404."""
    partes = partes_de(ticket_id)
    if partes is None:
        raise TicketNoEncontrado()
    try:
        saga = await handlers.consultar(partes[0], deps.reservas)
    except ReservaNoEncontrada:
        raise TicketNoEncontrado() from None
    ticket = ticket_de(saga, partes[1])
    if ticket is None or saga.usuario_id != caller.sub or not tiene_entradas(saga):
        raise TicketNoEncontrado()
    firmante = await deps.claves.firmante(saga.evento_id)
    return ticket, saga, codigo(ticket, firmante.sign)


async def evento_de(evento_id: str, deps: EntradasDeps) -> EventoInfo | None:
    return await deps.reservas.eventos.evento(evento_id) if EVENTO_ID.match(evento_id) else None


async def puede_controlar(caller: Principal, evento_id: str, deps: EntradasDeps) -> bool:
    """Door staff and admins control every event; an organizer only their own."""
    if caller.tiene(CONTROL, ADMIN):
        return True
    if not caller.tiene(ORGANIZADOR):
        return False
    evento = await evento_de(evento_id, deps)
    return evento is not None and evento.organizador_id == caller.sub


async def anular_entradas(saga: Saga, deps: EntradasDeps) -> None:
    """Before a confirmed reservation is cancelled: void each ticket on the check-in claim, so a door scan and
    the cancellation racing on a ticket have one winner; a ticket already used refuses the cancellation."""
    if not tiene_entradas(saga):
        return
    for ticket in tickets_de(saga):
        usada_en = await deps.checkins.anular(ticket.evento_id, ticket.id)
        if usada_en is not None:
            raise ReservaConEntradasUsadas(usada_en)


async def validar(
    texto: str, caller: Principal, deps: EntradasDeps, puerta_de: str | None = None, escaneo: str | None = None
) -> dict[str, Any]:
    """The door's decision on one scanned code (see the module's docstring for the order); `escaneo` makes a
    resent scan answer as the first time."""
    leido = leer_codigo(texto)
    ticket = leido.ticket
    if not EVENTO_ID.match(ticket.evento_id) or not await deps.claves.verifica(
        ticket.evento_id, leido.firmado, leido.firma
    ):
        raise CodigoInvalido("The ticket's signature does not verify: it was not issued by us, or it was altered.")
    if not await puede_controlar(caller, ticket.evento_id, deps):
        raise Prohibido("Only door staff, an admin or this event's organizer can check this ticket in.")
    if puerta_de is not None and puerta_de != ticket.evento_id:
        raise EntradaDeOtroEvento(ticket)  # before the claim: the ticket stays good for its own event
    try:
        saga = await handlers.consultar(ticket.reserva_id, deps.reservas)
    except ReservaNoEncontrada:
        raise EntradaAnulada(ticket) from None
    partes = partes_de(ticket.id)
    if partes is None or ticket_de(saga, partes[1]) != ticket:
        raise CodigoInvalido("The ticket does not match its reservation.")
    if not tiene_entradas(saga):
        raise EntradaAnulada(ticket)
    entrada = await deps.checkins.registrar(ticket.evento_id, ticket.id, caller.sub, escaneo)
    if entrada.anulada:
        raise EntradaAnulada(ticket)  # its cancellation voided it first
    if not entrada.primera:
        raise EntradaYaUsada(ticket, entrada.en)
    evento = await evento_de(ticket.evento_id, deps)
    return {
        "estado": "valida",
        "ticket": ticket_publico(ticket),
        "entrada_en": entrada.en,
        "evento": {"id": ticket.evento_id, "nombre": evento.nombre if evento else None},
    }


async def contar_checkins(evento_id: str, caller: Principal, deps: EntradasDeps) -> dict[str, Any]:
    if await evento_de(evento_id, deps) is None:
        raise NotFound(f"No event with id {evento_id!r}.")
    if not await puede_controlar(caller, evento_id, deps):
        raise Prohibido("Only door staff, an admin or this event's organizer can see its check-ins.")
    return {"evento_id": evento_id, "entradas_validadas": await deps.checkins.contar(evento_id)}
