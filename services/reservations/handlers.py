"""Service layer: the command handlers behind the API. They start a saga or read it; the orchestrator
(saga.py) drives it through the steps in steps.py.

A reservation lives in the SAGAS bucket while its saga runs and in the RESERVAS stream once it has finished
(saga_store.py), so every read looks in both, in that order.

Who may do what: a reservation is read by its buyer, the organizer of its event and an admin; anyone else gets the
404 an unknown id gets, so its existence is not revealed. It is cancelled by its buyer or an admin; the organizer,
who may read it, gets 403 (not 404: they know it exists).
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass

import nats.errors

from eventflow.auth import ORGANIZADOR, Principal, Prohibido
from eventflow.errors import DEPENDENCY_ERRORS, Conflict, Unavailable
from eventflow.eventstore import OutcomeUnknown
from services.reservations.catalog import CatalogoEventos
from services.reservations.chain import Manejador, Solicitud
from services.reservations.domain import (
    PASOS_CANCELACION,
    CancelarReserva,
    ClaveReutilizada,
    Estado,
    Fase,
    Ids,
    ReservaNoCancelable,
    ReservaNoEncontrada,
    ReservarEntradas,
    Saga,
    es_reserva_id,
)
from services.reservations.saga import Orquestador
from services.reservations.saga_store import ReservationArchive, SagaStore, SagaTomada, SagaYaExiste

NO_SUCH_RESERVATION = "no reservation has this id"  # one answer for an unknown id and one the caller may not see
# What a dependency raises when it does not answer (a NATS error, Redis, a timeout): once the saga is stored, none
# of them says anything about the reservation.
FALLOS_DE_DEPENDENCIA: tuple[type[Exception], ...] = (Unavailable, nats.errors.Error, *DEPENDENCY_ERRORS)


@dataclass
class Deps:
    store: SagaStore
    archivo: ReservationArchive
    orquestador: Orquestador
    cadena: Manejador
    owner: str
    lease_s: float
    eventos: CatalogoEventos  # whose event it is: its organizer may read its reservations
    ids: Ids  # reservation ids from Idempotency-Keys (keyed)


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
        limite_por_usuario=solicitud.evento.limite_por_usuario if solicitud.evento else None,
    )
    saga.registrar_antes_del_pivote()
    return saga


async def reservar(cmd: ReservarEntradas, deps: Deps) -> tuple[Saga, bool]:
    """Returns (saga, created). Nothing is held or charged before the chain passes."""
    existing = await _find(cmd.reserva_id, deps, direct=True)  # "absent" is checked on the leader after the create
    if existing is not None:
        return _same_request(existing, cmd), False
    solicitud = await deps.cadena.manejar(Solicitud(cmd))
    saga = nueva_saga(cmd, solicitud)
    saga.arrendar(deps.owner, deps.lease_s)
    try:
        await deps.store.create(saga)
    except SagaYaExiste:
        existing = await _find(cmd.reserva_id, deps)
        if existing is None:
            raise Conflict("the reservation is being created; retry") from None
        return _same_request(existing, cmd), False
    try:
        finished = await deps.archivo.get(cmd.reserva_id)
    except Unavailable:  # the saga is stored and its supervisor will run it: not "nothing stored"
        raise OutcomeUnknown(cmd.reserva_id) from None
    if finished is not None:
        # A twin request ran its whole saga between our look and our create: ours must not run again.
        await deps.store.finish(saga)
        return _same_request(finished, cmd), False
    deps.orquestador.start(saga)
    return saga, True


def _same_request(saga: Saga, cmd: ReservarEntradas) -> Saga:
    if saga.huella != cmd.huella():
        raise ClaveReutilizada("this Idempotency-Key was used for a different reservation request")
    return saga


def _outcome_pending(saga: Saga) -> Estado | None:
    """The outcome a saga may have stored already, its purge being what is left: then the archive is newer."""
    if saga.fase == Fase.ADELANTE and saga.paso in ("capture", "record"):  # no write between them: saga.py
        return Estado.CONFIRMADA
    if saga.fase == Fase.COMPENSANDO:
        return Estado.RECHAZADA
    if saga.fase == Fase.CANCELANDO and saga.paso == "record_cancel":
        return Estado.CANCELADA
    return None


async def _find(reserva_id: str, deps: Deps, *, direct: bool = False) -> Saga | None:
    """The reservation as it stands: the saga in flight, unless the outcome it was about to store is stored."""
    saga = await deps.store.get(reserva_id)
    if saga is None:
        return await deps.archivo.get(reserva_id, direct=direct)
    if (pending := _outcome_pending(saga)) is None:
        return saga
    archived = await deps.archivo.get(reserva_id)
    return archived if archived is not None and archived.estado == pending else saga


async def consultar(reserva_id: str, deps: Deps) -> Saga:
    saga = await _find(reserva_id, deps) if es_reserva_id(reserva_id) else None
    if saga is None:
        raise ReservaNoEncontrada(NO_SUCH_RESERVATION)
    return saga


async def ver(reserva_id: str, caller: Principal, deps: Deps) -> Saga:
    """The reservation, for its buyer, its event's organizer or an admin; for anyone else, the unknown id's 404."""
    saga = await consultar(reserva_id, deps)
    if not await _puede_ver(caller, saga, deps):
        raise ReservaNoEncontrada(NO_SUCH_RESERVATION)
    return saga


async def autorizar_cancelacion(reserva_id: str, caller: Principal, deps: Deps) -> Saga:
    """Its buyer or an admin; 403 for the event's organizer (cancelling a whole event is another operation),
    404 for anyone who may not even read it."""
    saga = await ver(reserva_id, caller, deps)
    if caller.sub != saga.usuario_id and not caller.es_admin:
        raise Prohibido("Only the buyer or an admin can cancel this reservation.")
    return saga


async def _puede_ver(caller: Principal, saga: Saga, deps: Deps) -> bool:
    if caller.sub == saga.usuario_id or caller.es_admin:
        return True
    if not caller.tiene(ORGANIZADOR):
        return False  # no lookup for a plain stranger
    evento = await deps.eventos.evento(saga.evento_id)
    return evento is not None and evento.organizador_id == caller.sub


@contextmanager
def reserva_guardada(reserva_id: str) -> Iterator[None]:
    """Around what follows a stored saga: a dependency failing there answers OutcomeUnknown (the reservation
    exists and runs on), never the plain 503 whose detail says that nothing was stored (issue 11)."""
    try:
        yield
    except OutcomeUnknown:
        raise
    except FALLOS_DE_DEPENDENCIA as err:
        raise OutcomeUnknown(reserva_id) from err


async def esperar(saga: Saga, deps: Deps, timeout: float) -> Saga:
    """The saga once it has an outcome, or as it stands when `timeout` runs out. The saga is stored: a failure
    while waiting is OutcomeUnknown (reserva_guardada)."""
    with reserva_guardada(saga.reserva_id):
        task = deps.orquestador.running(saga.reserva_id, cancelacion=saga.fase == Fase.CANCELANDO)
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
    for attempt in range(6):
        if attempt:
            await asyncio.sleep(0.05 * 2**attempt)  # another writer moved it: let it land
        saga = await consultar(cmd.reserva_id, deps)
        if saga.estado == Estado.CANCELADA or saga.fase == Fase.CANCELANDO:
            return saga
        if saga.estado != Estado.CONFIRMADA or not saga.terminada:
            raise ReservaNoCancelable(f"a reservation in estado {saga.estado} cannot be cancelled", estado=saga.estado)
        saga.fase, saga.paso = Fase.CANCELANDO, PASOS_CANCELACION[0]
        saga.anotar("cancelacion", "solicitada")
        saga.arrendar(deps.owner, deps.lease_s)
        try:
            await (deps.store.save(saga) if saga.revision else _reopen(saga, deps))
        except (SagaTomada, SagaYaExiste):
            continue
        deps.orquestador.start(saga)
        return saga
    raise Conflict("the reservation kept changing; retry")


async def _reopen(saga: Saga, deps: Deps) -> None:
    """A finished reservation gets a saga key again for its cancellation; the create is the claim (one wins),
    and a cancellation that finished between our read and our create is not run twice (if we die before this
    check, the orchestrator makes it when it resumes the key). A purchase whose outcome is stored but whose key
    is not purged yet is purged here (by CAS), so the cancellation does not wait for it."""
    try:
        await deps.store.create(saga)
    except SagaYaExiste:
        stale = await deps.store.get(saga.reserva_id)
        if stale is not None and _outcome_pending(stale) == Estado.CONFIRMADA:
            await deps.store.finish(stale)
        raise
    latest = await deps.archivo.get(saga.reserva_id)
    if latest is not None and latest.estado != Estado.CONFIRMADA:
        await deps.store.finish(saga)
        raise SagaTomada(saga.reserva_id)
