"""The saga's steps and compensations, each a small function registered by name in PASOS.

Every one is idempotent by reserva_id (inventory ops by reserva_id, payment keys f"{reserva_id}:<op>", events by
id f"{reserva_id}:<outcome>"), so the orchestrator may re-run whichever one was in flight when a process died.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from typing import Any

from eventflow.contracts import RESERVA_CANCELADA, RESERVA_CONFIRMADA, RESERVA_RECHAZADA
from eventflow.eventstore import ConcurrencyConflict, EventStore, NewEvent
from services.reservations.domain import PasoFallido, Saga, ahora_iso
from services.reservations.inventory import (
    Confirmed,
    EventoSinInventario,
    Held,
    HoldRequest,
    InventoryStore,
    LimitExceeded,
    SeatsTaken,
    SoldOut,
)
from services.reservations.payments import Authorization, PaymentGateway, PaymentPermanentError


@dataclass
class SagaDeps:
    inventario: InventoryStore
    pagos: PaymentGateway
    reservas: EventStore
    hold_ttl_s: float = 120.0
    limite_por_usuario: int | None = None


Paso = Callable[[Saga, SagaDeps], Awaitable[str | None]]
_HOLD_FAILURES = {SoldOut: "agotado", SeatsTaken: "asientos_ocupados", LimitExceeded: "limite_por_usuario"}


async def hold(saga: Saga, deps: SagaDeps) -> str | None:
    req = HoldRequest(
        saga.reserva_id,
        saga.evento_id,
        saga.usuario_id,
        saga.cantidad,
        tuple(saga.asientos),
        deps.hold_ttl_s,
        deps.limite_por_usuario,
    )
    try:
        out = await deps.inventario.hold(req)
    except EventoSinInventario:
        out = None
    if isinstance(out, Held):
        saga.datos.update(expira_en=out.expires_at, asientos=list(out.asientos))
        return None
    saga.datos["sin_hold"] = True  # nothing was taken: nothing to release
    raise PasoFallido(_HOLD_FAILURES.get(type(out), "evento_inexistente" if out is None else "asientos_inexistentes"))


async def authorize(saga: Saga, deps: SagaDeps) -> str | None:
    if saga.importe_centimos == 0:
        return "sin_importe"
    out = await deps.pagos.authorize(f"{saga.reserva_id}:authorize", saga.metodo["token"], saga.importe_centimos)
    if not isinstance(out, Authorization):
        raise PasoFallido(out.codigo)
    saga.datos["autorizacion"] = out.id
    return None


async def confirm(saga: Saga, deps: SagaDeps) -> str | None:
    out = await deps.inventario.confirm(saga.evento_id, saga.reserva_id)
    if not isinstance(out, Confirmed):
        raise PasoFallido("reserva_expirada")
    saga.datos["asientos"] = list(out.asientos)
    return None


async def capture(saga: Saga, deps: SagaDeps) -> str | None:
    if "autorizacion" not in saga.datos:
        return "sin_importe"
    try:
        await deps.pagos.capture(f"{saga.reserva_id}:capture", saga.datos["autorizacion"])
    except PaymentPermanentError:
        raise PasoFallido("captura_rechazada") from None
    saga.datos["capturado"] = True
    return None


async def record(saga: Saga, deps: SagaDeps) -> str | None:
    campos = {
        "asientos": saga.datos.get("asientos", []),
        "importe_centimos": saga.importe_centimos,
        "confirmada_en": ahora_iso(),
    }
    await _append_outcome(saga, deps, RESERVA_CONFIRMADA, "confirmada", campos)
    return None


async def release(saga: Saga, deps: SagaDeps) -> str | None:
    await deps.inventario.release(saga.evento_id, saga.reserva_id)
    return None


async def void(saga: Saga, deps: SagaDeps) -> str | None:
    """Void the authorization; if it had been captured after all, refund it instead."""
    if saga.datos.get("capturado"):
        return await refund(saga, deps)
    try:
        await deps.pagos.void(f"{saga.reserva_id}:void", saga.datos["autorizacion"])
    except PaymentPermanentError:
        return await refund(saga, deps)
    return None


async def refund(saga: Saga, deps: SagaDeps) -> str | None:
    if "autorizacion" not in saga.datos:
        return "sin_importe"
    await deps.pagos.refund(f"{saga.reserva_id}:refund", saga.datos["autorizacion"], saga.importe_centimos)
    return None


async def reject(saga: Saga, deps: SagaDeps) -> str | None:
    campos = {"motivo": saga.motivo or "desconocido", "rechazada_en": ahora_iso()}
    await _append_outcome(saga, deps, RESERVA_RECHAZADA, "rechazada", campos)
    return None


async def record_cancel(saga: Saga, deps: SagaDeps) -> str | None:
    campos = {
        "asientos": saga.datos.get("asientos", []),
        "importe_reembolsado_centimos": saga.importe_centimos if "autorizacion" in saga.datos else 0,
        "cancelada_en": ahora_iso(),
    }
    await _append_outcome(saga, deps, RESERVA_CANCELADA, "cancelada", campos, first=False)
    return None


PASOS: dict[str, Paso] = {
    "hold": hold,
    "authorize": authorize,
    "confirm": confirm,
    "capture": capture,
    "record": record,
    "release": release,
    "void": void,
    "reject": reject,
    "refund": refund,
    "record_cancel": record_cancel,
}


async def run_paso(nombre: str, saga: Saga, deps: SagaDeps) -> str | None:
    return await PASOS[nombre](saga, deps)


def compensacion_necesaria(nombre: str, saga: Saga) -> bool:
    if nombre == "void":
        return "autorizacion" in saga.datos
    if nombre == "release":
        return not saga.datos.get("sin_hold")
    return True


async def _append_outcome(
    saga: Saga, deps: SagaDeps, tipo: str, resultado: str, campos: Mapping[str, Any], first: bool = True
) -> None:
    """The fields every Reserva* event opens with (eventflow.contracts), then the outcome's own."""
    data = {
        "reserva_id": saga.reserva_id,
        "usuario_id": saga.usuario_id,
        "evento_id": saga.evento_id,
        "cantidad": saga.cantidad,
        **campos,
    }
    await _append_once(deps.reservas, saga.reserva_id, NewEvent(tipo, data, f"{saga.reserva_id}:{resultado}"), first)


async def _append_once(store: EventStore, reserva_id: str, event: NewEvent, first: bool = True) -> None:
    """Exactly once even beyond the duplicate window: expected version, and on conflict look for our id."""
    events, version = ([], 0) if first else await store.load(reserva_id)
    while not any(e.id == event.id for e in events):
        try:
            await store.append(reserva_id, [event], expected_version=version)
            return
        except ConcurrencyConflict:
            events, version = await store.load(reserva_id)
