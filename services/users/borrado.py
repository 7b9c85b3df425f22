"""Erasure (right to be forgotten) by crypto-shredding: the log stays append-only, the data key goes.

Order: the `UsuarioBorrado` event first (the durable intent, with no personal data), then every step, each
idempotent: revoke the sessions and the account; release the email and document claims (the person may register
again, as a new user); the read model forgets the user (the projection, on the event); last, destroy the data key
(USER_KEYS and its Redis cache), so every sealed copy of the user's fields, in the log, replicas and backups,
opens no more. A crash halfway leaves the event in the log and the key in place: a repeated DELETE, or the
sweep every start of the service runs (`completar_pendientes`), does the remaining steps.
With Redis down the erasure still completes on the CP side (the event, the account, sessions, claims, the key):
the read model forgets the user when Redis returns (the projection, on the event), and the cached copy of the
wrapped key is deleted then by a retry in this process, or by the next start's sweep if the process stopped first.
Reservations keep their amounts, events and dates under a usuario_id that no longer resolves to a person.
"""

from __future__ import annotations

import asyncio
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
from services.users.privacy import REDIS_DOWN, DataKeys

log = logging.getLogger(__name__)
REINTENTO_S = 0.5  # how often the cache of a key erased while Redis was down is tried again
_olvidos: set[asyncio.Task[None]] = set()  # the event loop keeps only weak references to tasks


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
    if not await deps.data_keys.delete(usuario_id, erasure=True):
        log.warning("erased with Redis down: its cached key goes when Redis returns", extra={"usuario_id": usuario_id})
        _olvidar_cuando_vuelva(deps.data_keys, usuario_id)
    log.info("user erased", extra={"audit": "usuarios.borrar", "usuario_id": usuario_id, "por": por})


def _olvidar_cuando_vuelva(data_keys: DataKeys, usuario_id: str) -> None:
    task = asyncio.create_task(_olvidar(data_keys, usuario_id), name=f"olvido:{usuario_id}")
    _olvidos.add(task)
    task.add_done_callback(_olvidos.discard)


async def _olvidar(data_keys: DataKeys, usuario_id: str) -> None:
    """Retried until Redis answers: until then no read is served, and the read model's document, without which
    no read opens the cached key, is deleted by the projection once it is back."""
    while True:
        try:
            await data_keys.forget_cached(usuario_id)
            return
        except REDIS_DOWN:
            await asyncio.sleep(REINTENTO_S)


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
    completed, destroyed = [], []
    for usuario_id in erased:
        try:
            await deps.data_keys.kv.get(usuario_id)
        except KeyNotFoundError:
            destroyed.append(usuario_id)  # complete already (the key goes last), but for a cache Redis missed
            continue
        await borrar_usuario(usuario_id, "sistema", deps, identidad)
        completed.append(usuario_id)
    await deps.data_keys.drop_cached(destroyed)
    return completed
