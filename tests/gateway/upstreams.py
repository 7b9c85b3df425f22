"""Small real upstream apps on real uvicorn servers (free ports, the test's own event loop)."""

from __future__ import annotations

import asyncio
import socket
import struct
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass, field

import uvicorn
from fastapi import FastAPI, Request, Response
from fastapi.responses import JSONResponse

from eventflow.servers import free_port

ETAG = '"v1"'


def echo_app(name: str) -> FastAPI:
    """Answers with what it received; `?status=` picks the status, `?cache=` the Cache-Control; `/slow` (or
    `?slow=1`) never answers in time."""
    app = FastAPI()

    @app.get("/health/ready")
    async def ready() -> dict[str, str]:
        return {"status": "ok"}

    @app.api_route("/{path:path}", methods=["GET", "POST", "PUT", "PATCH", "DELETE"])
    async def echo(request: Request, path: str) -> Response:
        if path.endswith("/slow") or request.query_params.get("slow"):
            await asyncio.sleep(30)
        if request.headers.get("if-none-match") == ETAG:
            return Response(status_code=304, headers={"etag": ETAG, "cache-control": "max-age=5"})
        received = {
            "service": name,
            "method": request.method,
            "raw_path": request.scope["raw_path"].decode(),
            "query": request.scope["query_string"].decode(),
            "body": (await request.body()).decode(),
            "headers": dict(request.headers),
        }
        headers = {
            "etag": ETAG,
            "cache-control": request.query_params.get("cache", "max-age=5"),  # `?cache=public,max-age=5`
            "location": f"/{path}/1",
            "retry-after": "3",
            "idempotency-key": "generated-key",
            "www-authenticate": 'Bearer realm="eventflow"',
            "eventflow-source": "log",
            "x-internal-secret": "never leaves the cluster",
        }
        return JSONResponse(received, status_code=int(request.query_params.get("status", 200)), headers=headers)

    return app


async def _start(app: FastAPI) -> tuple[uvicorn.Server, asyncio.Task[None], str]:
    port = free_port()
    config = uvicorn.Config(
        app, host="127.0.0.1", port=port, log_config=None, lifespan="off", timeout_graceful_shutdown=1
    )
    server = uvicorn.Server(config)
    task = asyncio.create_task(server.serve())
    while not server.started:
        if task.done():
            task.result()
        await asyncio.sleep(0.01)
    return server, task, f"http://127.0.0.1:{port}"


@asynccontextmanager
async def echo_upstreams(*names: str) -> AsyncIterator[dict[str, str]]:
    """One echo server per name; all stop together (uvicorn polls its exit flag every 0.1 s)."""
    started = await asyncio.gather(*(_start(echo_app(name)) for name in names))
    try:
        yield {name: url for name, (_, _, url) in zip(names, started, strict=True)}
    finally:
        for server, _, _ in started:
            server.should_exit = True
        await asyncio.gather(*(task for _, task, _ in started))


@dataclass
class RawUpstream:
    """An HTTP/1.1 server written by hand, to misbehave on purpose: `answer(n)` gives the raw bytes for the n-th
    request (from 0), None to close the connection without answering, or HANG to never answer (until the server
    stops). `seen` holds each request's head line."""

    answer: Callable[[int], bytes | None]
    seen: list[str] = field(default_factory=list)
    url: str = ""
    stopping: asyncio.Event = field(default_factory=asyncio.Event)

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            head = await reader.readuntil(b"\r\n\r\n")
            lines = head.decode("latin-1").split("\r\n")
            length = next((int(v) for k, _, v in (x.partition(":") for x in lines) if k.lower() == "content-length"), 0)
            await reader.readexactly(length)
            self.seen.append(lines[0])
            reply = self.answer(len(self.seen) - 1)
            if reply is HANG:
                await self.stopping.wait()
            elif reply is RESET:  # close with a TCP RST (linger 0), as a dying process's kernel does
                sock = writer.get_extra_info("socket")
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
            elif reply is not None:
                if lines[0].startswith("HEAD "):
                    reply = reply.partition(b"\r\n\r\n")[0] + b"\r\n\r\n"  # an answer to a HEAD has no body
                writer.write(reply)
                await writer.drain()
        except (asyncio.IncompleteReadError, ConnectionError):
            pass
        finally:
            writer.close()


HANG = b"hang"
RESET = b"reset"


def http_answer(body: bytes = b"{}", status: str = "200 OK") -> bytes:
    head = f"HTTP/1.1 {status}\r\ncontent-type: application/json\r\ncontent-length: {len(body)}\r\n"
    return head.encode() + b"connection: close\r\n\r\n" + body


@asynccontextmanager
async def raw_upstream(answer: Callable[[int], bytes | None]) -> AsyncIterator[RawUpstream]:
    upstream = RawUpstream(answer)
    server = await asyncio.start_server(upstream._serve, "127.0.0.1", 0)
    upstream.url = f"http://127.0.0.1:{server.sockets[0].getsockname()[1]}"
    try:
        yield upstream
    finally:
        upstream.stopping.set()
        server.close()
        await server.wait_closed()
