"""Service layer: judge the command, append the event to the log (the system of record), wait for the read model."""

from __future__ import annotations

import logging
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from typing import Protocol

from eventflow import contracts
from eventflow.eventstore import NewEvent
from services.events.domain import CrearEvento, Evento
from services.events.rules import nuevo_evento

log = logging.getLogger(__name__)


class EventLog(Protocol):
    async def append(self, aggregate_id: str, events: list[NewEvent], expected_version: int | None) -> int: ...


class ReadModel(Protocol):
    async def wait_for(self, seq: int, timeout: float) -> bool: ...


@dataclass(frozen=True)
class WriteDeps:
    log: EventLog
    catalog: ReadModel  # the projection a new event must reach before the POST answers
    clock: Callable[[], datetime]
    read_your_writes_timeout: float


@dataclass(frozen=True)
class EventoPublicado:
    id: str
    data: contracts.EventoCreadoData
    visible: bool  # False: the read model had not caught up within the bound; a GET may 404 briefly


def evento_creado(evento: Evento) -> contracts.EventoCreadoData:
    """The published payload (the reservations service builds its inventory from it): exactly the contract."""
    return contracts.EventoCreadoData(
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
    )


async def crear_evento(cmd: CrearEvento, deps: WriteDeps) -> EventoPublicado:
    evento = nuevo_evento(cmd, str(uuid.uuid4()), deps.clock())
    data = evento_creado(evento)
    seq = await deps.log.append(evento.id, [NewEvent(contracts.EVENTO_CREADO, data)], expected_version=0)
    visible = await deps.catalog.wait_for(seq, deps.read_your_writes_timeout)
    if not visible:
        log.warning("event stored but not yet projected", extra={"evento_id": evento.id, "seq": seq})
    return EventoPublicado(evento.id, data, visible)
