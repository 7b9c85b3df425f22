"""Signing-key rotation on the real users service: new tokens carry the new key, tokens of the old one keep
verifying until they expire, and the JWKS lists both meanwhile, also when another replica rotated."""

from __future__ import annotations

import asyncio
import base64
from typing import Any

import orjson
import pytest

from eventflow.signing_keys import JWKS_BUCKET, read_published
from services.users.bootstrap import create_app
from tests.utils.app import api_client
from tests.utils.auth import bearer, registrar, tokens

pytestmark = pytest.mark.asyncio(loop_scope="module")


def part(token: str, n: int) -> dict[str, Any]:
    raw = token.split(".")[n]
    decoded: dict[str, Any] = orjson.loads(base64.urlsafe_b64decode(raw + "=" * (-len(raw) % 4)))
    return decoded


async def listed(client) -> set[str]:
    resp = await client.get("/.well-known/jwks.json")
    assert resp.status_code == 200
    keys = resp.json()["keys"]
    assert all("d" not in key for key in keys), "never a private key"
    return {key["kid"] for key in keys}


async def test_after_a_rotation_old_and_new_tokens_both_verify_and_the_jwks_lists_both(app, client, js):
    cuenta = await registrar(client)
    old_kid = part(cuenta.token, 0)["kid"]
    # The verifier has just looked at the keys, so it would not look again within a second on its own: our own
    # fresh token must verify all the same.
    await app.state.published_keys.refresh(force=True)
    new_kid = await app.state.identidad.emisor.keys.rotate()
    fresh = (await tokens(client, cuenta.email, cuenta.password))["access_token"]
    assert part(fresh, 0)["kid"] == new_kid != old_kid
    for token in (cuenta.token, fresh):
        me = await client.get("/api/usuarios/me", headers=bearer(token))
        assert me.status_code == 200, me.text
        assert me.json()["id"] == cuenta.id
    assert {old_kid, new_kid} <= await listed(client)
    published = await read_published(await js.key_value(JWKS_BUCKET))
    assert published[new_kid]["not_after"] is None, "the current key"
    assert published[old_kid]["not_after"] >= part(cuenta.token, 1)["exp"], "kept until its last token expires"
    renewed = await client.post("/api/auth/refresh", json={"refresh_token": cuenta.refresh_token})
    assert part(renewed.json()["access_token"], 0)["kid"] == new_kid, "a refresh signs with the new key too"


async def test_a_key_another_replica_rotated_in_is_listed_at_once_and_its_tokens_verify(app, client, servers):
    other = create_app(servers.settings())
    async with api_client(other) as replica:
        cuenta = await registrar(replica)
        kid = await other.state.identidad.emisor.keys.rotate()
        # Listed by this replica's JWKS within about a second (it reads the keys again at most once a second),
        # not after the minute its background refresh waits; the deadline is generous, the wait is not timed.
        for _ in range(200):
            if kid in await listed(client):
                break
            await asyncio.sleep(0.05)
        assert kid in await listed(client)
        theirs = (await tokens(replica, cuenta.email, cuenta.password))["access_token"]
        assert part(theirs, 0)["kid"] == kid
        me = await client.get("/api/usuarios/me", headers=bearer(theirs))
        assert me.status_code == 200 and me.json()["id"] == cuenta.id
