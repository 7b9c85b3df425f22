"""The public /api/* surface: rate limit, authentication seam, then a plain forward to the owning service."""

from __future__ import annotations

from dataclasses import dataclass

import aiohttp
from fastapi import APIRouter, Request, Response

from eventflow.errors import NotFound, Unavailable, problem
from services.gateway.auth import Authenticator
from services.gateway.proxy import client_ip, forward
from services.gateway.ratelimit import RateLimiter
from services.gateway.routing import upstream_for

METHODS = ["GET", "POST", "PUT", "PATCH", "DELETE", "HEAD", "OPTIONS"]


@dataclass
class Gateway:
    session: aiohttp.ClientSession
    upstreams: dict[str, str]
    limiter: RateLimiter
    authenticate: Authenticator
    trust_forwarded_for: bool = False


router = APIRouter()


@router.api_route("/api/{rest:path}", methods=METHODS, include_in_schema=False)
async def proxy(request: Request) -> Response:
    gateway: Gateway = request.app.state.gateway
    upstream = upstream_for(request.url.path)
    if upstream is None:
        raise NotFound(f"no API route for {request.url.path}")
    base_url = gateway.upstreams.get(upstream)
    if base_url is None:
        raise Unavailable(f"the {upstream} service is not deployed", upstream=upstream)
    client = client_ip(request, gateway.trust_forwarded_for)
    decision = await gateway.limiter.take(client)
    if not decision.allowed:
        response = problem(
            429,
            "Too many requests",
            f"Rate limit of {gateway.limiter.rate:g} requests/s per client exceeded.",
            slug="rate-limited",
            instance=request.url.path,
        )
        response.headers["retry-after"] = str(decision.retry_after_s)
        return response
    extra = await gateway.authenticate(request, upstream)
    return await forward(gateway.session, upstream, base_url, request, client, extra)
