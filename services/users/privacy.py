"""Where personal data is sealed and opened: one data key per user, fields under AES-256-GCM.

The wrapped data key lives in the USER_KEYS bucket (the truth), never in the immutable event, so deleting
it later makes every stored copy of that user's data unreadable (crypto-shredding). Reads keep a wrapped
copy in Redis for a while, so a warm GET needs no round trip to the CP side.
"""

from __future__ import annotations

import contextlib

import redis.exceptions
from nats.js.errors import KeyNotFoundError, KeyWrongLastSequenceError
from nats.js.kv import KeyValue
from redis.asyncio import Redis

from eventflow.claims import leader_reads
from eventflow.crypto import FieldCipher, KeyRing
from services.users.domain import PERSONAL_FIELDS

KEYS_BUCKET = "USER_KEYS"
CACHE_TTL_S = 3600  # an erasure deletes the cache too; the TTL bounds what a missed delete leaves
# A read that fetched the wrapped key just before an erasure purged it would put it back in the cache after the
# erasure deleted it. The erasure leaves a tombstone first, and the cache is only set where there is none, in
# one script: the copy either lands before the tombstone (and the delete after it removes it) or not at all.
CACHE_IF_NOT_ERASED = """
if redis.call('exists', KEYS[2]) == 1 then return 0 end
redis.call('set', KEYS[1], ARGV[1], 'EX', ARGV[2])
return 1
"""
# Redis away (refused, or hung past the client's socket timeout): the erasure goes on without its cache step.
REDIS_DOWN: tuple[type[Exception], ...] = (redis.exceptions.ConnectionError, redis.exceptions.TimeoutError)


def cache_key(usuario_id: str) -> str:
    return f"usuarios:clave:{usuario_id}"


def tombstone_key(usuario_id: str) -> str:
    """The same key as the read model's tombstone in generation 0 (projections.borrado_key), which keeps it."""
    return f"usuarios:borrado:{usuario_id}"


class DataKeys:
    def __init__(self, kv: KeyValue, redis: Redis, ring: KeyRing) -> None:
        self.kv = leader_reads(kv)  # `create` seals with what it reads back: it must be the key that is stored
        self.redis = redis
        self.ring = ring
        self._cache_if_not_erased = redis.register_script(CACHE_IF_NOT_ERASED)

    async def create(self, usuario_id: str) -> bytes:
        """A fresh data key for a new user, stored wrapped before anything is sealed with it.

        Create-if-absent: a retry of the same registration (same Idempotency-Key, so the same user id) gets
        the key stored first, so whichever attempt's event lands, its data opens with the stored key.
        """
        dek, wrapped = self.ring.new_data_key()
        try:
            await self.kv.create(usuario_id, wrapped.encode())
            return dek
        except KeyWrongLastSequenceError:
            entry = await self.kv.get(usuario_id)
            if not entry.value:
                raise
            return self.ring.unwrap(entry.value.decode())

    async def get(self, usuario_id: str, cached: str | None = None) -> bytes | None:
        """The user's data key; None when it does not exist (never created, or erased)."""
        if cached and KeyRing.key_id_of(cached) in self.ring.key_ids:
            return self.ring.unwrap(cached)
        try:  # not cached, or cached under a master key this process no longer holds (rotated since)
            entry = await self.kv.get(usuario_id)
        except KeyNotFoundError:
            return None
        if not entry.value:
            return None
        wrapped = entry.value.decode()
        await self._cache_if_not_erased(
            keys=[cache_key(usuario_id), tombstone_key(usuario_id)], args=[wrapped, CACHE_TTL_S]
        )
        return self.ring.unwrap(wrapped)

    async def delete(self, usuario_id: str, *, erasure: bool = False) -> bool:
        """Compensation for a registration that did not happen, or the last step of an erasure (`erasure`).

        An erasure destroys the key in USER_KEYS whatever Redis does: that is the CP side, and what makes every
        sealed copy unreadable. Its Redis part (`forget_cached`) goes first when Redis answers; False says it did
        not, and the caller forgets the cached copy once Redis is back."""
        forgotten = True
        if erasure:
            try:
                await self.forget_cached(usuario_id)
            except REDIS_DOWN:
                forgotten = False
        with contextlib.suppress(KeyNotFoundError, KeyWrongLastSequenceError):
            await self.kv.purge(usuario_id)
        if not erasure:
            await self.redis.delete(cache_key(usuario_id))
        return forgotten

    async def forget_cached(self, usuario_id: str) -> None:
        """An erased user's key leaves the cache for good, in one transaction: the tombstone (so no read in flight
        can cache it again; it outlives any cached copy), then the delete. NX: where the read model has set its
        own (permanent) tombstone, it must not start to expire."""
        async with self.redis.pipeline(transaction=True) as tx:
            tx.set(tombstone_key(usuario_id), b"1", ex=CACHE_TTL_S, nx=True)
            tx.delete(cache_key(usuario_id))
            await tx.execute()

    async def drop_cached(self, usuario_ids: list[str]) -> None:
        """Cached copies of keys already destroyed (an erasure met Redis down, then the process stopped before
        Redis returned): one DEL for all of them, from the start-up sweep."""
        if usuario_ids:
            await self.redis.delete(*(cache_key(usuario_id) for usuario_id in usuario_ids))


def seal(dek: bytes, usuario_id: str, personal: dict[str, str]) -> dict[str, str]:
    cipher = FieldCipher(dek, usuario_id)
    return {field: cipher.seal(field, personal[field]) for field in PERSONAL_FIELDS}


def open_sealed(dek: bytes, usuario_id: str, sealed: dict[str, str]) -> dict[str, str]:
    cipher = FieldCipher(dek, usuario_id)
    return {field: cipher.open(field, sealed[field]) for field in PERSONAL_FIELDS}
