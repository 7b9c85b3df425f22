"""Forwarding one request to its upstream with aiohttp, and the errors a hop can add.

Answers are read whole and then sent (simple, and a slow client never holds an upstream connection), except
Server-Sent Events: a GET that accepts `text/event-stream` is streamed through as it comes, on a session of
its own (no total timeout, its own connection pool, so long-lived streams never starve the API's pool), and
ends when the upstream ends it, the client goes, or this process is asked to stop.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import quote

import aiohttp
from fastapi import Request, Response
from fastapi.responses import StreamingResponse
from yarl import URL

from eventflow.errors import DomainError
from eventflow.logs import request_id_var, trace_headers

# Hop-by-hop and connection headers are left out on purpose; these are the ones the API speaks. The bearer token
# goes through as the client sent it: every service verifies it itself, and the gateway adds no identity header
# (any other header a client sends, an X-User-Id say, is dropped here).
REQUEST_HEADERS = (
    "content-type",
    "accept",
    "if-none-match",
    "if-match",
    "idempotency-key",
    "authorization",
    "last-event-id",  # an EventSource reconnecting
)
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
    "content-disposition",  # a ticket's PDF is a download
    "x-content-type-options",
    "x-accel-buffering",
    "eventflow-source",  # "log": an event read while Redis was down (services/events/log_fallback.py)
)
EVENT_STREAM = "text/event-stream"


class BadGateway(DomainError):
    status, slug, title = 502, "bad-gateway", "Bad gateway"


class GatewayTimeout(DomainError):
    status, slug, title = 504, "gateway-timeout", "Gateway timeout"


class UpstreamUnavailable(DomainError):
    """Nothing accepts the connection (a service restarting under its supervisor): the request never left, so a
    client may retry any method; Retry-After 1 s, about a restart's length."""

    status, slug, title = 503, "upstream-unavailable", "Upstream unavailable"

    def __init__(self, detail: str, **extra: Any) -> None:
        super().__init__(detail, **extra)
        self.headers = {"Retry-After": "1"}


def hop_error(upstream: str, err: aiohttp.ClientError) -> DomainError:
    """A refused connection is 503 (not sent: retry); any other failure of the hop 502 (it may have been sent)."""
    if isinstance(err, aiohttp.ClientConnectorError) and not isinstance(err, aiohttp.ClientSSLError):
        return UpstreamUnavailable(f"{upstream} is not accepting connections", upstream=upstream)
    return BadGateway(f"{upstream} is not reachable ({type(err).__name__})", upstream=upstream)


class TooManyStreams(DomainError):
    status, slug, title = 503, "too-many-streams", "Too many open streams"


@dataclass
class Streams:
    """Long-lived answers (Server-Sent Events): their own session, a cap, and the signal to end them."""

    session: aiohttp.ClientSession
    limit: int = 1000
    stopping: asyncio.Event = field(default_factory=asyncio.Event)
    open: int = 0


def wants_stream(request: Request) -> bool:
    return request.method == "GET" and EVENT_STREAM in request.headers.get("accept", "")


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


def forwarded_headers(request: Request, client: str) -> dict[str, str]:
    headers = {name: request.headers[name] for name in REQUEST_HEADERS if name in request.headers}
    headers["x-request-id"] = request_id_var.get() or ""
    headers["x-forwarded-for"] = client
    headers.update(trace_headers())  # the upstream's span continues the gateway's trace
    return headers


async def forward(
    session: aiohttp.ClientSession,
    upstream: str,
    base_url: str,
    request: Request,
    client: str,
) -> Response:
    headers = forwarded_headers(request, client)
    # A GET has no body to wait for: reading the (empty) request stream was a few % of the gateway's CPU.
    has_body = "content-length" in request.headers or "transfer-encoding" in request.headers
    body = await request.body() if has_body else b""
    url = upstream_url(base_url, request)
    resend = may_resend(request)  # once, if the upstream drops the connection without answering
    while True:
        try:
            async with session.request(
                request.method, url, data=body or None, headers=headers, allow_redirects=False
            ) as resp:
                content = await resp.read()
                kept = {name: resp.headers[name] for name in RESPONSE_HEADERS if name in resp.headers}
                return Response(content=content, status_code=resp.status, headers=kept)
        except (aiohttp.ServerDisconnectedError, aiohttp.ClientOSError) as err:
            # Closed or reset (RST) with the request on the wire; a refused connect is not worth a resend (503).
            if not resend or isinstance(err, aiohttp.ClientConnectorError):
                raise hop_error(upstream, err) from None
            resend = False
        except TimeoutError:
            raise GatewayTimeout(f"{upstream} did not answer in time", upstream=upstream) from None
        except aiohttp.ClientError as err:
            raise hop_error(upstream, err) from None


# The writes whose services deduplicate by Idempotency-Key (a header on any other route is ignored there).
KEYED_WRITES = frozenset({"/api/usuarios", "/api/eventos", "/api/reservar", "/api/checkin"})


def may_resend(request: Request) -> bool:
    """Whether a request may be sent twice: a read, or a POST its service deduplicates by its Idempotency-Key.
    A keep-alive connection the upstream had just closed (a restart) drops the request unanswered; anything
    else (a POST without a key, a DELETE, a password change) gets the 502: it may have been carried out, only
    the client knows."""
    if request.method in ("GET", "HEAD"):
        return True
    keyed = request.method == "POST" and request.url.path.rstrip("/") in KEYED_WRITES
    return keyed and "idempotency-key" in request.headers


async def forward_stream(streams: Streams, upstream: str, base_url: str, request: Request, client: str) -> Response:
    """A GET whose answer may be an event stream: relayed chunk by chunk (any other answer is read whole)."""
    if streams.open >= streams.limit:
        raise TooManyStreams(f"this gateway already relays {streams.open} streams; retry later")
    timeout = aiohttp.ClientTimeout(total=None, connect=5.0, sock_read=None)
    try:
        resp = await streams.session.get(
            upstream_url(base_url, request),
            headers=forwarded_headers(request, client),
            allow_redirects=False,
            timeout=timeout,
        )
    except TimeoutError:
        raise GatewayTimeout(f"{upstream} did not answer in time", upstream=upstream) from None
    except aiohttp.ClientError as err:
        raise hop_error(upstream, err) from None
    kept = {name: resp.headers[name] for name in RESPONSE_HEADERS if name in resp.headers}
    if resp.content_type != EVENT_STREAM:
        try:
            content = await resp.read()
        finally:
            resp.release()
        return Response(content=content, status_code=resp.status, headers=kept)
    streams.open += 1
    return StreamingResponse(_relay(streams, resp), status_code=resp.status, headers=kept, media_type=EVENT_STREAM)


async def _relay(streams: Streams, resp: aiohttp.ClientResponse) -> AsyncIterator[bytes]:
    stop = asyncio.ensure_future(streams.stopping.wait())
    try:
        while True:
            read = asyncio.ensure_future(resp.content.readany())
            done, _ = await asyncio.wait({read, stop}, return_when=asyncio.FIRST_COMPLETED)
            if read not in done:
                read.cancel()
                with contextlib.suppress(asyncio.CancelledError, aiohttp.ClientError):
                    await read
                return
            chunk = read.result()
            if not chunk:
                return
            yield chunk
    except aiohttp.ClientError:
        return  # the upstream went away mid-stream: the client's EventSource reconnects
    finally:
        stop.cancel()
        streams.open -= 1
        resp.close()
