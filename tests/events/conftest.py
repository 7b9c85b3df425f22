from __future__ import annotations

from collections.abc import AsyncIterator

import httpx
import pytest
from fastapi import FastAPI

from eventflow.auth import ORGANIZADOR
from eventflow.jetstream import connect
from services.events.bootstrap import create_app
from services.users.bootstrap import create_app as users_app
from tests.utils.app import api_client
from tests.utils.auth import Cuenta, con_rol


@pytest.fixture
def app(settings) -> FastAPI:
    return create_app(settings)


@pytest.fixture
async def users(settings) -> AsyncIterator[httpx.AsyncClient]:
    """The real users service (the token issuer), in-process: tests sign in through its token endpoint."""
    async with api_client(users_app(settings)) as http:
        yield http


@pytest.fixture
async def organizer(users: httpx.AsyncClient) -> Cuenta:
    return await con_rol(users, ORGANIZADOR)


@pytest.fixture
async def client(app: FastAPI, organizer: Cuenta) -> AsyncIterator[httpx.AsyncClient]:
    """The events service as an organizer calls it (reads are public: the token changes nothing there)."""
    async with api_client(app) as http:
        http.headers.update(organizer.headers)
        yield http


@pytest.fixture
async def js(settings):
    nc = await connect(settings.nats_url, "events-tests")
    yield nc.jetstream()
    await nc.drain()
