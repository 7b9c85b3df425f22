"""Crypto-shredding holds against a read in flight: no copy of an erased user's data key survives the erasure."""

from __future__ import annotations

from typing import Any

import pytest

from services.users.privacy import cache_key, tombstone_key
from services.users.projections import borrado_key
from tests.reservations.helpers import eventually
from tests.users.signed_in import headers_of
from tests.utils.auth import datos_de_registro

pytestmark = pytest.mark.asyncio(loop_scope="module")


class EraseBetweenReadAndCache:
    """The USER_KEYS bucket as the data keys see it, except that the first read of `usuario_id` runs `erase`
    after the bucket answered: the interleaving where a cold read has the wrapped key in hand and has not yet
    cached it when the erasure purges the key and deletes the cache."""

    def __init__(self, kv: Any, usuario_id: str, erase: Any) -> None:
        self._kv, self._usuario_id, self._erase = kv, usuario_id, erase
        self.erased: Any = None

    async def get(self, key: str) -> Any:
        entry = await self._kv.get(key)
        if key == self._usuario_id and self.erased is None:
            self.erased = await self._erase()
        return entry

    def __getattr__(self, name: str) -> Any:
        return getattr(self._kv, name)


async def test_a_read_racing_an_erasure_cannot_put_the_data_key_back_in_the_cache(app, client, rds) -> None:
    body = datos_de_registro()
    created = await client.post("/api/usuarios", json=body)
    assert created.status_code == 201, created.text
    usuario_id, own = created.json()["id"], await headers_of(client, body)
    data_keys = app.state.deps.data_keys
    bucket = data_keys.kv
    racing = EraseBetweenReadAndCache(
        bucket, usuario_id, lambda: client.delete(f"/api/usuarios/{usuario_id}", headers=own)
    )
    await rds.delete(cache_key(usuario_id))  # a cold read: it asks the bucket, then caches what it got
    data_keys.kv = racing
    try:
        await data_keys.get(usuario_id)
    finally:
        data_keys.kv = bucket
    assert racing.erased is not None and racing.erased.status_code == 204, racing.erased
    assert not await rds.exists(cache_key(usuario_id)), "the erased user's wrapped data key is cached again"
    assert await data_keys.get(usuario_id) is None


async def test_an_erasure_leaves_the_read_models_tombstone_without_an_expiry(client, rds) -> None:
    """The cache's tombstone is the read model's own key in generation 0: given the cache's TTL, the read model's
    would expire an hour later, and a purchase of the erased user projected after that would be kept."""
    body = datos_de_registro()
    created = await client.post("/api/usuarios", json=body)
    assert created.status_code == 201, created.text
    usuario_id, own = created.json()["id"], await headers_of(client, body)
    assert tombstone_key(usuario_id) == borrado_key(usuario_id)
    assert (await client.delete(f"/api/usuarios/{usuario_id}", headers=own)).status_code == 204

    async def permanent() -> bool:
        return await rds.ttl(tombstone_key(usuario_id)) == -1  # -2: absent; > 0: expiring

    await eventually(permanent)
