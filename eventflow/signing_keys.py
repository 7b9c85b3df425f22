"""The token issuer's signing keys (ES256), kept on the CP side, rotated, and published as a JWKS.

- AUTH_SIGNING (the issuer alone): the current private key, sealed under the master key (envelope: a fresh
  data key per signing key), so neither the log nor a backup of the bucket holds it in clear.
- AUTH_JWKS (every service reads it): each public key by its `kid`, with the instant it may be dropped.

Rotation publishes the new public key first and only then makes it current (a compare-and-set: one replica
wins), so no verifier ever sees a token before it can know its key. The key it replaces stays published until
every token it signed has expired (`token_ttl_s` + leeway), then it is deleted.
"""

from __future__ import annotations

import asyncio
import logging
import time
import uuid
from collections.abc import Callable, Mapping
from typing import Any

import orjson
from joserfc import jwt
from joserfc.jwk import ECKey, KeySet
from nats.js import JetStreamContext
from nats.js.errors import KeyNotFoundError, KeyWrongLastSequenceError, NoKeysError
from nats.js.kv import KeyValue

from eventflow.crypto import FieldCipher, KeyRing
from eventflow.jetstream import ensure_bucket

log = logging.getLogger(__name__)

PRIVATE_BUCKET = "AUTH_SIGNING"
JWKS_BUCKET = "AUTH_JWKS"
CURRENT = "current"
ALGORITHM = "ES256"
LEEWAY_S = 60.0
RECHECK_S = 30.0  # how stale this replica's idea of the current key may get


async def open_buckets(js: JetStreamContext, replicas: int = 1) -> tuple[KeyValue, KeyValue]:
    return await ensure_bucket(js, PRIVATE_BUCKET, replicas), await ensure_bucket(js, JWKS_BUCKET, replicas)


class SigningKeys:
    """Signs access tokens with the current key; rotates it every `rotate_after_s`."""

    def __init__(
        self,
        private_kv: KeyValue,
        jwks_kv: KeyValue,
        ring: KeyRing,
        *,
        rotate_after_s: float = 86_400.0,
        token_ttl_s: float = 900.0,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.private_kv, self.jwks_kv, self.ring = private_kv, jwks_kv, ring
        self.rotate_after_s, self.token_ttl_s, self.clock = rotate_after_s, token_ttl_s, clock
        self._current: tuple[ECKey, float] | None = None  # key, created_at
        self._checked_at = 0.0
        self._lock = asyncio.Lock()

    async def sign(self, claims: Mapping[str, Any]) -> str:
        key = await self.current()
        header = {"alg": ALGORITHM, "kid": key.kid, "typ": "JWT"}
        return jwt.encode(header, dict(claims), key, algorithms=[ALGORITHM])

    async def current(self) -> ECKey:
        """The key to sign with now: cached, looked up again every RECHECK_S (another replica may have rotated:
        its retired key stays valid for a token lifetime, far longer), rotated when due."""
        async with self._lock:
            now = self.clock()
            due = self._current is None or now - self._current[1] >= self.rotate_after_s
            if due or now - self._checked_at >= RECHECK_S:
                stored = await self._stored()
                if due or stored is None or self._current is None or stored[0]["kid"] != self._current[0].kid:
                    self._current = await self._load_or_rotate(now)
                self._checked_at = now
            assert self._current is not None
            return self._current[0]

    async def rotate(self) -> str:
        """Make a new key current now (an operator's command, or a suspected leak); returns its kid."""
        async with self._lock:
            stored = await self._stored()
            self._current = await self._make_current(stored[1] if stored else None, self.clock())
            return str(self._current[0].kid)

    async def prune(self) -> int:
        """Delete published keys whose tokens have all expired; returns how many."""
        removed = 0
        for kid, entry in (await self._published()).items():
            not_after = entry.get("not_after")
            if not_after is not None and float(not_after) < self.clock():
                await self.jwks_kv.purge(kid)
                removed += 1
        return removed

    async def _load_or_rotate(self, now: float) -> tuple[ECKey, float]:
        stored = await self._stored()
        if stored is not None:
            doc, _ = stored
            if now - float(doc["created_at"]) < self.rotate_after_s:
                return self._unseal(doc), float(doc["created_at"])
        try:
            return await self._make_current(stored[1] if stored else None, now)
        except KeyWrongLastSequenceError:  # another replica rotated first: use its key
            fresh = await self._stored()
            assert fresh is not None, "a current key exists once a rotation was refused"
            return self._unseal(fresh[0]), float(fresh[0]["created_at"])

    async def _make_current(self, revision: int | None, now: float) -> tuple[ECKey, float]:
        kid = f"{time.strftime('%Y%m%d', time.gmtime(now))}-{uuid.uuid4().hex[:8]}"
        key = ECKey.generate_key("P-256", parameters={"kid": kid, "alg": ALGORITHM, "use": "sig"})
        await self.jwks_kv.put(kid, orjson.dumps({"jwk": key.as_dict(private=False), "not_after": None}))
        dek, wrapped = self.ring.new_data_key()
        sealed = FieldCipher(dek, kid).seal("private_jwk", orjson.dumps(key.as_dict(private=True)).decode())
        doc = {"kid": kid, "created_at": now, "dek": wrapped, "sealed": sealed}
        previous = await self._stored()
        if revision is None:
            await self.private_kv.create(CURRENT, orjson.dumps(doc))
        else:
            await self.private_kv.update(CURRENT, orjson.dumps(doc), last=revision)
        if previous is not None:
            await self._retire(str(previous[0]["kid"]), now)
        log.info("signing key rotated", extra={"kid": kid})
        return key, now

    async def _retire(self, kid: str, now: float) -> None:
        """The old key signs no more; its public half stays until the last token it signed has expired."""
        try:
            entry = await self.jwks_kv.get(kid)
        except KeyNotFoundError:
            return
        doc = orjson.loads(entry.value or b"{}")
        doc["not_after"] = now + self.token_ttl_s + LEEWAY_S
        await self.jwks_kv.put(kid, orjson.dumps(doc))

    def _unseal(self, doc: Mapping[str, Any]) -> ECKey:
        dek = self.ring.unwrap(str(doc["dek"]))
        private = FieldCipher(dek, str(doc["kid"])).open("private_jwk", str(doc["sealed"]))
        return ECKey.import_key(orjson.loads(private))

    async def _stored(self) -> tuple[dict[str, Any], int] | None:
        try:
            entry = await self.private_kv.get(CURRENT)
        except KeyNotFoundError:
            return None
        if not entry.value:
            return None
        return orjson.loads(entry.value), int(entry.revision or 0)

    async def _published(self) -> dict[str, dict[str, Any]]:
        return await read_published(self.jwks_kv)


async def read_published(jwks_kv: KeyValue) -> dict[str, dict[str, Any]]:
    try:
        kids = await jwks_kv.keys()
    except NoKeysError:
        return {}
    found: dict[str, dict[str, Any]] = {}
    for kid in kids:
        try:
            entry = await jwks_kv.get(kid)
        except KeyNotFoundError:
            continue
        if entry.value:
            found[kid] = orjson.loads(entry.value)
    return found


class PublishedKeys:
    """The issuer's public keys as every service sees them (an `eventflow.auth.KeySource`): read from
    AUTH_JWKS at start, again when a token names an unknown kid (at most every `min_refresh_s`), and
    every `refresh_every_s` in the background so a dropped key stops verifying."""

    def __init__(self, jwks_kv: KeyValue, min_refresh_s: float = 1.0) -> None:
        self.jwks_kv = jwks_kv
        self.min_refresh_s = min_refresh_s
        self._keyset = KeySet([])
        self._jwks: dict[str, Any] = {"keys": []}
        self._loaded_at = 0.0
        self._lock = asyncio.Lock()

    def keyset(self) -> KeySet:
        return self._keyset

    def jwks(self) -> dict[str, Any]:
        """The JWKS document (RFC 7517) of the keys that may still verify a token."""
        return self._jwks

    async def refresh(self, force: bool = False) -> None:
        """Reload the published keys. An on-demand reload asked for inside the rate-limit window waits for it
        rather than being skipped (a key published a moment after our last read must still verify), and
        callers queued behind a reload that started after they asked reuse it."""
        asked_at = time.monotonic()
        async with self._lock:
            if not force:
                if self._loaded_at > asked_at:
                    return
                wait = self.min_refresh_s - (time.monotonic() - self._loaded_at)
                if wait > 0:
                    await asyncio.sleep(wait)
            started = time.monotonic()
            try:
                published = await read_published(self.jwks_kv)
            finally:  # a failed read counts too: callers queued behind it must not each retry at once
                self._loaded_at = started
            now = time.time()
            live = [doc["jwk"] for doc in published.values() if doc.get("not_after") is None or doc["not_after"] > now]
            self._jwks = {"keys": live}
            self._keyset = KeySet.import_key_set({"keys": live}) if live else KeySet([])  # none before the first

    async def run(self, refresh_every_s: float = 60.0) -> None:
        while True:
            await asyncio.sleep(refresh_every_s)
            try:
                await self.refresh(force=True)
            except Exception:
                log.exception("could not refresh the published signing keys; will try again")
