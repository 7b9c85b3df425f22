"""Who may create events, on the real services: tokens from the real users service's token endpoint, verified by
the events service itself against the published keys. Reads stay public."""

from __future__ import annotations

import uuid

import httpx
from fastapi import FastAPI

from eventflow.auth import CONTROL, ORGANIZADOR
from eventflow.eventstore import EventStore
from eventflow.jetstream import EVENTOS
from tests.events.helpers import evento_body
from tests.utils.app import api_client
from tests.utils.auth import admin, bearer, con_rol, registrar
from tests.utils.servers import Servers


def assert_401(response: httpx.Response) -> None:
    assert response.status_code == 401, response.text
    assert response.headers["www-authenticate"].startswith("Bearer")
    assert response.headers["content-type"] == "application/problem+json"
    assert response.json()["type"] == "/problems/unauthenticated"


async def test_creating_an_event_needs_an_organizer_or_an_admin(app: FastAPI, users: httpx.AsyncClient, js) -> None:
    buyer, door = await registrar(users), await con_rol(users, CONTROL)
    async with api_client(app) as client:  # the service's start creates its stream
        before = await EventStore(js, EVENTOS).last_sequence()
        assert_401(await client.post("/api/eventos", json=evento_body()))
        assert_401(await client.post("/api/eventos", json=evento_body(), headers=bearer("not.a.token")))
        for cuenta in (buyer, door):
            refused = await client.post("/api/eventos", json=evento_body(), headers=cuenta.headers)
            assert refused.status_code == 403 and refused.json()["type"] == "/problems/forbidden", refused.text
        assert await EventStore(js, EVENTOS).last_sequence() == before, "a refused request wrote nothing"
        boss = await admin(users)
        created = await client.post("/api/eventos", json=evento_body(), headers=boss.headers)
        assert created.status_code == 201, created.text
        assert created.json()["organizador_id"] == boss.id


async def test_the_event_records_its_organizer_and_anyone_reads_it(
    app: FastAPI, client: httpx.AsyncClient, organizer
) -> None:
    created = await client.post("/api/eventos", json=evento_body())
    assert created.status_code == 201, created.text
    async with api_client(app) as anonymous:
        read = await anonymous.get(created.headers["location"])
        listed = await anonymous.get("/api/eventos", params={"limit": 1})
    assert read.status_code == 200 and read.json()["organizador_id"] == organizer.id
    assert listed.status_code == 200


async def test_a_service_token_cannot_create_events(app: FastAPI, users: httpx.AsyncClient, servers: Servers) -> None:
    settings = servers.settings()
    credential = {
        "grant_type": "client_credentials",
        "client_id": settings.client_id,
        "client_secret": settings.client_secret,
    }
    token = (await users.post("/api/auth/token", json=credential)).json()["access_token"]
    async with api_client(app) as client:
        assert (await client.post("/api/eventos", json=evento_body(), headers=bearer(token))).status_code == 403


async def test_an_idempotency_key_is_the_organizers_own(app: FastAPI, users: httpx.AsyncClient, organizer) -> None:
    """Before, the id was uuid5 of the key alone: anyone who saw a key could compute the event's id, and another
    organizer sending the same key got (and was told about) the first organizer's event."""
    other = await con_rol(users, ORGANIZADOR)
    key = {"Idempotency-Key": str(uuid.uuid4())}
    async with api_client(app) as client:
        mine = await client.post("/api/eventos", json=evento_body(), headers={**key, **organizer.headers})
        theirs = await client.post("/api/eventos", json=evento_body(), headers={**key, **other.headers})
    assert (mine.status_code, theirs.status_code) == (201, 201), theirs.text
    assert mine.json()["id"] != theirs.json()["id"]
    assert theirs.json()["organizador_id"] == other.id
    assert mine.json()["id"] != str(
        uuid.uuid5(uuid.UUID("0b7e7f3a-5d2c-5e21-8f6a-4c3d2e1f0a99"), key["Idempotency-Key"])
    )
