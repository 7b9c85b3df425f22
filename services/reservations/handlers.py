"""Service layer: the command handlers behind the API, and the saga's steps as small handlers by name.

Every step and compensation is idempotent by reserva_id (inventory ops by reserva_id, payment keys
f"{reserva_id}:<op>", events by id f"{reserva_id}:<outcome>"), so the orchestrator may re-run whichever one
was in flight when a process died.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING

from eventflow.contracts import RESERVA_CANCELADA, RESERVA_CONFIRMADA, RESERVA_RECHAZADA
from eventflow.errors import Conflict
from eventflow.eventstore import ConcurrencyConflict, EventStore, NewEvent
from services.reservations.chain import Manejador, Solicitud
from services.reservations.domain import (
    PASOS_CANCELACION,
    CancelarReserva,
    ClaveReutilizada,
    Estado,
    Fase,
    PasoFallido,
    ReservaNoCancelable,
    ReservaNoEncontrada,
    ReservarEntradas,
    Saga,
    ahora_iso,
)
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
from services.reservations.saga_store import SagaStore, SagaTomada, SagaYaExiste

if TYPE_CHECKING:
    from services.reservations.saga import Orquestador


# --- saga steps ----------------------------------------------------------------------------------
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
    data = {
        "reserva_id": saga.reserva_id,
        "usuario_id": saga.usuario_id,
        "evento_id": saga.evento_id,
        "cantidad": saga.cantidad,
        "asientos": saga.datos.get("asientos", []),
        "importe_centimos": saga.importe_centimos,
        "confirmada_en": ahora_iso(),
    }
    await _append_once(
        deps.reservas, saga.reserva_id, NewEvent(RESERVA_CONFIRMADA, data, f"{saga.reserva_id}:confirmada")
    )
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
    data = {
        "reserva_id": saga.reserva_id,
        "usuario_id": saga.usuario_id,
        "evento_id": saga.evento_id,
        "cantidad": saga.cantidad,
        "motivo": saga.motivo or "desconocido",
        "rechazada_en": ahora_iso(),
    }
    await _append_once(
        deps.reservas, saga.reserva_id, NewEvent(RESERVA_RECHAZADA, data, f"{saga.reserva_id}:rechazada")
    )
    return None


async def record_cancel(saga: Saga, deps: SagaDeps) -> str | None:
    data = {
        "reserva_id": saga.reserva_id,
        "usuario_id": saga.usuario_id,
        "evento_id": saga.evento_id,
        "cantidad": saga.cantidad,
        "asientos": saga.datos.get("asientos", []),
        "importe_reembolsado_centimos": saga.importe_centimos if "autorizacion" in saga.datos else 0,
        "cancelada_en": ahora_iso(),
    }
    event = NewEvent(RESERVA_CANCELADA, data, f"{saga.reserva_id}:cancelada")
    await _append_once(deps.reservas, saga.reserva_id, event, first=False)
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


async def _append_once(store: EventStore, reserva_id: str, event: NewEvent, first: bool = True) -> None:
    """Exactly once even beyond the duplicate window: expected version, and on conflict look for our id."""
    events, version = ([], 0) if first else await store.load(reserva_id)
    while not any(e.id == event.id for e in events):
        try:
            await store.append(reserva_id, [event], expected_version=version)
            return
        except ConcurrencyConflict:
            events, version = await store.load(reserva_id)


# --- command handlers ----------------------------------------------------------------------------
@dataclass
class Deps:
    store: SagaStore
    orquestador: Orquestador
    cadena: Manejador
    owner: str
    lease_s: float


def nueva_saga(cmd: ReservarEntradas, solicitud: Solicitud) -> Saga:
    assert solicitud.metodo is not None and solicitud.importe_centimos is not None, "the chain is incomplete"
    metodo = solicitud.metodo
    saga = Saga(
        reserva_id=cmd.reserva_id,
        usuario_id=cmd.usuario_id,
        evento_id=cmd.evento_id,
        cantidad=cmd.cantidad,
        asientos=list(cmd.asientos),
        importe_centimos=solicitud.importe_centimos,
        metodo={"token": metodo.token, "marca": metodo.marca, "ultimos4": metodo.ultimos4},
        huella=cmd.huella(),
    )
    saga.registrar("release")  # the hold's compensation, registered before the hold runs
    return saga


async def reservar(cmd: ReservarEntradas, deps: Deps) -> tuple[Saga, bool]:
    """Returns (saga, created). Nothing is held or charged before the chain passes."""
    existing = await deps.store.get(cmd.reserva_id)
    if existing is not None:
        return _same_request(existing, cmd), False
    solicitud = await deps.cadena.manejar(Solicitud(cmd))
    saga = nueva_saga(cmd, solicitud)
    saga.arrendar(deps.owner, deps.lease_s)
    try:
        await deps.store.create(saga)
    except SagaYaExiste:
        existing = await deps.store.get(cmd.reserva_id)
        if existing is None:
            raise Conflict("the reservation is being created; retry") from None
        return _same_request(existing, cmd), False
    deps.orquestador.start(saga)
    return saga, True


def _same_request(saga: Saga, cmd: ReservarEntradas) -> Saga:
    if saga.huella != cmd.huella():
        raise ClaveReutilizada("this Idempotency-Key was used for a different reservation request")
    return saga


async def consultar(reserva_id: str, deps: Deps) -> Saga:
    saga = await deps.store.get(reserva_id)
    if saga is None:
        raise ReservaNoEncontrada("no reservation has this id")
    return saga


async def esperar(saga: Saga, deps: Deps, timeout: float) -> Saga:
    """The saga once it has an outcome, or as it stands when `timeout` runs out."""
    task = deps.orquestador.running(saga.reserva_id)
    if task is not None:
        done, _ = await asyncio.wait({task}, timeout=timeout)
        return task.result() if done else saga
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while not saga.terminada and loop.time() < deadline:
        await asyncio.sleep(0.05)
        saga = await consultar(saga.reserva_id, deps)
    return saga


async def cancelar(cmd: CancelarReserva, deps: Deps) -> Saga:
    """Starts (once) the cancellation saga of a confirmed reservation; repeating it returns the same."""
    for _ in range(5):
        saga = await consultar(cmd.reserva_id, deps)
        if saga.estado == Estado.CANCELADA or saga.fase == Fase.CANCELANDO:
            return saga
        if saga.estado != Estado.CONFIRMADA or not saga.terminada:
            raise ReservaNoCancelable(f"a reservation in estado {saga.estado} cannot be cancelled", estado=saga.estado)
        saga.fase, saga.paso = Fase.CANCELANDO, PASOS_CANCELACION[0]
        saga.anotar("cancelacion", "solicitada")
        saga.arrendar(deps.owner, deps.lease_s)
        try:
            await deps.store.save(saga)
        except SagaTomada:
            continue
        deps.orquestador.start(saga)
        return saga
    raise Conflict("the reservation kept changing; retry")
