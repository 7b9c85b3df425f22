"""One users app per test module (its start and stop cost more than most tests): tests in these modules run
in the module's event loop (`pytestmark = pytest.mark.asyncio(loop_scope="module")`)."""

from __future__ import annotations

from collections.abc import AsyncIterator

import httpx
import pytest_asyncio
import redis.asyncio as aioredis
from fastapi import FastAPI

from eventflow.jetstream import connect
from services.users.bootstrap import create_app
from tests.utils.app import api_client

module_fixture = pytest_asyncio.fixture(scope="module", loop_scope="module")


@module_fixture
async def app(servers) -> AsyncIterator[FastAPI]:
    application = create_app(servers.settings())
    async with api_client(application) as http:
        application.state.test_client = http
        yield application


@module_fixture
async def client(app: FastAPI) -> httpx.AsyncClient:
    http: httpx.AsyncClient = app.state.test_client
    return http


@module_fixture
async def js(servers):
    nc = await connect(servers.nats.url, "users-tests")
    yield nc.jetstream()
    await nc.drain()


@module_fixture
async def rds(servers) -> AsyncIterator[aioredis.Redis]:
    client = aioredis.Redis.from_url(servers.redis.url, decode_responses=True)
    yield client
    await client.aclose()
