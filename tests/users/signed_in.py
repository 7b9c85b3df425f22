"""Reading users the way a client must now: with the bearer token of that user (or of the admin), asked of the
real token endpoint (tests/utils/auth.py), never minted with the issuer's key."""

from __future__ import annotations

from typing import Any

import httpx

from tests.users import factories
from tests.utils.auth import admin, bearer, sign_in


async def headers_of(client: httpx.AsyncClient, body: dict[str, Any]) -> dict[str, str]:
    """Bearer headers of the user registered with `body` (its email and password)."""
    return bearer(await sign_in(client, body["email"], body["password"]))


async def admin_headers(client: httpx.AsyncClient) -> dict[str, str]:
    return (await admin(client)).headers


async def registered(
    client: httpx.AsyncClient, body: dict[str, Any] | None = None, headers: dict[str, str] | None = None
) -> tuple[dict[str, Any], dict[str, str]]:
    """Registers `body` (new random data by default) and signs in as them: (the user as answered, bearer headers)."""
    body = body or factories.usuario()
    resp = await client.post("/api/usuarios", json=body, headers=headers)
    assert resp.status_code == 201, resp.text
    return resp.json(), await headers_of(client, body)
