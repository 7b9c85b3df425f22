"""Sessions on the real users service: what a refresh carries, concurrent refreshes, password changes that are
refused, and where the sign-in throttle counts a client behind a proxy."""

from __future__ import annotations

import asyncio
import base64

import orjson
import pytest

from eventflow.auth import COMPRADOR, ORGANIZADOR
from services.users.throttle import PAIR
from tests.users import factories
from tests.users.signed_in import admin_headers
from tests.utils.auth import bearer, registrar, tokens

pytestmark = pytest.mark.asyncio(loop_scope="module")
PASSWORD_PATH = "/api/usuarios/me/password"


def roles_in(token: str) -> list[str]:
    body = token.split(".")[1]
    roles: list[str] = orjson.loads(base64.urlsafe_b64decode(body + "=" * (-len(body) % 4)))["roles"]
    return roles


async def refresh(client, refresh_token: str):
    return await client.post("/api/auth/refresh", json={"refresh_token": refresh_token})


async def test_a_refresh_after_an_admin_changed_the_roles_carries_the_new_roles(client):
    cuenta = await registrar(client)
    assert roles_in(cuenta.token) == [COMPRADOR]
    boss = await admin_headers(client)
    changed = await client.put(f"/api/usuarios/{cuenta.id}/roles", json={"roles": [ORGANIZADOR]}, headers=boss)
    assert changed.status_code == 200, changed.text
    assert roles_in(cuenta.token) == [COMPRADOR], "a token already issued keeps what it says until it expires"
    renewed = await refresh(client, cuenta.refresh_token)
    assert renewed.status_code == 200
    assert roles_in(renewed.json()["access_token"]) == [COMPRADOR, ORGANIZADOR]
    taken_back = await client.put(f"/api/usuarios/{cuenta.id}/roles", json={"roles": []}, headers=boss)
    assert taken_back.json()["roles"] == [COMPRADOR]
    again = await refresh(client, renewed.json()["refresh_token"])
    assert roles_in(again.json()["access_token"]) == [COMPRADOR], "and a role taken away goes at the next refresh"


async def test_concurrent_refreshes_of_one_token_one_succeeds_and_the_session_ends(client):
    """Strict reuse detection: the losers of the compare-and-set find the token they sent already rotated away,
    which is exactly what a stolen copy looks like, so the whole family is revoked, the winner's new refresh token
    included. Two tabs refreshing at once sign the user out (its access token lives on until it expires); a
    client must serialize its refreshes."""
    cuenta = await registrar(client)
    answers = await asyncio.gather(*(refresh(client, cuenta.refresh_token) for _ in range(5)))
    assert sorted(a.status_code for a in answers) == [200] + [401] * 4, [a.text for a in answers]
    assert {a.json()["type"] for a in answers if a.status_code == 401} == {"/problems/unauthenticated"}
    (winner,) = [a.json() for a in answers if a.status_code == 200]
    assert (await refresh(client, winner["refresh_token"])).status_code == 401, "the family is revoked"
    me = await client.get("/api/usuarios/me", headers=bearer(winner["access_token"]))
    assert me.status_code == 200, "an access token already issued is not revoked"
    assert (await tokens(client, cuenta.email, cuenta.password))["refresh_token"], "signing in again works"


async def test_a_password_change_without_a_token_is_401_with_www_authenticate(client):
    change = {"actual": "lo que sea de largo", "nueva": factories.password()}
    for headers in ({}, {"Authorization": "Bearer x.y.z"}):
        resp = await client.put(PASSWORD_PATH, json=change, headers=headers)
        assert resp.status_code == 401
        assert resp.headers["www-authenticate"].startswith("Bearer")
        assert resp.headers["content-type"] == "application/problem+json"


@pytest.mark.parametrize(
    ("nueva", "code"),
    [
        ("corta", "password_too_short"),
        ("contraseña123", "password_too_common"),
        ("x" * 257, "password_too_long"),
        ("{nombre} es mi clave", "password_personal"),
        ("{email} siempre", "password_personal"),
    ],
)
async def test_a_new_password_that_breaks_the_policy_is_a_422_problem_and_changes_nothing(client, nueva, code):
    body = factories.usuario()
    cuenta = await registrar(client, **body)
    nueva = nueva.format(nombre=body["nombre"], email=body["email"])
    other = await tokens(client, cuenta.email, cuenta.password)  # a second device
    resp = await client.put(PASSWORD_PATH, json={"actual": cuenta.password, "nueva": nueva}, headers=cuenta.headers)
    assert resp.status_code == 422, resp.text
    assert resp.headers["content-type"] == "application/problem+json"
    problem = resp.json()
    assert problem["type"] == "/problems/validation"
    assert ("nueva", code) in {(e["field"], e["code"]) for e in problem["errors"]}
    assert nueva not in resp.text and cuenta.password not in resp.text
    assert (await tokens(client, cuenta.email, cuenta.password))["access_token"], "the old password still works"
    assert (await refresh(client, other["refresh_token"])).status_code == 200, "no session was ended"


async def test_a_wrong_current_password_is_refused_before_the_new_one_is_looked_at(client):
    cuenta = await registrar(client)
    resp = await client.put(PASSWORD_PATH, json={"actual": "no es la mía", "nueva": "corta"}, headers=cuenta.headers)
    assert resp.status_code == 401 and resp.json()["type"] == "/problems/invalid-credentials"


async def test_a_client_cannot_escape_the_throttle_by_writing_its_own_forwarded_for(client):
    """Our proxy appends the address it saw; hops further left are whatever the client wrote."""
    cuenta = await registrar(client)
    wrong = {"email": cuenta.email, "password": "adivinanza bien larga"}
    for n in range(PAIR.limit):
        spoofed = {"X-Forwarded-For": f"10.9.8.{n}, 203.0.113.77"}
        assert (await client.post("/api/auth/token", json=wrong, headers=spoofed)).status_code == 401
    again = {"X-Forwarded-For": "10.9.8.200, 203.0.113.77"}
    blocked = await client.post("/api/auth/token", json={**wrong, "password": cuenta.password}, headers=again)
    assert blocked.status_code == 429, "counted for 203.0.113.77, the address our proxy saw, every time"
    elsewhere = {"X-Forwarded-For": "198.51.100.77"}
    good = await client.post("/api/auth/token", json={**wrong, "password": cuenta.password}, headers=elsewhere)
    assert good.status_code == 200


async def test_a_password_change_ends_every_other_session_of_the_user_and_nobody_elses(client):
    cuenta, neighbour = await registrar(client), await registrar(client)
    devices = [await tokens(client, cuenta.email, cuenta.password) for _ in range(6)]
    theirs = await tokens(client, neighbour.email, neighbour.password)
    change = {"actual": cuenta.password, "nueva": factories.password()}
    assert (await client.put(PASSWORD_PATH, json=change, headers=cuenta.headers)).status_code == 204
    ended = await asyncio.gather(*(refresh(client, device["refresh_token"]) for device in devices))
    assert [r.status_code for r in ended] == [401] * len(devices)
    assert (await refresh(client, cuenta.refresh_token)).status_code == 200, "the session that changed it stays"
    assert (await refresh(client, theirs["refresh_token"])).status_code == 200
