"""With NATS (the CP side) down, reads of known users keep working from Redis (tokens verify with the keys in
memory; the roles come from the caller's own token); writes refuse cleanly."""

from __future__ import annotations

import asyncio

import pytest

from eventflow.servers import start_nats
from services.users.bootstrap import create_app
from tests.users import factories
from tests.users.signed_in import admin_headers, registered
from tests.utils.app import api_client
from tests.utils.servers import running_servers


@pytest.mark.slow
async def test_reads_stay_available_and_writes_answer_503_while_nats_is_down(tmp_path):
    with running_servers(tmp_path) as servers:
        async with api_client(create_app(servers.settings())) as client:
            read_before, mine = await registered(client)  # signing in needs NATS: done before it goes
            never_read, never_reads = await registered(client)
            boss = await admin_headers(client)
            assert (await client.get(f"/api/usuarios/{read_before['id']}", headers=mine)).status_code == 200
            assert (await client.get(f"/api/usuarios/{read_before['id']}", headers=boss)).status_code == 200
            body = factories.usuario()
            nats = servers.nats
            nats.stop()
            try:
                available = await client.get(f"/api/usuarios/{read_before['id']}", headers=mine)
                assert available.status_code == 200
                assert available.json() == read_before
                by_admin = await client.get(f"/api/usuarios/{read_before['id']}", headers=boss)
                assert by_admin.status_code == 503, "another user's roles cannot be read: not guessed"
                assert by_admin.json()["type"] == "/problems/account-unavailable"
                uncached, refused = await asyncio.gather(  # each waits out the 5 s NATS request timeout
                    client.get(f"/api/usuarios/{never_read['id']}", headers=never_reads),
                    client.post("/api/usuarios", json=body),
                )
                assert uncached.status_code == 503
                assert uncached.json()["type"] == "/problems/keys-unavailable"
                assert refused.status_code == 503
                assert refused.json()["type"] == "/problems/registration-not-completed"
            finally:
                servers.nats = start_nats(nats.port, nats.data_dir, nats.log_path)
            # Back up: the claim NATS applied late (nats-py flushes its reconnect buffer) is given back by the
            # reconciliation, so the same data registers; the uncached user reads again.
            for _ in range(200):
                retried = await client.post("/api/usuarios", json=body)
                if retried.status_code != 409:
                    break
                await asyncio.sleep(0.1)
            assert retried.status_code == 201
            assert (await client.get(f"/api/usuarios/{never_read['id']}", headers=never_reads)).status_code == 200
