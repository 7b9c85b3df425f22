"""Erasure while Redis (the AP side) is down: the CP part completes, the read model's part follows when Redis returns.

Its own nats-server and redis-server (it kills Redis), so no other test sees the outage.
"""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest
import redis.asyncio as aioredis
from nats.js.errors import KeyNotFoundError

from services.users import borrado, projections
from services.users.bootstrap import create_app
from services.users.privacy import cache_key
from tests.reservations.helpers import eventually
from tests.users.signed_in import admin_headers, registered
from tests.utils.app import api_client
from tests.utils.servers import running_servers

pytestmark = pytest.mark.slow
GUARD_S = 60.0  # only so that a hang fails the test instead of the run


async def test_an_erasure_with_redis_down_destroys_the_key_now_and_the_read_model_forgets_when_redis_returns(
    tmp_path: Path,
) -> None:
    with running_servers(tmp_path) as servers:
        app = create_app(servers.settings())
        async with api_client(app) as client:
            user, own = await registered(client)
            usuario_id, boss = user["id"], await admin_headers(client)
            assert (await client.get(f"/api/usuarios/{usuario_id}", headers=own)).status_code == 200  # key cached
            async with aioredis.Redis.from_url(servers.redis.url) as rds:
                assert await rds.exists(cache_key(usuario_id), projections.doc_key(usuario_id)) == 2
            servers.redis.kill()
            try:
                erased = await asyncio.wait_for(client.delete(f"/api/usuarios/{usuario_id}", headers=own), GUARD_S)
                assert erased.status_code == 204, erased.text
                with pytest.raises(KeyNotFoundError):  # the data key is gone from USER_KEYS (the CP side)
                    await app.state.deps.data_keys.kv.get(usuario_id)
            finally:
                servers.redis.start_again()
            async with aioredis.Redis.from_url(servers.redis.url) as rds:

                async def forgotten() -> bool:
                    return await rds.exists(cache_key(usuario_id), projections.doc_key(usuario_id)) == 0

                await eventually(forgotten, GUARD_S)  # the cached wrapped key too, not only the document
            gone = await client.get(f"/api/usuarios/{usuario_id}", headers=boss)
            assert gone.status_code == 404, gone.text


async def test_a_cached_key_left_by_an_erasure_during_an_outage_goes_at_the_next_start(tmp_path: Path) -> None:
    """Redis is down at the erasure and the process stops before Redis returns (its retry dies with it): the next
    start's sweep deletes the cached copy of the already destroyed key."""
    with running_servers(tmp_path) as servers:
        app = create_app(servers.settings())
        async with api_client(app) as client:
            user, own = await registered(client)
            usuario_id = user["id"]
            assert (await client.get(f"/api/usuarios/{usuario_id}", headers=own)).status_code == 200  # key cached
            servers.redis.kill()
            try:
                erased = await asyncio.wait_for(client.delete(f"/api/usuarios/{usuario_id}", headers=own), GUARD_S)
                assert erased.status_code == 204, erased.text
                for retry in list(borrado._olvidos):  # what a stop of the process does to them
                    retry.cancel()
                await asyncio.gather(*borrado._olvidos, return_exceptions=True)
            finally:
                servers.redis.start_again()
            async with aioredis.Redis.from_url(servers.redis.url) as rds:
                assert await rds.exists(cache_key(usuario_id)) == 1  # the copy the outage left
                deps = app.state.deps
                assert await borrado.completar_pendientes(deps.store.js, deps, app.state.identidad) == []
                assert await rds.exists(cache_key(usuario_id)) == 0
