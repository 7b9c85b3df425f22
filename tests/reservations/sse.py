"""Reading a Server-Sent Events stream in tests, as a browser's EventSource would."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from typing import Any

import httpx
import orjson


class EventStream:
    def __init__(self, response: httpx.Response) -> None:
        self.response = response
        self._lines = response.aiter_lines()

    async def next(self, timeout: float = 10.0) -> tuple[str, dict[str, Any]]:
        """The next event (name, data); comments (heartbeats) and `retry:` lines are skipped."""
        return await asyncio.wait_for(self._next(), timeout)

    async def until(self, check: Callable[[str, dict[str, Any]], bool], timeout: float = 10.0) -> dict[str, Any]:
        """Events until one satisfies `check` (generous deadline, no fixed sleep)."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while True:
            name, data = await self.next(max(0.1, deadline - loop.time()))
            if check(name, data):
                return data

    async def _next(self) -> tuple[str, dict[str, Any]]:
        name, data = "message", b""
        async for line in self._lines:
            if line == "":
                if data:
                    return name, orjson.loads(data)
                name = "message"
                continue
            field, _, value = line.partition(":")
            value = value.removeprefix(" ")
            if field == "event":
                name = value
            elif field == "data":
                data += value.encode()
        raise EOFError("the stream ended")


@asynccontextmanager
async def events(client: httpx.AsyncClient, url: str) -> AsyncIterator[EventStream]:
    async with client.stream("GET", url, headers={"Accept": "text/event-stream"}, timeout=None) as response:
        assert response.status_code == 200, await response.aread()
        assert response.headers["content-type"].startswith("text/event-stream")
        yield EventStream(response)
