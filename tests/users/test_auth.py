"""Sign-in, tokens, sessions, roles and the first admin, on the real users service (real NATS and Redis)."""

from __future__ import annotations

import base64

import httpx
import orjson
import pytest
from fastapi import FastAPI

from eventflow.auth import ADMIN, COMPRADOR, ORGANIZADOR
from services.users.bootstrap import create_app
from services.users.throttle import ACCOUNT, PAIR, lockout_s
from tests.utils.app import api_client
from tests.utils.auth import PASSWORD, admin, bearer, con_rol, datos_de_registro, registrar, tokens
from tests.utils.servers import ADMIN_EMAIL

pytestmark = pytest.mark.asyncio(loop_scope="module")


def http(app: FastAPI) -> httpx.AsyncClient:
    client: httpx.AsyncClient = app.state.test_client
    return client


def claims_of(token: str) -> dict[str, object]:
    body = token.split(".")[1]
    decoded: dict[str, object] = orjson.loads(base64.urlsafe_b64decode(body + "=" * (-len(body) % 4)))
    return decoded


async def test_registration_takes_a_password_and_never_answers_it(app: FastAPI) -> None:
    body = datos_de_registro()
    resp = await http(app).post("/api/usuarios", json=body)
    assert resp.status_code == 201, resp.text
    assert body["password"] not in resp.text and "argon2" not in resp.text and "password" not in resp.json()


@pytest.mark.parametrize(
    ("password", "code"),
    [("corta", "password_too_short"), ("1234567890", "password_too_common"), ("Password123", "password_too_common")],
)
async def test_a_weak_password_is_refused_with_the_other_errors(app: FastAPI, password: str, code: str) -> None:
    resp = await http(app).post("/api/usuarios", json=datos_de_registro(password=password, email="no-es-email"))
    assert resp.status_code == 422
    codes = {(e["field"], e["code"]) for e in resp.json()["errors"]}
    assert ("password", code) in codes and ("email", "invalid_email") in codes
    assert password not in resp.text


async def test_sign_in_gives_a_short_lived_es256_token_with_the_users_claims(app: FastAPI) -> None:
    cuenta = await registrar(http(app))
    got = await tokens(http(app), cuenta.email, PASSWORD)
    assert got["token_type"] == "Bearer" and 0 < got["expires_in"] <= 900 and got["refresh_token"]
    header = orjson.loads(base64.urlsafe_b64decode(got["access_token"].split(".")[0] + "=="))
    assert header["alg"] == "ES256" and header["kid"]
    claims = claims_of(got["access_token"])
    assert claims["sub"] == cuenta.id and claims["roles"] == [COMPRADOR]
    assert {"iss", "aud", "exp", "iat", "jti"} <= set(claims)
    me = await http(app).get("/api/usuarios/me", headers=bearer(got["access_token"]))
    assert (me.status_code, me.json()["id"], me.json()["roles"]) == (200, cuenta.id, [COMPRADOR])


async def test_a_wrong_password_and_an_unknown_email_get_the_same_401(app: FastAPI) -> None:
    cuenta = await registrar(http(app))
    verifications: list[bool] = []
    hasher = app.state.identidad.hasher
    real = hasher.verify

    async def counting(stored: str | None, password: str) -> bool:
        verifications.append(stored is None)
        return await real(stored, password)

    hasher.verify = counting
    try:
        wrong = await http(app).post("/api/auth/token", json={"email": cuenta.email, "password": "no es la clave"})
        unknown = await http(app).post("/api/auth/token", json={"email": "nadie@ejemplo.com", "password": PASSWORD})
    finally:
        hasher.verify = real
    for resp in (wrong, unknown):
        assert resp.status_code == 401 and resp.headers["www-authenticate"].startswith("Bearer")
        assert resp.json()["type"] == "/problems/invalid-credentials"
    assert wrong.json()["detail"] == unknown.json()["detail"]
    assert verifications == [False, True], "an unknown email still costs one (dummy) password verification"


async def test_refresh_rotates_and_a_reused_refresh_token_revokes_the_family(app: FastAPI) -> None:
    cuenta = await registrar(http(app))
    first = cuenta.refresh_token
    second = (await http(app).post("/api/auth/refresh", json={"refresh_token": first})).json()
    assert second["refresh_token"] != first and second["access_token"]
    reused = await http(app).post("/api/auth/refresh", json={"refresh_token": first})
    assert reused.status_code == 401
    after = await http(app).post("/api/auth/refresh", json={"refresh_token": second["refresh_token"]})
    assert after.status_code == 401, "the reuse ended the whole family, the thief's copy and the real one"


async def test_logout_ends_the_session(app: FastAPI) -> None:
    cuenta = await registrar(http(app))
    assert (await http(app).post("/api/auth/logout", json={"refresh_token": cuenta.refresh_token})).status_code == 204
    assert (await http(app).post("/api/auth/refresh", json={"refresh_token": cuenta.refresh_token})).status_code == 401


async def test_a_password_change_needs_the_old_one_and_ends_the_other_sessions(app: FastAPI) -> None:
    cuenta = await registrar(http(app))
    other = await tokens(http(app), cuenta.email, PASSWORD)  # a second device
    path = "/api/usuarios/me/password"
    bad = await http(app).put(path, json={"actual": "no", "nueva": "otra clave bien larga"}, headers=cuenta.headers)
    assert bad.status_code == 401
    ok = await http(app).put(path, json={"actual": PASSWORD, "nueva": "otra clave bien larga"}, headers=cuenta.headers)
    assert ok.status_code == 204, ok.text
    assert (
        await http(app).post("/api/auth/refresh", json={"refresh_token": other["refresh_token"]})
    ).status_code == 401
    assert (await http(app).post("/api/auth/refresh", json={"refresh_token": cuenta.refresh_token})).status_code == 200
    assert (
        await http(app).post("/api/auth/token", json={"email": cuenta.email, "password": PASSWORD})
    ).status_code == 401
    await tokens(http(app), cuenta.email, "otra clave bien larga")


async def test_only_an_admin_assigns_roles_and_they_apply_from_the_next_token(app: FastAPI) -> None:
    cuenta = await registrar(http(app))
    self_service = await http(app).put(
        f"/api/usuarios/{cuenta.id}/roles", json={"roles": [ADMIN]}, headers=cuenta.headers
    )
    assert self_service.status_code == 403
    organizer = await con_rol(http(app), ORGANIZADOR)
    assert claims_of(organizer.token)["roles"] == [COMPRADOR, ORGANIZADOR]
    unknown = await http(app).put(
        f"/api/usuarios/{cuenta.id}/roles", json={"roles": ["rey"]}, headers=(await admin(http(app))).headers
    )
    assert unknown.status_code == 422


async def test_another_users_profile_is_a_404_and_an_admin_sees_it(app: FastAPI) -> None:
    ana, beto = await registrar(http(app)), await registrar(http(app))
    assert (await http(app).get(f"/api/usuarios/{beto.id}", headers=ana.headers)).status_code == 404
    assert (await http(app).get(f"/api/usuarios/{beto.id}/historial", headers=ana.headers)).status_code == 404
    assert (await http(app).get(f"/api/usuarios/{beto.id}")).status_code == 401
    boss = await admin(http(app))
    assert (await http(app).get(f"/api/usuarios/{beto.id}", headers=boss.headers)).json()["email"] == beto.email


async def test_the_first_admin_is_there_and_a_restart_changes_nothing(app: FastAPI, servers: object) -> None:
    boss = await admin(http(app))
    assert ADMIN in claims_of(boss.token)["roles"]
    cuenta = await app.state.identidad.cuentas.get(boss.id)
    async with api_client(create_app(servers.settings())) as again:  # type: ignore[attr-defined]
        assert (await admin(again)).id == boss.id
    assert await app.state.identidad.cuentas.get(boss.id) == cuenta, "same values: not rewritten"
    assert (await tokens(http(app), ADMIN_EMAIL, boss.password))["access_token"]


async def test_failed_sign_ins_are_throttled_with_retry_after_but_not_for_the_victims_address(app: FastAPI) -> None:
    cuenta = await registrar(http(app))
    attacker = {"X-Forwarded-For": "203.0.113.7"}  # the test client's peer is a trusted proxy here
    for _ in range(PAIR.limit):
        resp = await http(app).post(
            "/api/auth/token", json={"email": cuenta.email, "password": "adivinanza larga"}, headers=attacker
        )
        assert resp.status_code == 401
    blocked = await http(app).post(
        "/api/auth/token", json={"email": cuenta.email, "password": PASSWORD}, headers=attacker
    )
    assert blocked.status_code == 429 and int(blocked.headers["retry-after"]) > 0
    assert blocked.json()["type"] == "/problems/too-many-sign-in-attempts"
    victim = await http(app).post(
        "/api/auth/token",
        json={"email": cuenta.email, "password": PASSWORD},
        headers={"X-Forwarded-For": "198.51.100.2"},
    )
    assert victim.status_code == 200, "the account itself is not locked by one address's failures"
    assert lockout_s(ACCOUNT, 10_000) <= 60, "nobody can lock an account for long"


async def test_the_jwks_publishes_the_key_that_signs(app: FastAPI) -> None:
    cuenta = await registrar(http(app))
    kid = orjson.loads(base64.urlsafe_b64decode(cuenta.token.split(".")[0] + "=="))["kid"]
    jwks = (await http(app).get("/.well-known/jwks.json")).json()
    assert kid in {k["kid"] for k in jwks["keys"]} and all("d" not in k for k in jwks["keys"])


async def test_a_service_gets_its_own_token_with_its_credential_only(app: FastAPI, servers: object) -> None:
    settings = servers.settings()  # type: ignore[attr-defined]
    good = {"grant_type": "client_credentials", "client_id": "reservations", "client_secret": settings.client_secret}
    got = await http(app).post("/api/auth/token", json=good)
    assert got.status_code == 200 and claims_of(got.json()["access_token"])["sub"] == "svc:reservations"
    assert "refresh_token" not in got.json()
    forged = {**good, "client_id": "events"}  # reservations' secret does not open events' door
    assert (await http(app).post("/api/auth/token", json=forged)).status_code == 401
