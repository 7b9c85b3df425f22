"""Master key rotation on real NATS and Redis: new key version, re-wrap while users are read and written, then
the old key is removed and everything still reads (users, and sign-in with the re-wrapped signing key)."""

from __future__ import annotations

import asyncio
import base64
import os

import pytest

from eventflow import keys
from eventflow.crypto import KeyRing
from eventflow.jetstream import connect
from services.reservations.ticket_keys import TicketKeys
from services.users.bootstrap import create_app
from services.users.privacy import KEYS_BUCKET
from services.users.rotar_claves import rotate
from tests.users import factories
from tests.users.signed_in import admin_headers
from tests.utils.app import api_client
from tests.utils.servers import TEST_MASTER_KEY, running_servers


@pytest.mark.asyncio
async def test_rotation_rewraps_every_data_key_while_users_are_read_and_written(tmp_path, monkeypatch):
    new_key = base64.b64encode(os.urandom(32)).decode()
    with running_servers(tmp_path) as servers:
        old = servers.settings()  # master key id k1
        async with api_client(create_app(old)) as client:
            users = []
            for _ in range(5):
                body = factories.usuario()
                resp = await client.post("/api/usuarios", json=body)
                assert resp.status_code == 201
                users.append((body, resp.json()["id"]))
        nc = await connect(old.nats_url, "rotation-test")
        signer = await (await TicketKeys.open(nc.jetstream(), keys.key_ring(old, ""))).firmante("evento-rotado")
        new = servers.settings(master_key=new_key, master_key_id="k2")
        monkeypatch.setenv(keys.PREVIOUS_ENV, f"k1:{TEST_MASTER_KEY}")
        app = create_app(new)
        async with api_client(app) as client:
            boss = await admin_headers(client)
            stop = asyncio.Event()

            async def traffic() -> int:
                """Registers and reads users until the rotation is over: every answer must be a success."""
                done = 0
                while not stop.is_set() or done < 5:
                    body = factories.usuario()
                    resp = await client.post("/api/usuarios", json=body)
                    assert resp.status_code == 201
                    users.append((body, resp.json()["id"]))
                    for _, usuario_id in users[:3]:
                        assert (await client.get(f"/api/usuarios/{usuario_id}", headers=boss)).status_code == 200
                    done += 1
                return done

            running = asyncio.create_task(traffic())
            in_use = await rotate(new)
            stop.set()
            assert await running > 0
            kv = await app.state.deps.store.js.key_value(KEYS_BUCKET)
            assert set(in_use) == {"k2"}, in_use  # every data key, and the signing key's, under k2 now
            assert set(await keys.key_ids_in_use(kv)) == {"k2"}
        only_k2 = KeyRing({"k2": base64.b64decode(new_key)}, "k2")
        reopened = await (await TicketKeys.open(nc.jetstream(), only_k2)).firmante("evento-rotado")
        assert reopened.public_key().public_bytes_raw() == signer.public_key().public_bytes_raw()  # a ticket key too
        await nc.drain()
        monkeypatch.delenv(keys.PREVIOUS_ENV)  # the old key is gone
        async with api_client(create_app(new)) as client:
            boss = await admin_headers(client)  # the signing key opens with k2 alone
            for body, usuario_id in users:
                resp = await client.get(f"/api/usuarios/{usuario_id}", headers=boss)
                assert resp.status_code == 200 and resp.json()["email"] == body["email"], resp.text


def test_previous_keys_are_parsed_strictly():
    key = base64.b64encode(bytes(32)).decode()
    assert keys.previous_keys(f"k1:{key}, k0:{key}") == {"k1": bytes(32), "k0": bytes(32)}
    for bad in ("k1", f":{key}", "k1:c2hvcnQ="):
        with pytest.raises(ValueError, match=keys.PREVIOUS_ENV):
            keys.previous_keys(bad)
