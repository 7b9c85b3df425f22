"""Erasure (right to be forgotten) by crypto-shredding: the log stays append-only, the data key goes.

Order: the `UsuarioBorrado` event first (the durable intent, with no personal data), then every step, each
idempotent: destroy the data key (USER_KEYS and its Redis cache), so every sealed copy of the user's fields, in
the log, replicas and backups, opens no more; revoke the sessions and the account; release the email and
document claims (the person may register again, as a new user); purge the read model. A crash halfway leaves
the event in the log and a repeated DELETE runs the remaining steps; nothing ever un-erases a user.
Reservations keep their amounts, events and dates under a usuario_id that no longer resolves to a person.
"""

from __future__ import annotations

import logging
import uuid
from datetime import UTC, datetime

from eventflow.contracts import USUARIO_REGISTRADO
from eventflow.eventstore import ConcurrencyConflict, NewEvent
from services.users import identidad as ids
from services.users.handlers import Dependencias
from services.users.projections import USUARIO_BORRADO

log = logging.getLogger(__name__)


async def borrar_usuario(usuario_id: str, por: str, deps: Dependencias, identidad: ids.Identidad) -> None:
    events, version = await deps.store.load(usuario_id)
    registered = next((e for e in events if e.type == USUARIO_REGISTRADO), None)
    if registered is None:
        return  # never existed here: nothing to erase (the answer is the same, so existence is not revealed)
    if not any(e.type == USUARIO_BORRADO for e in events):
        event = NewEvent(
            USUARIO_BORRADO, {"usuario_id": usuario_id, "borrado_en": datetime.now(UTC).isoformat()}, str(uuid.uuid4())
        )
        try:
            version = await deps.store.append(usuario_id, [event], expected_version=version)
        except ConcurrencyConflict:  # a concurrent erasure appended it: carry on with the steps
            _, version = await deps.store.load(usuario_id)
    await deps.data_keys.delete(usuario_id)
    await identidad.sesiones.cerrar_todas(usuario_id)
    await identidad.cuentas.borrar(usuario_id)
    for key in registered.data.get("seudonimos", {}).values():
        claim = await identidad.claims.get(key)
        if claim is not None and claim.owner == usuario_id:
            await identidad.claims.release(claim)
    if not await deps.usuarios.wait_for(version, deps.read_your_writes_timeout):
        log.warning("read model behind an erasure", extra={"usuario_id": usuario_id})
    log.info("user erased", extra={"audit": "usuarios.borrar", "usuario_id": usuario_id, "por": por})
