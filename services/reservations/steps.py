"""The saga's steps and compensations, each a small function registered by name in PASOS.

Every one is idempotent by reserva_id (inventory ops by reserva_id, payment keys f"{reserva_id}:<op>", events by
id f"{reserva_id}:<outcome>"), so the orchestrator may re-run whichever one was in flight when a process died.
The steps that end a saga (record, reject, record_cancel) append an outcome event carrying the whole finished
reservation (`Saga.resultado`): it is the reservation's record once the saga's own key is purged.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from typing import Any

from eventflow.contracts import RESERVA_CANCELADA, RESERVA_CONFIRMADA, RESERVA_RECHAZADA
from eventflow.eventstore import ConcurrencyConflict, EventStore, NewEvent
from services.reservations.domain import Estado, PasoFallido, Saga, ahora_iso
from services.reservations.inventory import (
    Confirmed,
    EventoSinInventario,
    Held,
    HoldRequest,
    InventoryStore,
    LimitExceeded,
    SaleRecord,
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
    limite = saga.limite_por_usuario if saga.limite_por_usuario is not None else deps.limite_por_usuario
    req = HoldRequest(
        saga.reserva_id, saga.evento_id, saga.usuario_id, saga.cantidad, tuple(saga.asientos), deps.hold_ttl_s, limite
    )
    try:
        out = await deps.inventario.hold(req)
    except EventoSinInventario:
        out = None
    if isinstance(out, Held):
        saga.datos.pop("sin_hold", None)
        saga.datos.update(expira_en=out.expires_at, asientos=list(out.asientos))
        return None
    saga.datos["sin_hold"] = True  # nothing was taken: nothing to release
    raise PasoFallido(_HOLD_FAILURES.get(type(out), "evento_inexistente" if out is None else "asientos_inexistentes"))


async def authorize(saga: Saga, deps: SagaDeps) -> str | None:
    if saga.importe_centimos == 0:
        return "sin_importe"
    saga.pago_enviado = True
    try:
        out = await deps.pagos.authorize(_key(saga, "authorize"), saga.metodo["token"], saga.importe_centimos)
    except PaymentPermanentError:
        raise PasoFallido("pago_no_procesable") from None  # e.g. a token the processor no longer knows
    if not isinstance(out, Authorization):
        saga.datos["pago_rechazado"] = out.codigo  # a definite no: nothing is held, nothing to void
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
        await deps.pagos.capture(_key(saga, "capture"), saga.datos["autorizacion"])
    except PaymentPermanentError:
        raise PasoFallido("captura_rechazada") from None
    saga.datos["capturado"] = True
    return None


async def record(saga: Saga, deps: SagaDeps) -> str | None:
    """The sale's record (then the orchestrator lets the inventory forget it: settle)."""
    campos = {"confirmada_en": ahora_iso()}
    await _append_outcome(saga, deps, RESERVA_CONFIRMADA, Estado.CONFIRMADA, "record", campos)
    return None


async def release(saga: Saga, deps: SagaDeps) -> str | None:
    """Give back a hold (or a confirmation not yet recorded) and the buyer's quota."""
    try:
        await deps.inventario.release(saga.evento_id, saga.reserva_id, saga.usuario_id)
    except EventoSinInventario:
        return "sin_inventario"  # no inventory, so nothing was ever taken
    return None


async def void(saga: Saga, deps: SagaDeps) -> str | None:
    """Void by the authorize call's key, so it works when every answer to the authorize was lost; if the
    authorization had been captured after all, refund it instead."""
    if saga.datos.get("capturado"):
        return await refund(saga, deps)
    try:
        await deps.pagos.void(_key(saga, "void"), _key(saga, "authorize"))
    except PaymentPermanentError:
        if "autorizacion" not in saga.datos:
            raise
        return await refund(saga, deps)
    return None


async def refund(saga: Saga, deps: SagaDeps) -> str | None:
    if "autorizacion" not in saga.datos:
        return "sin_importe"
    await deps.pagos.refund(_key(saga, "refund"), saga.datos["autorizacion"], saga.importe_centimos)
    return None


async def return_sale(saga: Saga, deps: SagaDeps) -> str | None:
    """Cancellation: un-sell the reservation's tickets (the inventory keeps only counts once a sale is settled)."""
    venta = SaleRecord(saga.reserva_id, saga.usuario_id, saga.cantidad, tuple(saga.datos.get("asientos", [])))
    await deps.inventario.return_sale(saga.evento_id, venta)
    return None


async def reject(saga: Saga, deps: SagaDeps) -> str | None:
    campos = {"motivo": saga.motivo or "desconocido", "rechazada_en": ahora_iso()}
    await _append_outcome(saga, deps, RESERVA_RECHAZADA, Estado.RECHAZADA, "reject", campos, saga.motivo)
    return None


async def record_cancel(saga: Saga, deps: SagaDeps) -> str | None:
    campos = {
        "importe_reembolsado_centimos": saga.importe_centimos if "autorizacion" in saga.datos else 0,
        "cancelada_en": ahora_iso(),
    }
    await _append_outcome(saga, deps, RESERVA_CANCELADA, Estado.CANCELADA, "record_cancel", campos, first=False)
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
    "return_sale": return_sale,
    "record_cancel": record_cancel,
}


async def run_step(nombre: str, saga: Saga, deps: SagaDeps) -> str | None:
    return await PASOS[nombre](saga, deps)


def compensacion_necesaria(nombre: str, saga: Saga) -> bool:
    """Skip only what certainly did nothing: a hold that was refused, an authorize that was declined (or had
    nothing to charge, or that this very process never sent). An authorize that may have been sent is always
    voided (by its key)."""
    if nombre == "void":
        sent = saga.pago_enviado is not False  # unknown after a restart: the run that died may have sent it
        return saga.importe_centimos > 0 and "pago_rechazado" not in saga.datos and sent
    if nombre == "release":
        return not saga.datos.get("sin_hold")
    return True


def _key(saga: Saga, operation: str) -> str:
    return f"{saga.reserva_id}:{operation}"


async def _append_outcome(
    saga: Saga,
    deps: SagaDeps,
    tipo: str,
    estado: Estado,
    paso: str,
    campos: Mapping[str, Any],
    detalle: str | None = None,
    *,
    first: bool = True,
) -> None:
    """The fields every Reserva* event opens with (eventflow.contracts), the finished reservation, the outcome's own."""
    resultado = saga.resultado()
    last: dict[str, Any] = {"paso": paso, "resultado": "ok", "en": ahora_iso()}
    if detalle:
        last["detalle"] = detalle
    resultado["historial"] = [*saga.historial, last]
    data = {
        "reserva_id": saga.reserva_id,
        "usuario_id": saga.usuario_id,
        "evento_id": saga.evento_id,
        "cantidad": saga.cantidad,
        **resultado,
        "estado": estado.value,
        "motivo": saga.motivo if estado == Estado.RECHAZADA else None,
        **campos,
    }
    event = NewEvent(tipo, data, f"{saga.reserva_id}:{estado.value}")
    await _append_once(deps.reservas, saga.reserva_id, event, first)


async def _append_once(store: EventStore, reserva_id: str, event: NewEvent, first: bool = True) -> None:
    """Exactly once even beyond the duplicate window: expected version, and on conflict look for our id."""
    events, version = ([], 0) if first else await store.load(reserva_id)
    while not any(e.id == event.id for e in events):
        try:
            await store.append(reserva_id, [event], expected_version=version)
            return
        except ConcurrencyConflict:
            events, version = await store.load(reserva_id)
