"""The public /api/* surface (and the JWKS): rate limit, then a plain forward to the owning service.

No token is verified here: every service verifies the bearer token it receives by itself, since its own port is
reachable too, so the gateway forwards the Authorization header untouched and never adds an identity of its own.
"""

from __future__ import annotations

from dataclasses import dataclass

import aiohttp
from fastapi import APIRouter, Request, Response

from eventflow.auth import bearer_token
from eventflow.errors import NotFound, Unavailable, problem
from services.gateway.cache import PublicCache
from services.gateway.proxy import Streams, client_ip, forward, forward_stream, wants_stream
from services.gateway.ratelimit import RateLimits
from services.gateway.routing import JWKS_PATH, upstream_for

METHODS = ["GET", "POST", "PUT", "PATCH", "DELETE", "HEAD", "OPTIONS"]


@dataclass
class Gateway:
    session: aiohttp.ClientSession
    upstreams: dict[str, str]
    limits: RateLimits
    trust_forwarded_for: bool = False
    streams: Streams | None = None
    cache: PublicCache | None = None  # anonymous GETs of public answers (cache.py)


router = APIRouter()


@router.get(JWKS_PATH, include_in_schema=False)
@router.api_route("/api/{rest:path}", methods=METHODS, include_in_schema=False)
async def proxy(request: Request) -> Response:
    gateway: Gateway = request.app.state.gateway
    path: str = request.scope["path"]  # not request.url: building that URL was 2.5 % of the gateway's CPU
    upstream = upstream_for(path)
    if upstream is None:
        raise NotFound(f"no API route for {path}")
    base_url = gateway.upstreams.get(upstream)
    if base_url is None:
        raise Unavailable(f"the {upstream} service is not deployed", upstream=upstream)
    client = client_ip(request, gateway.trust_forwarded_for)
    decision = await gateway.limits.take(bearer_token(request), client)
    if not decision.allowed:
        response = problem(
            429,
            "Too many requests",
            f"Rate limit of {decision.rate:g} requests/s per {decision.per} exceeded.",
            slug="rate-limited",
            instance=path,
        )
        response.headers["retry-after"] = str(decision.retry_after_s)
        return response
    if gateway.streams is not None and wants_stream(request):
        return await forward_stream(gateway.streams, upstream, base_url, request, client)
    key = gateway.cache.key(request) if gateway.cache is not None else None
    if key is None or gateway.cache is None:
        return await forward(gateway.session, upstream, base_url, request, client)
    if (copy := gateway.cache.answer(key, request)) is not None:
        return copy
    fresh = await forward(gateway.session, upstream, base_url, request, client)
    gateway.cache.keep(key, fresh)
    return fresh
