"""Accounts: each user's password hash and roles, on the CP side (KV bucket CUENTAS, one key per usuario_id).

Kept out of the event log on purpose: a password change must not leave every old hash in an immutable history,
and erasure deletes the key. Every change is a compare-and-set on the revision read, so two admins (or two
replicas) changing roles at once cannot lose one of the changes silently.
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass

import orjson
from nats.js.errors import KeyNotFoundError, KeyWrongLastSequenceError
from nats.js.kv import KeyValue

from eventflow.auth import COMPRADOR, ROLES
from eventflow.claims import leader_reads

BUCKET = "CUENTAS"


@dataclass(frozen=True)
class Cuenta:
    usuario_id: str
    hash: str
    roles: tuple[str, ...]
    revision: int

    def con(self, *, hash: str | None = None, roles: tuple[str, ...] | None = None) -> Cuenta:
        return Cuenta(self.usuario_id, hash or self.hash, roles if roles is not None else self.roles, self.revision)


def roles_validos(roles: list[str]) -> tuple[str, ...]:
    """Our role names, each once, in a stable order; everyone is a comprador."""
    unknown = sorted(set(roles) - set(ROLES))
    if unknown:
        raise ValueError(f"unknown roles: {', '.join(unknown)}")
    return tuple(role for role in ROLES if role in {COMPRADOR, *roles})


class Cuentas:
    def __init__(self, kv: KeyValue) -> None:
        self.kv = leader_reads(kv)  # a stale replica's old hash or roles must never be what we decide on

    async def crear(self, usuario_id: str, hash: str, roles: tuple[str, ...] = (COMPRADOR,)) -> Cuenta:
        """Create-if-absent: a retried registration (same Idempotency-Key, same id) keeps the first account."""
        try:
            revision = await self.kv.create(usuario_id, _encode(hash, roles))
            return Cuenta(usuario_id, hash, roles, revision)
        except KeyWrongLastSequenceError:
            found = await self.get(usuario_id)
            if found is None:
                raise
            return found

    async def get(self, usuario_id: str) -> Cuenta | None:
        try:
            entry = await self.kv.get(usuario_id)
        except KeyNotFoundError:
            return None
        if not entry.value:
            return None
        doc = orjson.loads(entry.value)
        return Cuenta(usuario_id, doc["hash"], tuple(doc["roles"]), int(entry.revision or 0))

    async def guardar(self, cuenta: Cuenta) -> Cuenta:
        """Write a changed account; KeyWrongLastSequenceError if it changed since it was read."""
        revision = await self.kv.update(cuenta.usuario_id, _encode(cuenta.hash, cuenta.roles), last=cuenta.revision)
        return Cuenta(cuenta.usuario_id, cuenta.hash, cuenta.roles, revision)

    async def borrar(self, usuario_id: str) -> None:
        """Compensation of a registration that did not happen (and erasure)."""
        with contextlib.suppress(KeyNotFoundError):
            await self.kv.purge(usuario_id)


def _encode(hash: str, roles: tuple[str, ...]) -> bytes:
    return orjson.dumps({"hash": hash, "roles": list(roles)})
