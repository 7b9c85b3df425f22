"""Erasure (right to be forgotten) by crypto-shredding: the log stays append-only, the data key goes.

Order: the `UsuarioBorrado` event first (the durable intent, with no personal data), then every step, each
idempotent: revoke the sessions and the account; release the email and document claims (the person may register
again, as a new user); the read model forgets the user (the projection, on the event); last, destroy the data key
(USER_KEYS and its Redis cache), so every sealed copy of the user's fields, in the log, replicas and backups,
opens no more. A crash halfway leaves the event in the log and the key in place: a repeated DELETE, or the
sweep every start of the service runs (`completar_pendientes`), does the remaining steps.
Reservations keep their amounts, events and dates under a usuario_id that no longer resolves to a person.
"""

from __future__ import annotations

import logging
import uuid
from datetime import UTC, datetime

from nats.js import JetStreamContext
from nats.js.api import ConsumerConfig, DeliverPolicy
from nats.js.errors import KeyNotFoundError

from eventflow.contracts import USUARIO_BORRADO, USUARIO_REGISTRADO
from eventflow.eventstore import ConcurrencyConflict, NewEvent, StoredEvent
from eventflow.jetstream import USUARIOS
from services.users import identidad as ids
from services.users.domain import es_id
from services.users.handlers import Dependencias

log = logging.getLogger(__name__)


async def borrar_usuario(usuario_id: str, por: str, deps: Dependencias, identidad: ids.Identidad) -> None:
    if not es_id(usuario_id):
        return  # never a wildcard or a pattern: KV purges and subject filters would take it as one
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
    await identidad.cuentas.borrar(usuario_id)  # first: a sign-in racing the erasure finds no account
    await identidad.sesiones.cerrar_todas(usuario_id)
    for key in registered.data.get("seudonimos", {}).values():
        claim = await identidad.claims.get(key)
        if claim is not None and claim.owner == usuario_id:
            await identidad.claims.release(claim)
    if not await deps.usuarios.wait_for(version, deps.read_your_writes_timeout):
        log.warning("read model behind an erasure", extra={"usuario_id": usuario_id})
    # Last: a data key still there marks an erasure not yet complete (the start-up sweep finishes it).
    await deps.data_keys.delete(usuario_id, erasure=True)
    log.info("user erased", extra={"audit": "usuarios.borrar", "usuario_id": usuario_id, "por": por})


async def completar_pendientes(js: JetStreamContext, deps: Dependencias, identidad: ids.Identidad) -> list[str]:
    """Finish every erasure a crash left halfway: each `UsuarioBorrado` whose data key is still stored.

    Reads USUARIOS once, up to its last sequence at the start (an ordered consumer, as the projections use), so
    it costs one pass over the log per start; returns the users it completed.
    """
    info = await js.stream_info(USUARIOS.name)
    last = int(info.state.last_seq or 0)
    erased: list[str] = []
    if info.state.messages:
        sub = await js.subscribe(
            f"{USUARIOS.prefix}.>",
            stream=USUARIOS.name,
            ordered_consumer=True,
            config=ConsumerConfig(deliver_policy=DeliverPolicy.ALL),
        )
        try:
            while True:
                msg = await sub.next_msg(timeout=30)
                seq = msg.metadata.sequence.stream
                event = StoredEvent.decode(USUARIOS.name, seq, msg.subject, msg.data)
                if event.type == USUARIO_BORRADO:
                    erased.append(event.aggregate_id)
                if seq >= last:
                    break
        finally:
            await sub.unsubscribe()
    completed = []
    for usuario_id in erased:
        try:
            await deps.data_keys.kv.get(usuario_id)
        except KeyNotFoundError:
            continue  # complete already: the key goes last
        await borrar_usuario(usuario_id, "sistema", deps, identidad)
        completed.append(usuario_id)
    return completed
