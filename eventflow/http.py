"""Service-to-service HTTP with aiohttp (httpx's pool was 5x slower under load here: measured-here.md)."""

from __future__ import annotations

import asyncio
import signal
import threading
from collections.abc import Mapping
from types import FrameType
from typing import Any

import aiohttp
import orjson

from eventflow.logs import request_id_var, trace_headers


def client_session(limit: int = 256, timeout_s: float = 5.0) -> aiohttp.ClientSession:
    connector = aiohttp.TCPConnector(limit=limit, limit_per_host=limit, keepalive_timeout=30, ttl_dns_cache=300)
    return aiohttp.ClientSession(
        connector=connector,
        timeout=aiohttp.ClientTimeout(total=timeout_s),
        json_serialize=lambda obj: orjson.dumps(obj).decode(),
    )


def forward_headers() -> dict[str, str]:
    """The request id and the trace context, so the callee's logs and spans join this request's."""
    request_id = request_id_var.get()
    return {**({"x-request-id": request_id} if request_id else {}), **trace_headers()}


async def get_json(
    session: aiohttp.ClientSession, url: str, headers: Mapping[str, str] | None = None
) -> tuple[int, Any]:
    """GET a JSON document; returns (status, body) and leaves the meaning of a 404 to the caller."""
    async with session.get(url, headers={**forward_headers(), **(headers or {})}) as resp:
        body = await resp.read()
        return resp.status, (orjson.loads(body) if body else None)


def exit_requested() -> asyncio.Event:
    """Set when the process is asked to stop (SIGTERM, SIGINT), for long-lived responses (Server-Sent Events).

    uvicorn waits for every open response to end before it runs the app's shutdown, and a stream never ends by
    itself: a stream that ends when this is set lets the server stop in time (and the reservations service
    finish its sagas) instead of being killed. Call it inside the app's lifespan, where uvicorn's own handlers
    are installed; they are still called. Outside the main thread (no signals there) it is never set.
    """
    event = asyncio.Event()
    if threading.current_thread() is not threading.main_thread():
        return event
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        previous = signal.getsignal(sig)

        def handler(signum: int, frame: FrameType | None, previous: Any = previous) -> None:
            loop.call_soon_threadsafe(event.set)
            if callable(previous):
                previous(signum, frame)

        signal.signal(sig, handler)
    return event
