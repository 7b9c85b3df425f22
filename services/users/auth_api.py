"""HTTP: sign-in (`POST /api/auth/token`), refresh, sign-out, and the issuer's public keys (JWKS)."""

from __future__ import annotations

import contextlib
from ipaddress import ip_address
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Request, Response
from pydantic import BaseModel, ConfigDict, Field

from eventflow.errors import Unprocessable
from eventflow.responses import JsonResponse
from eventflow.signing_keys import PublishedKeys
from services.users import identidad
from services.users.api import Deps, IdentidadDep

router = APIRouter(tags=["auth"])
Secret = Annotated[str, Field(max_length=1_000, json_schema_extra={"format": "password", "writeOnly": True})]


class TokenIn(BaseModel):
    """A person's email and password, or a service's client credentials (`grant_type: client_credentials`)."""

    model_config = ConfigDict(extra="forbid")
    email: str | None = Field(default=None, max_length=400)
    password: Secret | None = None
    grant_type: str | None = Field(default=None, max_length=40)
    client_id: str | None = Field(default=None, max_length=64)
    client_secret: Secret | None = None


class RefreshIn(BaseModel):
    model_config = ConfigDict(extra="forbid")
    refresh_token: str = Field(min_length=1, max_length=2_000)


class TokenOut(BaseModel):
    access_token: str
    token_type: str
    expires_in: int
    refresh_token: str | None = None


def client_address(request: Request) -> str:
    """The client's address, for the sign-in throttle. Behind our proxies (the peer is one of them), the nearest
    X-Forwarded-For hop that is not one of them: hops further left were written by whoever sent the request, so
    a client could name a new address on every guess; the hops a proxy appended cannot be forged."""
    peer = request.client.host if request.client else "unknown"
    trusted = {p.strip() for p in request.app.state.trusted_proxies.split(",") if p.strip()}
    if peer not in trusted:
        return peer
    for hop in reversed(request.headers.get("x-forwarded-for", "").split(",")):
        try:
            address = str(ip_address(hop.strip()))
        except ValueError:
            return peer  # a hop that is no address: nothing left of it can be trusted
        if address not in trusted:
            return address
    return peer


async def get_keys(request: Request) -> PublishedKeys:
    keys: PublishedKeys = request.app.state.published_keys
    return keys


@router.post("/api/auth/token", response_model=TokenOut)
async def token(body: TokenIn, request: Request, deps: IdentidadDep) -> Response:
    """200 with a Bearer access token (JWT, at most 15 minutes) and a refresh token; 401 for a wrong email or
    password alike; 429 with Retry-After after repeated failures."""
    if body.grant_type == "client_credentials":
        if not body.client_id or not body.client_secret:
            raise Unprocessable("client_credentials needs client_id and client_secret")
        tokens = await identidad.token_de_servicio(body.client_id, body.client_secret, deps)
    elif body.email is not None and body.password is not None and body.grant_type in (None, "password"):
        tokens = await identidad.iniciar_sesion(body.email, body.password, client_address(request), deps)
    else:
        raise Unprocessable("send email and password (or grant_type client_credentials)")
    return _tokens(tokens.body())


@router.post("/api/auth/refresh", response_model=TokenOut)
async def refresh(body: RefreshIn, deps: IdentidadDep) -> Response:
    """A new pair; the refresh token sent stops working. Sending an already used one ends its whole session."""
    return _tokens((await identidad.renovar(body.refresh_token, deps)).body())


@router.post("/api/auth/logout", status_code=204)
async def logout(body: RefreshIn, deps: IdentidadDep) -> Response:
    await identidad.cerrar_sesion(body.refresh_token, deps)
    return Response(status_code=204)


@router.get("/.well-known/jwks.json")
async def jwks(keys: Annotated[PublishedKeys, Depends(get_keys)], deps: Deps) -> Response:
    """The public keys that verify our tokens (RFC 7517), the retiring ones included until their tokens expire.
    Read again at most once a second: a key another replica rotated in is listed at once, not after the minute
    the background refresh waits (a client fetches this exactly when it met a token with an unknown kid)."""
    if deps.cp_connected():
        with contextlib.suppress(Exception):  # no answer in time: the keys last read still verify
            await keys.refresh()
    return JsonResponse(keys.jwks(), headers={"Cache-Control": "public, max-age=60"})


def _tokens(body: dict[str, Any]) -> Response:
    return JsonResponse(body, headers={"Cache-Control": "no-store", "Pragma": "no-cache"})
