"""Signing in, as a client does: register, ask the token endpoint, send `Authorization: Bearer`.

Every test that needs an identity gets it this way (no test switches authorization off or mints tokens with
the issuer's key): the admin comes from the test settings (tests/utils/servers.py), organizers and door
staff are ordinary users the admin gave a role.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from typing import Any

import httpx

from tests.utils.servers import ADMIN_EMAIL, ADMIN_PASSWORD

PASSWORD = "mi clave de prueba bastante larga"


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


@dataclass
class Cuenta:
    """A signed-in user as a test holds it."""

    id: str
    email: str
    token: str
    refresh_token: str
    password: str = PASSWORD

    @property
    def headers(self) -> dict[str, str]:
        return bearer(self.token)


def datos_de_registro(**overrides: Any) -> dict[str, Any]:
    tag = uuid.uuid4().hex[:10]
    body: dict[str, Any] = {
        "tipo_documento": "Pasaporte",
        "nro_documento": f"P{uuid.uuid4().int % 10**8:08d}",
        "nombre": f"Nombre{tag}",
        "apellido": f"Apellido{tag}",
        "email": f"persona.{tag}@ejemplo.com",
        "password": PASSWORD,
    }
    body.update(overrides)
    return body


async def tokens(users: httpx.AsyncClient, email: str, password: str) -> dict[str, Any]:
    resp = await users.post("/api/auth/token", json={"email": email, "password": password})
    assert resp.status_code == 200, resp.text
    body: dict[str, Any] = resp.json()
    return body


async def sign_in(users: httpx.AsyncClient, email: str, password: str = PASSWORD) -> str:
    return str((await tokens(users, email, password))["access_token"])


async def registrar(users: httpx.AsyncClient, **overrides: Any) -> Cuenta:
    """A new comprador, registered and signed in."""
    body = datos_de_registro(**overrides)
    resp = await users.post("/api/usuarios", json=body)
    assert resp.status_code == 201, resp.text
    got = await tokens(users, body["email"], body["password"])
    return Cuenta(resp.json()["id"], body["email"], got["access_token"], got["refresh_token"], body["password"])


async def admin(users: httpx.AsyncClient) -> Cuenta:
    got = await tokens(users, ADMIN_EMAIL, ADMIN_PASSWORD)
    me = await users.get("/api/usuarios/me", headers=bearer(got["access_token"]))
    assert me.status_code == 200, me.text
    return Cuenta(me.json()["id"], ADMIN_EMAIL, got["access_token"], got["refresh_token"], ADMIN_PASSWORD)


async def con_rol(users: httpx.AsyncClient, *roles: str, **overrides: Any) -> Cuenta:
    """A new user the admin gave `roles` to, signed in again so that the token carries them."""
    cuenta = await registrar(users, **overrides)
    boss = await admin(users)
    resp = await users.put(f"/api/usuarios/{cuenta.id}/roles", json={"roles": list(roles)}, headers=boss.headers)
    assert resp.status_code == 200, resp.text
    got = await tokens(users, cuenta.email, cuenta.password)
    cuenta.token, cuenta.refresh_token = got["access_token"], got["refresh_token"]
    return cuenta
