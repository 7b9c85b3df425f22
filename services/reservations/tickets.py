"""E-tickets (entradas): one per entry of a confirmed reservation, and the signed code a door scanner checks.

Pure domain, no I/O. A ticket is derived from its reservation, never stored: its id is `f"{reserva_id}-{n}"`
(n = 1..cantidad) and its seat is the reservation's n-th seat (None for general admission). Its code is an
Ed25519 signature, with the event's own key, over the ticket id, the event id and the seat, so a scanner
holding the event's public key can tell a real ticket from a forged one without asking anyone. Ed25519
signatures are deterministic (RFC 8032), so the same ticket always gets the same code: nothing to remember.

Code format (ASCII, QR-friendly): `EF1.<payload>.<signature>`, both base64url without padding; payload is
UTF-8 `"<ticket_id>|<evento_id>|<asiento>"` (no id or seat name contains `|`); the signature covers the ASCII
bytes `EF1.<payload>`, as a JWS signature covers its header and payload.
"""

from __future__ import annotations

import base64
import binascii
from collections.abc import Callable
from dataclasses import dataclass

from eventflow.errors import Conflict, Unprocessable
from services.reservations.domain import Estado, Fase, Saga, es_reserva_id

VERSION = "EF1"
MAX_CODIGO = 600  # generous: a real code is ~230 characters
Firmar = Callable[[bytes], bytes]


@dataclass(frozen=True)
class Ticket:
    id: str
    reserva_id: str
    evento_id: str
    asiento: str | None

    def payload(self) -> str:
        return f"{self.id}|{self.evento_id}|{self.asiento or ''}"


@dataclass(frozen=True)
class CodigoLeido:
    """A code as written on a ticket, parsed but not yet verified."""

    ticket: Ticket
    firmado: bytes  # the bytes the signature covers
    firma: bytes


class CodigoInvalido(Unprocessable):
    """422: not a ticket code of ours, or its signature does not verify (a forged or altered ticket)."""

    slug, title = "codigo-invalido", "Invalid ticket code"

    def __init__(self, detail: str = "This is not a valid ticket code.") -> None:
        super().__init__(detail, motivo="firma_invalida")


class EntradaYaUsada(Conflict):
    slug, title = "ya-usado", "Ticket already used"

    def __init__(self, ticket: Ticket, primera_entrada_en: str) -> None:
        super().__init__(
            "This ticket was already used to enter.",
            motivo="ya_usado",
            primera_entrada_en=primera_entrada_en,
            ticket=ticket_publico(ticket),
        )


class ReservaConEntradasUsadas(Conflict):
    """A reservation someone already entered with is not refunded by a cancellation."""

    slug, title = "entradas-usadas", "Tickets already used"

    def __init__(self, primera_entrada_en: str) -> None:
        super().__init__(
            "A ticket of this reservation was already used to enter: it cannot be cancelled.",
            motivo="entradas_usadas",
            primera_entrada_en=primera_entrada_en,
        )


class EntradaDeOtroEvento(Conflict):
    """Scanned at the door of another event: refused, and not used up."""

    slug, title = "otro-evento", "Ticket for another event"

    def __init__(self, ticket: Ticket) -> None:
        super().__init__("This ticket is for another event.", motivo="otro_evento", ticket=ticket_publico(ticket))


class EntradaAnulada(Conflict):
    """The ticket's reservation was cancelled (or never confirmed): the ticket does not let anyone in."""

    slug, title = "cancelada", "Ticket cancelled"

    def __init__(self, ticket: Ticket) -> None:
        super().__init__(
            "This ticket belongs to a cancelled reservation.", motivo="cancelada", ticket=ticket_publico(ticket)
        )


def ticket_id(reserva_id: str, n: int) -> str:
    return f"{reserva_id}-{n}"


def partes_de(ticket: str) -> tuple[str, int] | None:
    """(reserva_id, n) of a ticket id, or None if it names no ticket."""
    reserva_id, _, n = ticket.rpartition("-")
    if not es_reserva_id(reserva_id) or not (n.isascii() and n.isdigit()) or n != str(int(n)) or int(n) < 1:
        return None
    return reserva_id, int(n)


def tiene_entradas(saga: Saga) -> bool:
    """Only a confirmed reservation lets people in; during its cancellation it already does not."""
    return saga.estado == Estado.CONFIRMADA and saga.fase != Fase.CANCELANDO


def tickets_de(saga: Saga) -> list[Ticket]:
    """The reservation's tickets, in order (also for a cancelled one: the ids stay, the entry does not)."""
    asientos = list(saga.datos.get("asientos") or saga.asientos or [])
    return [
        Ticket(ticket_id(saga.reserva_id, n), saga.reserva_id, saga.evento_id, asientos[n - 1] if asientos else None)
        for n in range(1, saga.cantidad + 1)
    ]


def ticket_de(saga: Saga, n: int) -> Ticket | None:
    found = tickets_de(saga)
    return found[n - 1] if 1 <= n <= len(found) else None


def _b64(raw: bytes) -> str:
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def _unb64(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def codigo(ticket: Ticket, firmar: Firmar) -> str:
    firmado = f"{VERSION}.{_b64(ticket.payload().encode())}"
    return f"{firmado}.{_b64(firmar(firmado.encode()))}"


def leer_codigo(texto: str) -> CodigoLeido:
    """Parse a code (signature not checked here); anything that is not one of ours is CodigoInvalido."""
    texto = texto.strip()
    if len(texto) > MAX_CODIGO or texto.count(".") != 2 or not texto.isascii():
        raise CodigoInvalido()
    version, payload, firma = texto.split(".")
    try:
        partes = _unb64(payload).decode().split("|")
        raw_firma = _unb64(firma)
    except (binascii.Error, ValueError, UnicodeDecodeError):
        raise CodigoInvalido() from None
    if version != VERSION or len(partes) != 3 or len(raw_firma) != 64:
        raise CodigoInvalido()
    ticket, evento_id, asiento = partes
    ids = partes_de(ticket)
    if ids is None or not evento_id:
        raise CodigoInvalido()
    leido = Ticket(ticket, ids[0], evento_id, asiento or None)
    return CodigoLeido(leido, f"{version}.{payload}".encode(), raw_firma)


def ticket_publico(ticket: Ticket) -> dict[str, str | None]:
    """What a door sees of a ticket: no buyer, nothing personal."""
    return {"id": ticket.id, "evento_id": ticket.evento_id, "asiento": ticket.asiento}
