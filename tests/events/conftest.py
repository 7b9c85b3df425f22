from __future__ import annotations

from collections.abc import AsyncIterator

import httpx
import pytest
from fastapi import FastAPI

from eventflow.jetstream import connect
from services.events.bootstrap import create_app
from tests.utils.app import api_client


@pytest.fixture
def app(settings) -> FastAPI:
    return create_app(settings)


@pytest.fixture
async def client(app: FastAPI) -> AsyncIterator[httpx.AsyncClient]:
    async with api_client(app) as http:
        yield http


@pytest.fixture
async def js(settings):
    nc = await connect(settings.nats_url, "events-tests")
    yield nc.jetstream()
    await nc.drain()
