"""Service layer: judge the command, append the event to the log (the system of record), wait for the read model.

With an Idempotency-Key the event id is derived from the organizer and the key (keyed: see domain.evento_id_para),
so the append with expected_version 0 is the idempotency claim: a retry (or a concurrent duplicate) finds the
stored event and answers with it.
"""

from __future__ import annotations

import logging
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from typing import Protocol, cast

from eventflow import contracts
from eventflow.eventstore import ConcurrencyConflict, NewEvent, StoredEvent
from services.events.domain import ClaveReutilizada, CrearEvento, Evento, Ids, evento_id_para
from services.events.rules import nuevo_evento

log = logging.getLogger(__name__)
HUELLA = "huella"  # stored beside the contract's fields, only when the request carried an Idempotency-Key


class EventLog(Protocol):
    async def append(self, aggregate_id: str, events: list[NewEvent], expected_version: int | None) -> int: ...
    async def load(self, aggregate_id: str, *, direct: bool = False) -> tuple[list[StoredEvent], int]: ...


class ReadModel(Protocol):
    async def wait_for(self, seq: int, timeout: float) -> bool: ...


@dataclass(frozen=True)
class WriteDeps:
    log: EventLog
    catalog: ReadModel  # the projection a new event must reach before the POST answers
    clock: Callable[[], datetime]
    read_your_writes_timeout: float
    ids: Ids  # keyed ids for Idempotency-Keys (the pseudonym key)


@dataclass(frozen=True)
class EventoPublicado:
    id: str
    data: contracts.EventoCreadoData
    visible: bool  # False: the read model had not caught up within the bound; a GET may 404 briefly
    creado: bool = True  # False: an earlier request with the same Idempotency-Key created it


def evento_creado(evento: Evento) -> contracts.EventoCreadoData:
    """The published payload (the reservations service builds its inventory from it): exactly the contract."""
    data = contracts.EventoCreadoData(
        nombre=evento.nombre,
        descripcion=evento.descripcion,
        fecha=evento.fecha.isoformat(),
        lugar=evento.lugar,
        aforo_total=evento.aforo_total,
        precio_centimos=evento.precio_centimos,
        categoria=evento.categoria,
        secciones=None
        if evento.secciones is None
        else [contracts.Seccion(nombre=s.nombre, asientos=s.asientos) for s in evento.secciones],
        venta_desde=None if evento.venta_desde is None else evento.venta_desde.isoformat(),
        limite_por_usuario=evento.limite_por_usuario,
        max_por_solicitud=evento.max_por_solicitud,
    )
    if evento.organizador_id is not None:
        data["organizador_id"] = evento.organizador_id
    return data


async def crear_evento(
    cmd: CrearEvento, organizador_id: str, deps: WriteDeps, idempotency_key: str | None = None
) -> EventoPublicado:
    """`organizador_id`: the verified caller, recorded in the event (the API checked their role)."""
    if idempotency_key is None:
        return await _crear(cmd, str(uuid.uuid4()), organizador_id, None, deps)
    evento_id, huella = evento_id_para(deps.ids, organizador_id, idempotency_key), cmd.huella()
    # Any replica may answer this first look: a stale "absent" only leads to the append below, which the
    # leader refuses (expected version 0) if the event exists; the look after a conflict asks the leader.
    existing = await _existing(evento_id, huella, deps, direct=True)
    if existing is not None:
        return existing
    try:
        return await _crear(cmd, evento_id, organizador_id, huella, deps)
    except ConcurrencyConflict:  # a concurrent request with the same key appended first
        existing = await _existing(evento_id, huella, deps)
        if existing is None:
            raise
        return existing


async def _crear(
    cmd: CrearEvento, evento_id: str, organizador_id: str, huella: str | None, deps: WriteDeps
) -> EventoPublicado:
    evento = nuevo_evento(cmd, evento_id, deps.clock(), organizador_id)
    data = evento_creado(evento)
    stored = dict(data) if huella is None else {**data, HUELLA: huella}
    seq = await deps.log.append(evento.id, [NewEvent(contracts.EVENTO_CREADO, stored)], expected_version=0)
    return await _published(evento.id, data, seq, True, deps)


async def _existing(evento_id: str, huella: str, deps: WriteDeps, direct: bool = False) -> EventoPublicado | None:
    """The event an earlier request with this key created, or None; 422 if that request was a different one."""
    events, _ = await deps.log.load(evento_id, direct=direct)
    created = next((e for e in events if e.type == contracts.EVENTO_CREADO), None)
    if created is None:
        return None
    if created.data.get(HUELLA) != huella:
        raise ClaveReutilizada()
    data = cast(contracts.EventoCreadoData, {k: v for k, v in created.data.items() if k != HUELLA})
    return await _published(evento_id, data, created.seq, False, deps)


async def _published(
    evento_id: str, data: contracts.EventoCreadoData, seq: int, creado: bool, deps: WriteDeps
) -> EventoPublicado:
    visible = await deps.catalog.wait_for(seq, deps.read_your_writes_timeout)
    if not visible:
        log.warning("event stored but not yet projected", extra={"evento_id": evento_id, "seq": seq})
    return EventoPublicado(evento_id, data, visible, creado)
