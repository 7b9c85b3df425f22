"""Service layer: registering a user. Claim (CP) -> data key -> sealed event -> wait for the read model.

Steps that fail are compensated in reverse (data key deleted, claims released), but only once the log
says the user is not there; when even that cannot be known, the claims stay and go stale instead.

With an Idempotency-Key the user id is derived from the key, so every step is create-if-absent on that
id: the request's pin (fingerprint as owner), the uniqueness claims (owner = the id), the data key, and
the append with expected_version 0. A retry or a concurrent duplicate finds them its own and ends up
answering with the one stored user; a different body under the same key is refused by the pin.
"""

from __future__ import annotations

import asyncio
import logging
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Protocol

from eventflow.claims import Claim
from eventflow.contracts import USUARIO_BORRADO, USUARIO_REGISTRADO
from eventflow.crypto import Pseudonymizer
from eventflow.eventstore import ConcurrencyConflict, NewEvent, StoredEvent
from services.users.contrasenas import Hasher
from services.users.cuentas import Cuentas
from services.users.documentos import TipoDocumento
from services.users.domain import (
    ClaveReutilizada,
    ClavesNoDisponibles,
    DocumentoYaRegistrado,
    EmailYaRegistrado,
    RegistrarUsuario,
    RegistroNoCompletado,
    Usuario,
    UsuarioNoEncontrado,
    clave_documento,
    es_id,
    forma_canonica,
    nuevo_id,
    validar,
)
from services.users.privacy import DataKeys, open_sealed, seal
from services.users.reconcile import Reconciler
from services.users.unicidad import WRITE_DEADLINE_S, Unicidad

log = logging.getLogger(__name__)
HUELLA = "huella"  # in the event only when the request carried an Idempotency-Key; an HMAC, never the data


class EventLog(Protocol):
    """`load` reads the stream leader (EventStore's default), never a replica: "absent" deletes a data key."""

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
    cuentas: Cuentas
    hasher: Hasher
    write_deadline: float = WRITE_DEADLINE_S
    cp_connected: Callable[[], bool] = lambda: True  # whether NATS is reachable now: reads must not wait it out


async def registrar_usuario(
    cmd: RegistrarUsuario, deps: Dependencias, idempotency_key: str | None = None
) -> tuple[Usuario, bool]:
    """Returns (user, created); created is False when an earlier request with the same key made it."""
    cmd = validar(cmd)
    if idempotency_key is None:
        return await _registrar(_nuevo(nuevo_id(), cmd), None, await deps.hasher.hash(cmd.password), deps), True
    # Derived with the pseudonym key (HMAC), so nobody who learns the Idempotency-Key can compute the id.
    usuario_id = deps.pseudonyms.id_for("usuario", idempotency_key)
    huella = deps.pseudonyms.pseudonym("registro", forma_canonica(cmd))
    if (existing := await _existing(usuario_id, huella, deps)) is not None:
        return existing, False
    if not await deps.unicidad.solicitud(usuario_id, huella):
        raise ClaveReutilizada()
    try:
        return await _registrar(_nuevo(usuario_id, cmd), huella, await deps.hasher.hash(cmd.password), deps), True
    except ConcurrencyConflict:  # a concurrent duplicate of this request appended first
        if (existing := await _existing(usuario_id, huella, deps)) is None:
            raise
        return existing, False
    except (EmailYaRegistrado, DocumentoYaRegistrado):
        await deps.unicidad.liberar_solicitud(usuario_id, huella)
        raise


async def esperar_proyeccion(usuario_id: str, deps: Dependencias) -> bool:
    """On a read-model miss: True once the projection has applied everything the log holds for this user, waiting
    at most the read-your-writes bound; False when the log has nothing for it (or NATS is away: the miss stands).
    A sign-up waits for its projection only that long, so under load a new buyer's first GET /me could 404
    (Locust found it); this makes one's own profile read-your-writes on the read path too."""
    if not es_id(usuario_id) or not deps.cp_connected():
        return False
    try:
        async with asyncio.timeout(deps.read_your_writes_timeout):  # the log read and the wait, together
            events, version = await deps.store.load(usuario_id)
            if not events or events[-1].type == USUARIO_BORRADO:  # never registered, or erased: the 404 stands
                return False
            return await deps.usuarios.wait_for(version, deps.read_your_writes_timeout)
    except TimeoutError:
        return False


def _nuevo(usuario_id: str, cmd: RegistrarUsuario) -> Usuario:
    profile = {name: value for name, value in vars(cmd).items() if name != "password"}
    return Usuario(usuario_id, registrado_en=datetime.now(UTC).isoformat(), **profile)


async def _registrar(usuario: Usuario, huella: str | None, password_hash: str, deps: Dependencias) -> Usuario:
    keys = _pseudonyms(usuario, deps.pseudonyms)
    held = await _claim(usuario.id, keys, deps)
    event = registered_event(usuario, huella, keys)
    try:
        seq = await _store(usuario, event, held, password_hash, deps)
    except ConcurrencyConflict:
        raise  # the id is in the log already: the claims and the data key are that event's, keep them
    except Exception as err:
        seq = await _compensate(usuario.id, event.id, list(keys.values()), deps, err)
    if not await deps.usuarios.wait_for(seq, deps.read_your_writes_timeout):
        log.warning("read model behind a registration", extra={"usuario_id": usuario.id, "seq": seq})
    log.info("user registered", extra={"usuario_id": usuario.id})
    return usuario


async def _existing(usuario_id: str, huella: str, deps: Dependencias) -> Usuario | None:
    """The user an earlier request with this key registered, or None; 422 if it was a different request."""
    events, _ = await deps.store.load(usuario_id)
    stored = next((e for e in events if e.type == USUARIO_REGISTRADO), None)
    if stored is None:
        return None
    if stored.data.get(HUELLA) != huella:
        raise ClaveReutilizada()
    try:
        dek = await deps.data_keys.get(usuario_id)
    except Exception as err:  # the key store (CP side) is unreachable
        raise ClavesNoDisponibles() from err
    if dek is None:  # erased since
        raise UsuarioNoEncontrado(usuario_id)
    personal = open_sealed(dek, usuario_id, stored.data["cifrado"])
    tipo = TipoDocumento(stored.data["tipo_documento"])
    usuario = Usuario(usuario_id, tipo, registrado_en=stored.data["registrado_en"], **personal)
    if not await deps.usuarios.wait_for(stored.seq, deps.read_your_writes_timeout):
        log.warning("read model behind a registration", extra={"usuario_id": usuario_id, "seq": stored.seq})
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


def registered_event(usuario: Usuario, huella: str | None, pseudonyms: dict[str, str]) -> NewEvent:
    """Without the sealed fields yet: they need the data key, which `_store` creates right before appending."""
    data: dict[str, Any] = {
        "usuario_id": usuario.id,
        "tipo_documento": usuario.tipo_documento.value,
        "seudonimos": pseudonyms,
        "registrado_en": usuario.registrado_en,
    }
    if huella is not None:
        data[HUELLA] = huella
    return NewEvent(USUARIO_REGISTRADO, data, str(uuid.uuid4()))


async def _store(usuario: Usuario, event: NewEvent, held: list[Claim], password_hash: str, deps: Dependencias) -> int:
    """Data key, account (password hash and roles), then the event; the compensation undoes all three."""
    dek = await deps.data_keys.create(usuario.id)
    await deps.cuentas.crear(usuario.id, password_hash)
    sealed = NewEvent(event.type, {**event.data, "cifrado": seal(dek, usuario.id, usuario.personal_data())}, event.id)
    if time.time() - min(c.claimed_at for c in held) > deps.write_deadline:
        raise TimeoutError("claims held too long to append safely: they may be taken over")
    return await deps.store.append(usuario.id, [sealed], expected_version=0)


async def _compensate(usuario_id: str, event_id: str, keys: list[str], deps: Dependencias, err: Exception) -> int:
    """Returns the event's sequence if our append did land after all; otherwise undoes and raises."""
    try:
        events, version = await deps.store.load(usuario_id)
        if not events:
            log.warning(
                "registration failed; compensating", extra={"usuario_id": usuario_id, "error": type(err).__name__}
            )
            await deps.reconciler.undo(usuario_id, keys)
    except Exception:
        log.warning("registration outcome unknown; reconciling", extra={"usuario_id": usuario_id})
        deps.reconciler.later(usuario_id, keys)
        raise RegistroNoCompletado() from err
    if events and events[0].id == event_id:
        return version
    if events:  # a duplicate with the same Idempotency-Key landed: the claims and the data key are its own
        raise ConcurrencyConflict("registered by a concurrent request with the same Idempotency-Key") from err
    raise RegistroNoCompletado() from err
