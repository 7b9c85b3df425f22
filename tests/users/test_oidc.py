"""An external OpenID Connect issuer trusted by the users service (EVENTFLOW_OIDC_*): its tokens are verified
against its JWKS, discovered over HTTP, with its role names mapped to ours; its users are not ours, whatever their
`sub` looks like; a token of an issuer nobody configured is refused."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator

import httpx
import pytest
import pytest_asyncio
from joserfc.jwk import ECKey

from services.users.bootstrap import create_app
from tests.users.oidc_issuer import Issuer, serving
from tests.users.signed_in import registered
from tests.utils.app import api_client
from tests.utils.auth import bearer

pytestmark = pytest.mark.asyncio(loop_scope="module")
module_fixture = pytest_asyncio.fixture(scope="module", loop_scope="module")


@module_fixture
async def issuer() -> AsyncIterator[Issuer]:
    async with serving() as external:
        yield external


@module_fixture
async def users(servers, issuer: Issuer) -> AsyncIterator[httpx.AsyncClient]:
    settings = servers.settings(
        oidc_issuer=issuer.url,
        oidc_audience=issuer.audience,
        oidc_roles_claim="realm_access.roles",
        oidc_role_map="eventflow-admin:admin,organizer:organizador",
    )
    async with api_client(create_app(settings)) as client:
        yield client


def kc_sub() -> str:
    return f"f:{uuid.uuid4()}:ana"  # what Keycloak's federated users look like: no id of ours


async def test_an_external_users_token_is_accepted_and_me_is_a_404_problem(users, issuer):
    resp = await users.get("/api/usuarios/me", headers=bearer(issuer.token(kc_sub(), ["organizer"])))
    assert resp.status_code == 404, "verified (not a 401), but there is no user of ours behind it"
    assert resp.headers["content-type"] == "application/problem+json"
    assert resp.json()["type"] == "/problems/user-not-found"
    assert "discovery" in issuer.fetched and "jwks" in issuer.fetched, "the JWKS was found through discovery"


async def test_an_external_admin_passes_a_role_checked_route_and_a_mere_user_is_forbidden(users, issuer):
    local, mine = await registered(users)
    path = f"/api/usuarios/{local['id']}/roles"
    organizer = bearer(issuer.token(kc_sub(), ["organizer", "offline_access"]))
    forbidden = await users.put(path, json={"roles": ["organizador"]}, headers=organizer)
    assert forbidden.status_code == 403 and forbidden.json()["type"] == "/problems/forbidden"
    unmapped = bearer(issuer.token(kc_sub(), ["admin"]))  # our name, but not in this issuer's map: dropped
    assert (await users.put(path, json={"roles": ["organizador"]}, headers=unmapped)).status_code == 403
    boss = bearer(issuer.token(kc_sub(), ["eventflow-admin"]))
    granted = await users.put(path, json={"roles": ["organizador"]}, headers=boss)
    assert granted.status_code == 200, granted.text
    assert granted.json()["roles"] == ["comprador", "organizador"]
    read = await users.get(f"/api/usuarios/{local['id']}", headers=boss)
    assert read.status_code == 200 and read.json()["roles"] == ["comprador", "organizador"]
    assert (await users.get("/api/usuarios/me", headers=mine)).json()["roles"] == ["comprador", "organizador"]


async def test_an_external_sub_that_equals_one_of_our_ids_is_not_that_user(users, issuer):
    """Subjects are per issuer: another directory may well hand out a UUID that is one of our ids."""
    local, _ = await registered(users)
    impostor = bearer(issuer.token(local["id"], []))
    for path in (f"/api/usuarios/{local['id']}", f"/api/usuarios/{local['id']}/historial", "/api/usuarios/me"):
        resp = await users.get(path, headers=impostor)
        assert resp.status_code == 404, path
        assert local["email"] not in resp.text
    change = {"actual": "no la sabe nadie", "nueva": "otra clave bastante larga"}
    refused = await users.put("/api/usuarios/me/password", json=change, headers=impostor)
    assert refused.status_code == 403, "an external user's password is their identity provider's business"


async def test_tokens_of_an_unconfigured_issuer_or_for_another_audience_are_refused(users, issuer):
    local, _ = await registered(users)
    look_alike = ECKey.generate_key("P-256", parameters={"kid": issuer.key.kid})
    async with serving() as stranger:
        tokens = {
            "unknown issuer": stranger.token(kc_sub(), ["eventflow-admin"]),
            # names the trusted issuer and its key id, signed with another key: the signature decides
            "forged": Issuer(issuer.url, issuer.audience, look_alike).token(kc_sub(), ["eventflow-admin"]),
            "other audience": issuer.token(kc_sub(), ["eventflow-admin"], aud="otra-app"),
            "expired": issuer.token(kc_sub(), ["eventflow-admin"], exp=1_000_000_000),
        }
        for what, token in tokens.items():
            resp = await users.get(f"/api/usuarios/{local['id']}", headers=bearer(token))
            assert resp.status_code == 401, what
            assert resp.headers["www-authenticate"].startswith("Bearer"), what
        assert stranger.fetched == [], "nobody fetched the unconfigured issuer's keys"
