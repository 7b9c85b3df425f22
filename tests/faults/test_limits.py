"""The limits every service's HTTP server puts on a request (eventflow.web), on a real uvicorn with the settings
`serve` uses: oversized bodies, request lines and headers, and slow clients each get a problem body."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import httpx
import orjson
import pytest
import uvicorn
from fastapi import FastAPI, Request
from pydantic import BaseModel

from eventflow.servers import free_port
from eventflow.web import MAX_BODY_BYTES, MAX_HEADER_BYTES, MAX_URL_BYTES, create_app, server_options


class Cuerpo(BaseModel):
    texto: str


def limited_app() -> FastAPI:
    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        yield

    app = create_app("EventFlow limits", lifespan, {})
    app.state.stored = []

    @app.post("/api/modelo")
    async def modelo(body: Cuerpo) -> dict[str, int]:
        app.state.stored.append(body.texto)
        return {"largo": len(body.texto)}

    @app.post("/api/crudo")
    async def crudo(request: Request) -> dict[str, int]:  # reads the body itself, as the gateway's proxy does
        body = await request.body()
        app.state.stored.append(body)
        return {"largo": len(body)}

    return app


@asynccontextmanager
async def served(app: FastAPI, **options: Any) -> AsyncIterator[int]:
    port = free_port()
    server = uvicorn.Server(uvicorn.Config(app, **server_options("127.0.0.1", port, **options)))
    task = asyncio.create_task(server.serve())
    while not server.started:
        assert not task.done(), "uvicorn stopped before starting"
        await asyncio.sleep(0.01)
    try:
        yield port
    finally:
        server.should_exit = True
        await task


async def raw_exchange(port: int, request: bytes) -> tuple[int, dict[str, Any]]:
    """Send raw bytes, read until the server closes: (status, problem body)."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    try:
        writer.write(request)
        await writer.drain()
        answer = await asyncio.wait_for(reader.read(), 30)
    finally:
        writer.close()
    head, _, body = answer.partition(b"\r\n\r\n")
    assert b"content-type: application/problem+json" in head.lower(), answer[:300]
    return int(head.split()[1]), orjson.loads(body)


@pytest.fixture
async def app_and_port() -> AsyncIterator[tuple[FastAPI, int]]:
    app = limited_app()
    async with served(app) as port:
        yield app, port


@pytest.mark.parametrize("path", ["/api/modelo", "/api/crudo"])
async def test_a_body_over_the_limit_is_a_413_problem_and_nothing_is_stored(app_and_port, path):
    app, port = app_and_port
    big = {"texto": "x" * (MAX_BODY_BYTES + 1)}
    async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}") as client:
        answer = await client.post(path, json=big)
        assert answer.status_code == 413
        assert answer.headers["content-type"] == "application/problem+json"
        assert answer.json()["type"] == "/problems/payload-too-large"

        async def chunks() -> AsyncIterator[bytes]:  # no Content-Length: counted as it arrives
            yield b'{"texto": "'
            for _ in range(MAX_BODY_BYTES // 4096 + 1):
                yield b"y" * 4096
            yield b'"}'

        streamed = await client.post(path, content=chunks(), headers={"content-type": "application/json"})
        assert streamed.status_code == 413, streamed.text
        assert streamed.json()["type"] == "/problems/payload-too-large"
        small = await client.post(path, json={"texto": "hola"})
        assert small.status_code == 200
    assert len(app.state.stored) == 1


async def test_a_lying_content_length_is_refused(app_and_port):
    _, port = app_and_port
    status, body = await raw_exchange(
        port, b"POST /api/crudo HTTP/1.1\r\nhost: x\r\ncontent-length: 12abc\r\nconnection: close\r\n\r\n"
    )
    assert status == 400 and body["status"] == 400


async def test_a_request_line_over_the_limit_is_a_414_problem(app_and_port):
    _, port = app_and_port
    path = "/api/modelo?q=" + "a" * MAX_URL_BYTES
    status, body = await raw_exchange(port, f"GET {path} HTTP/1.1\r\nhost: x\r\n\r\n".encode())
    assert status == 414 and body["type"] == "/problems/uri-too-long"


async def test_headers_over_the_limit_are_a_431_problem(app_and_port):
    _, port = app_and_port
    huge = b"x-relleno: " + b"h" * MAX_HEADER_BYTES + b"\r\n"
    status, body = await raw_exchange(port, b"GET /health/live HTTP/1.1\r\nhost: x\r\n" + huge + b"\r\n")
    assert status == 431 and body["type"] == "/problems/headers-too-large"
    many = b"".join(f"x-h{i}: v\r\n".encode() for i in range(200))
    status, _ = await raw_exchange(port, b"GET /health/live HTTP/1.1\r\nhost: x\r\n" + many + b"\r\n")
    assert status == 431


async def test_garbage_instead_of_http_is_a_400_problem(app_and_port):
    _, port = app_and_port
    status, body = await raw_exchange(port, b"\x00\x01 not http at all\r\n\r\n")
    assert status == 400 and body["status"] == 400


async def test_a_client_too_slow_to_send_its_request_gets_a_408_problem_and_is_disconnected():
    app = limited_app()
    async with served(app, request_timeout_s=0.5) as port:
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        try:
            writer.write(b"POST /api/crudo HTTP/1.1\r\nhost: x\r\ncontent-length: 10\r\n\r\n12")  # and no more
            await writer.drain()
            answer = await asyncio.wait_for(reader.read(), 30)  # the server closes the connection
        finally:
            writer.close()
        assert answer.startswith(b"HTTP/1.1 408"), answer[:200]
        assert orjson.loads(answer.partition(b"\r\n\r\n")[2])["type"] == "/problems/request-timeout"

        idle_reader, idle_writer = await asyncio.open_connection("127.0.0.1", port)  # connects, sends nothing
        try:
            assert (await asyncio.wait_for(idle_reader.read(), 30)).startswith(b"HTTP/1.1 408")
        finally:
            idle_writer.close()
        async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}") as client:
            assert (await client.post("/api/crudo", content=b"0123456789")).status_code == 200
    assert app.state.stored == [b"0123456789"]
