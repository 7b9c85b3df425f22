"""Composition root of the gateway: an aiohttp session to the services and Redis for the rate limit."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import aiohttp
from fastapi import FastAPI

from eventflow.auth import HttpJwks, TokenVerifier, TrustedIssuer
from eventflow.http import client_session, exit_requested
from eventflow.jetstream import StreamSpec
from eventflow.projections import Projection
from eventflow.runtime import redis_client
from eventflow.web import IdempotencyKeyMiddleware, ReadyCheck, any_of
from eventflow.web import create_app as create_base_app
from services.gateway import web
from services.gateway.api import Gateway, router
from services.gateway.cache import PublicCache
from services.gateway.config import GatewaySettings
from services.gateway.keys import SharedRefresh
from services.gateway.proxy import Streams
from services.gateway.ratelimit import rate_limits
from services.gateway.routing import JWKS_PATH

READY_TIMEOUT_S = 2.0


class UpstreamNotReady(Exception):
    pass


def _upstream_check(state: dict[str, Any], url: str) -> ReadyCheck:
    async def check() -> None:
        session: aiohttp.ClientSession = state["session"]
        timeout = aiohttp.ClientTimeout(total=READY_TIMEOUT_S)
        async with session.get(f"{url.rstrip('/')}/health/ready", timeout=timeout) as resp:
            if resp.status != 200:
                raise UpstreamNotReady(f"status {resp.status}")

    return check


def _verifier(
    settings: GatewaySettings, session: aiohttp.ClientSession, upstreams: dict[str, str]
) -> TokenVerifier | None:
    """Tokens are verified only to pick a caller's rate-limit bucket: our issuer's keys from the users service's
    public JWKS (the gateway holds no NATS connection and no secret), an external OIDC issuer's from its own.
    `session` is the keys' own, with a short timeout (gateway_jwks_timeout); refreshes are shared (keys.py)."""
    issuers = []
    if "users" in upstreams:
        keys = SharedRefresh(HttpJwks(session, f"{upstreams['users'].rstrip('/')}{JWKS_PATH}"))
        issuers.append(TrustedIssuer(settings.auth_issuer, settings.auth_audience, keys, local=True))
    if settings.oidc_issuer:
        external = SharedRefresh(HttpJwks(session, settings.oidc_jwks_url, issuer=settings.oidc_issuer))
        issuers.append(TrustedIssuer(settings.oidc_issuer, settings.oidc_audience or settings.auth_audience, external))
    return TokenVerifier(issuers) if issuers else None


def create_app(settings: GatewaySettings | None = None) -> FastAPI:
    settings = settings or GatewaySettings()
    upstreams = settings.enabled_upstreams()

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        # The services' fail-fast client (0.5 s, connect included): the rate limiter fails open, and with Redis hung
        # every request through the gateway, reservations included, would otherwise wait 2 s for it.
        redis = redis_client(settings.redis_url)
        session = client_session(timeout_s=settings.gateway_timeout)
        keys_session = client_session(limit=8, timeout_s=settings.gateway_jwks_timeout)
        # aiohttp resends PUT and DELETE too when a connection drops; the gateway's own rule is narrower
        # (proxy.may_resend): a DELETE of a user sent twice answers 404 to a delete that worked.
        session._retry_connection = False
        streams = Streams(client_session(limit=settings.max_streams + 16), settings.max_streams, exit_requested())
        verifier = _verifier(settings, keys_session, upstreams) if settings.rate_limit_account_per_s > 0 else None
        limits = rate_limits(redis, settings, verifier)
        state.update(redis=redis, session=session)
        cache = PublicCache(settings.gateway_cache_s) if settings.gateway_cache_s > 0 else None
        app.state.gateway = Gateway(session, upstreams, limits, settings.trust_forwarded_for, streams, cache)
        try:
            yield
        finally:
            streams.stopping.set()
            await streams.session.close()
            await session.close()
            await keys_session.close()
            await redis.aclose()

    state: dict[str, Any] = {}

    async def redis_ready() -> None:
        await state["redis"].ping()

    each = {name: _upstream_check(state, url) for name, url in upstreams.items()}
    # Ready while any upstream answers: one service's (or Redis's) outage must not take every gateway out of
    # its load balancer; the rest is reported as degraded. Redis only backs the rate limiter here.
    # With no upstream configured (a gateway started alone) readiness is Redis's, as before.
    checks: dict[str, ReadyCheck] = {"redis": redis_ready}
    if each:
        checks = {"upstreams": any_of(each), **checks, **each}
    app = create_base_app("EventFlow gateway", lifespan, checks, required=("upstreams",) if each else None)
    app.add_middleware(IdempotencyKeyMiddleware, paths=("/api/reservar",))
    app.router.redirect_slashes = False  # `/api` is an unknown route, not a redirect to `/api/`
    app.include_router(router)
    web.mount(app, settings.web_test_cards)
    return app


def read_models() -> list[tuple[StreamSpec, Projection]]:
    """The gateway keeps no read model."""
    return []
