"""Service layer: registering a user. Claim (CP) -> data key -> sealed event -> wait for the read model.

Steps that fail are compensated in reverse (data key deleted, claims released), but only once the log
says the user is not there; when even that cannot be known, the claims stay and go stale instead.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Protocol

from eventflow.claims import Claim
from eventflow.contracts import USUARIO_REGISTRADO
from eventflow.crypto import Pseudonymizer
from eventflow.eventstore import NewEvent, StoredEvent
from services.users.domain import (
    DocumentoYaRegistrado,
    EmailYaRegistrado,
    RegistrarUsuario,
    RegistroNoCompletado,
    Usuario,
    clave_documento,
    nuevo_id,
    validar,
)
from services.users.privacy import DataKeys, seal
from services.users.reconcile import Reconciler
from services.users.unicidad import WRITE_DEADLINE_S, Unicidad

log = logging.getLogger(__name__)


class EventLog(Protocol):
    async def append(self, aggregate_id: str, events: list[NewEvent], expected_version: int | None) -> int: ...
    async def load(self, aggregate_id: str) -> tuple[list[StoredEvent], int]: ...


class ReadModel(Protocol):
    async def wait_for(self, seq: int, timeout: float) -> bool: ...


@dataclass
class Dependencias:
    store: EventLog
    unicidad: Unicidad
    data_keys: DataKeys
    pseudonyms: Pseudonymizer
    usuarios: ReadModel
    reconciler: Reconciler
    read_your_writes_timeout: float
    write_deadline: float = WRITE_DEADLINE_S


async def registrar_usuario(cmd: RegistrarUsuario, deps: Dependencias) -> Usuario:
    cmd = validar(cmd)
    usuario = Usuario(nuevo_id(), registrado_en=datetime.now(UTC).isoformat(), **vars(cmd))
    keys = _pseudonyms(usuario, deps.pseudonyms)
    held = await _claim(usuario.id, keys, deps)
    try:
        seq = await _store(usuario, keys, held, deps)
    except Exception as err:
        seq = await _compensate(usuario.id, list(keys.values()), deps, err)
    if not await deps.usuarios.wait_for(seq, deps.read_your_writes_timeout):
        log.warning("read model behind a registration", extra={"usuario_id": usuario.id, "seq": seq})
    log.info("user registered", extra={"usuario_id": usuario.id})
    return usuario


def _pseudonyms(usuario: Usuario, pseudonyms: Pseudonymizer) -> dict[str, str]:
    return {
        "email": pseudonyms.pseudonym("email", usuario.email),
        "documento": pseudonyms.pseudonym("doc", clave_documento(usuario.tipo_documento, usuario.nro_documento)),
    }


async def _claim(usuario_id: str, keys: dict[str, str], deps: Dependencias) -> list[Claim]:
    held: list[Claim] = []
    for kind, error in (("email", EmailYaRegistrado), ("documento", DocumentoYaRegistrado)):
        try:
            claim = await deps.unicidad.take(keys[kind], usuario_id)
        except Exception as err:  # NATS did not answer: the claim may still land once it is back
            log.warning("claim outcome unknown; reconciling", extra={"usuario_id": usuario_id})
            deps.reconciler.later(usuario_id, list(keys.values()))
            raise RegistroNoCompletado() from err
        if claim is None:
            await deps.unicidad.release(held)
            raise error()
        held.append(claim)
    return held


def registered_event(usuario: Usuario, dek: bytes, pseudonyms: dict[str, str]) -> NewEvent:
    data: dict[str, Any] = {
        "usuario_id": usuario.id,
        "tipo_documento": usuario.tipo_documento.value,
        "cifrado": seal(dek, usuario.id, usuario.personal_data()),
        "seudonimos": pseudonyms,
        "registrado_en": usuario.registrado_en,
    }
    return NewEvent(USUARIO_REGISTRADO, data)


async def _store(usuario: Usuario, keys: dict[str, str], held: list[Claim], deps: Dependencias) -> int:
    dek = await deps.data_keys.create(usuario.id)
    event = registered_event(usuario, dek, keys)
    if time.time() - min(c.claimed_at for c in held) > deps.write_deadline:
        raise TimeoutError("claims held too long to append safely: they may be taken over")
    return await deps.store.append(usuario.id, [event], expected_version=0)


async def _compensate(usuario_id: str, keys: list[str], deps: Dependencias, err: Exception) -> int:
    """Returns the event's sequence if the append did land after all; otherwise undoes and raises."""
    try:
        events, version = await deps.store.load(usuario_id)
        if events:
            return version
        log.warning("registration failed; compensating", extra={"usuario_id": usuario_id, "error": type(err).__name__})
        await deps.reconciler.undo(usuario_id, keys)
    except Exception:
        log.warning("registration outcome unknown; reconciling", extra={"usuario_id": usuario_id})
        deps.reconciler.later(usuario_id, keys)
    raise RegistroNoCompletado() from err
