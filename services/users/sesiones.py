"""Sessions: refresh-token families on the CP side (KV bucket SESIONES), so a revocation holds on every replica.

A sign-in starts a family; each refresh rotates it (the old refresh token stops working, a new one is
returned) by compare-and-set on the family's key. A refresh token that was already rotated away and comes back
is a stolen copy, or the real one after a thief used it: the whole family is revoked (RFC 6819 5.2.2.3,
OAuth 2.0 Security BCP 4.14). The key is `<usuario_id>.<familia>`, so a user's sessions are listed by prefix
(password change, erasure). Only SHA-256 digests of the secrets are stored; the bucket's max age (TTL_S) makes a
family vanish by itself that long after its last rotation.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import secrets
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import orjson
from nats.js import JetStreamContext
from nats.js.errors import KeyNotFoundError, KeyWrongLastSequenceError
from nats.js.kv import KeyValue

from eventflow.auth import NoAutenticado

BUCKET = "SESIONES"
TTL_S = 30 * 86_400.0  # a session unused for 30 days ends
PREFIX = "rt1"
PREVIOUS_KEPT = 20  # rotated-away secrets remembered per family, for reuse detection


@dataclass(frozen=True)
class Sesion:
    usuario_id: str
    familia: str
    refresh_token: str
    expires_at: float


def _digest(secret: str) -> str:
    return hashlib.sha256(secret.encode()).hexdigest()


def _encode(usuario_id: str, familia: str, secret: str) -> str:
    raw = f"{usuario_id}.{familia}.{secret}".encode()
    return f"{PREFIX}.{base64.urlsafe_b64encode(raw).rstrip(b'=').decode()}"


def _decode(token: str) -> tuple[str, str, str]:
    prefix, _, body = token.partition(".")
    try:
        parts = base64.urlsafe_b64decode(body + "=" * (-len(body) % 4)).decode().split(".")
    except (ValueError, UnicodeDecodeError):
        parts = []
    if prefix != PREFIX or len(parts) != 3 or not all(parts):
        raise NoAutenticado("The refresh token is not one of ours.")
    return parts[0], parts[1], parts[2]


class Sesiones:
    def __init__(
        self, kv: KeyValue, js: JetStreamContext, ttl_s: float = TTL_S, clock: Callable[[], float] = time.time
    ) -> None:
        self.kv, self.js, self.ttl_s, self.clock = kv, js, ttl_s, clock

    async def abrir(self, usuario_id: str) -> Sesion:
        familia, secret = secrets.token_hex(12), secrets.token_urlsafe(32)
        expires = self.clock() + self.ttl_s
        doc = {"actual": _digest(secret), "anteriores": [], "revocada": False, "expira": expires}
        await self.kv.create(f"{usuario_id}.{familia}", orjson.dumps(doc))
        return Sesion(usuario_id, familia, _encode(usuario_id, familia, secret), expires)

    async def rotar(self, refresh_token: str) -> Sesion:
        """The next token of the family; a reused (rotated-away) token revokes the family and is refused."""
        usuario_id, familia, secret = _decode(refresh_token)
        key = f"{usuario_id}.{familia}"
        while True:
            doc, revision = await self._get(key)
            if doc["revocada"] or doc["expira"] < self.clock():
                raise NoAutenticado("This session has ended; sign in again.")
            digest = _digest(secret)
            if not hmac.compare_digest(digest, doc["actual"]):
                if digest in doc["anteriores"]:
                    await self._revoke(key, doc, revision)
                    raise NoAutenticado("This refresh token was already used; every session of its family is revoked.")
                raise NoAutenticado("The refresh token is not valid.")
            fresh = secrets.token_urlsafe(32)
            expires = self.clock() + self.ttl_s
            doc = {
                "actual": _digest(fresh),
                "anteriores": [doc["actual"], *doc["anteriores"]][:PREVIOUS_KEPT],
                "revocada": False,
                "expira": expires,
            }
            try:
                await self.kv.update(key, orjson.dumps(doc), last=revision)
            except KeyWrongLastSequenceError:
                continue  # a concurrent rotation of the same token: the next look finds ours among anteriores
            return Sesion(usuario_id, familia, _encode(usuario_id, familia, fresh), expires)

    async def cerrar(self, refresh_token: str) -> str:
        """Logout: revoke the token's family; returns the user id. An unknown or ended family is fine."""
        usuario_id, familia, secret = _decode(refresh_token)
        key = f"{usuario_id}.{familia}"
        try:
            doc, revision = await self._get(key)
        except NoAutenticado:
            return usuario_id
        if hmac.compare_digest(_digest(secret), doc["actual"]) or _digest(secret) in doc["anteriores"]:
            await self._revoke(key, doc, revision)
        return usuario_id

    async def cerrar_todas(self, usuario_id: str, salvo: str | None = None) -> int:
        """Revoke every family of the user but `salvo` (the one changing the password); returns how many."""
        keys = await self._keys_of(usuario_id)
        revoked = 0
        for key in keys:
            if salvo is not None and key == f"{usuario_id}.{salvo}":
                continue
            try:
                doc, revision = await self._get(key)
            except NoAutenticado:
                continue
            if not doc["revocada"]:
                await self._revoke(key, doc, revision)
                revoked += 1
        return revoked

    async def _keys_of(self, usuario_id: str) -> list[str]:
        """The user's families: the server lists the bucket's subjects under the user's prefix, in one request.
        Not a watcher: nats-py's watch signals "no more" when the consumer's info reports nothing pending, which
        can be answered before the messages the server already sent have arrived, and then lists nothing (nor
        `keys(filters=...)`, which walks every key of the bucket and matches substrings)."""
        prefix = f"$KV.{BUCKET}."
        info = await self.js.stream_info(f"KV_{BUCKET}", subjects_filter=f"{prefix}{usuario_id}.*")
        return [subject.removeprefix(prefix) for subject in sorted(info.state.subjects or {})]

    @staticmethod
    def familia_de(refresh_token: str) -> str:
        return _decode(refresh_token)[1]

    async def _revoke(self, key: str, doc: dict[str, Any], revision: int) -> None:
        revoked = {**doc, "revocada": True}
        while True:
            try:
                await self.kv.update(key, orjson.dumps(revoked), last=revision)
                return
            except KeyWrongLastSequenceError:
                current, revision = await self._get(key)
                if current["revocada"]:
                    return
                revoked = {**current, "revocada": True}

    async def _get(self, key: str) -> tuple[dict[str, Any], int]:
        try:
            entry = await self.kv.get(key)
        except KeyNotFoundError:
            raise NoAutenticado("This session has ended; sign in again.") from None
        if not entry.value:
            raise NoAutenticado("This session has ended; sign in again.")
        return orjson.loads(entry.value), int(entry.revision or 0)
