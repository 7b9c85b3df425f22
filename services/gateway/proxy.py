"""Forwarding one request to its upstream with aiohttp, and the errors a hop can add."""

from __future__ import annotations

from urllib.parse import quote

import aiohttp
from fastapi import Request, Response
from yarl import URL

from eventflow.errors import DomainError
from eventflow.logs import request_id_var

# Hop-by-hop and connection headers are left out on purpose; these are the ones the API speaks. The bearer token
# goes through as the client sent it: every service verifies it itself, and the gateway adds no identity header
# (any other header a client sends, an X-User-Id say, is dropped here).
REQUEST_HEADERS = ("content-type", "accept", "if-none-match", "if-match", "idempotency-key", "authorization")
RESPONSE_HEADERS = (
    "www-authenticate",
    "pragma",
    "content-type",
    "etag",
    "cache-control",
    "location",
    "retry-after",
    "vary",
    "last-modified",
    "idempotency-key",
)


class BadGateway(DomainError):
    status, slug, title = 502, "bad-gateway", "Bad gateway"


class GatewayTimeout(DomainError):
    status, slug, title = 504, "gateway-timeout", "Gateway timeout"


def client_ip(request: Request, trust_forwarded_for: bool) -> str:
    if trust_forwarded_for:
        forwarded = request.headers.get("x-forwarded-for", "")
        first = forwarded.split(",")[0].strip()
        if first:
            return first
    return request.client.host if request.client else "unknown"


def upstream_url(base: str, request: Request) -> URL:
    raw_path = request.scope.get("raw_path") or quote(request.url.path).encode()
    query = request.scope.get("query_string", b"")
    target = base.rstrip("/") + raw_path.decode("latin-1")
    if query:
        target += "?" + query.decode("latin-1")
    return URL(target, encoded=True)


async def forward(
    session: aiohttp.ClientSession,
    upstream: str,
    base_url: str,
    request: Request,
    client: str,
) -> Response:
    headers = {name: request.headers[name] for name in REQUEST_HEADERS if name in request.headers}
    headers["x-request-id"] = request_id_var.get() or ""
    headers["x-forwarded-for"] = client
    body = await request.body()
    try:
        async with session.request(
            request.method,
            upstream_url(base_url, request),
            data=body or None,
            headers=headers,
            allow_redirects=False,
        ) as resp:
            content = await resp.read()
            kept = {name: resp.headers[name] for name in RESPONSE_HEADERS if name in resp.headers}
            return Response(content=content, status_code=resp.status, headers=kept)
    except TimeoutError:
        raise GatewayTimeout(f"{upstream} did not answer in time", upstream=upstream) from None
    except aiohttp.ClientError as err:
        raise BadGateway(f"{upstream} is not reachable ({type(err).__name__})", upstream=upstream) from None
