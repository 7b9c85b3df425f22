"""The first admin (EVENTFLOW_ADMIN_EMAIL / _PASSWORD) at every start, on the real users service: an account
that held the email before is taken over cleanly, a start that died halfway is finished, and a weak configured
password stops the start."""

from __future__ import annotations

import base64
import hashlib
import time
import uuid

import orjson
import pytest

from eventflow.claims import UniquenessClaims
from eventflow.crypto import Pseudonymizer
from services.users.bootstrap import CLAIMS_BUCKET, create_app
from tests.users import factories
from tests.utils.app import api_client
from tests.utils.auth import tokens

pytestmark = pytest.mark.asyncio(loop_scope="module")


def roles_in(token: str) -> list[str]:
    body = token.split(".")[1]
    roles: list[str] = orjson.loads(base64.urlsafe_b64decode(body + "=" * (-len(body) % 4)))["roles"]
    return roles


def new_admin() -> tuple[str, str]:
    return f"operaciones.{uuid.uuid4().hex[:8]}@pruebas.example", factories.password()


async def test_an_account_that_held_the_admin_email_loses_its_sessions_when_it_becomes_the_admin(client, servers):
    """Someone registered the email before the operator configured it as the admin's: the start sets the
    configured password and the admin role, so their old sessions must not refresh into admin tokens."""
    email, password = new_admin()
    squatter = factories.usuario(email=email)
    assert (await client.post("/api/usuarios", json=squatter)).status_code == 201
    theirs = await tokens(client, email, squatter["password"])
    async with api_client(create_app(servers.settings(admin_email=email, admin_password=password))) as users:
        refreshed = await users.post("/api/auth/refresh", json={"refresh_token": theirs["refresh_token"]})
        assert refreshed.status_code == 401, refreshed.text
        denied = await users.post("/api/auth/token", json={"email": email, "password": squatter["password"]})
        assert denied.status_code == 401
        assert "admin" in roles_in((await tokens(users, email, password))["access_token"])


async def test_a_start_that_died_midway_through_registering_the_admin_is_finished_by_the_next(client, servers, js):
    """The dead start had claimed the email for the admin's id (derived from its Idempotency-Key) and written
    nothing else: the next start must not stop at the claim, nor fail for want of credentials."""
    email, password = new_admin()
    settings = servers.settings(admin_email=email, admin_password=password)
    pseudonyms = Pseudonymizer(settings.pseudonym_key_bytes)
    digest = hashlib.sha256(email.casefold().encode()).hexdigest()
    admin_id = pseudonyms.id_for("usuario", f"first-admin:{digest}")
    claims = UniquenessClaims(await js.key_value(CLAIMS_BUCKET))
    await claims.kv.create(pseudonyms.pseudonym("email", email), orjson.dumps({"owner": admin_id, "at": time.time()}))
    async with api_client(create_app(settings)) as users:
        got = await tokens(users, email, password)
        me = await users.get("/api/usuarios/me", headers={"Authorization": f"Bearer {got['access_token']}"})
        assert me.status_code == 200 and me.json()["id"] == admin_id
        assert "admin" in me.json()["roles"]


@pytest.mark.parametrize("weak", ["contraseña", "corta", "operaciones siempre"])
async def test_a_configured_admin_password_that_breaks_the_policy_stops_the_start(servers, weak):
    email = f"operaciones.{uuid.uuid4().hex[:8]}@pruebas.example"
    with pytest.raises(RuntimeError, match="EVENTFLOW_ADMIN_PASSWORD breaks the password policy") as failed:
        async with api_client(create_app(servers.settings(admin_email=email, admin_password=weak))):
            pass
    assert weak not in str(failed.value)
