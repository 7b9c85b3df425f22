"""bench.growth seeds through the write path: the services' own projections must hold exactly what it appended."""

from __future__ import annotations

from pathlib import Path

from bench.growth import UserWrites, comando, seed_events, seed_users, wait_projected
from eventflow.eventstore import EventStore
from eventflow.jetstream import EVENTOS, connect
from eventflow.runtime import redis_client
from services.events import keys
from services.events.bootstrap import create_app as events_app
from services.users import views
from services.users.bootstrap import create_app as users_app
from services.users.projections import doc_key
from tests.utils.app import api_client
from tests.utils.servers import running_servers

EVENTS, USERS = 50, 20


async def test_seeded_events_and_users_are_what_the_read_models_hold(tmp_path: Path) -> None:
    # Servers of its own: "exactly these ids" needs streams no other test appended to; no first admin either.
    with running_servers(tmp_path) as servers:
        settings = servers.settings(admin_email=None, admin_password=None)
        async with api_client(events_app(settings)) as events, api_client(users_app(settings)):
            nc = await connect(settings.nats_url, "growth-test")
            js = nc.jetstream(timeout=10)
            redis = redis_client(settings.redis_url)
            try:
                writes = await UserWrites.open(js, redis, settings)
                organizador = "7d7f6a52-0c0e-4c43-9a43-3a3bb1c4d7a1"
                eventos = await seed_events(EventStore(js, EVENTOS), 0, EVENTS, [organizador], in_flight=8)
                usuarios = await seed_users(writes, 0, USERS, in_flight=8)
                heads = await wait_projected(js, redis, timeout=60)

                assert heads == {"EVENTOS": EVENTS, "USUARIOS": USERS}
                catalog = keys.at(0)
                assert set(await redis.zrange(catalog.by_date, 0, -1)) == set(eventos)
                assert set(await redis.zrange(catalog.by_organizer(organizador), 0, -1)) == set(eventos)
                assert {k async for k in redis.scan_iter(match=doc_key("*"))} == {doc_key(u) for u in usuarios}
                assert len(set(eventos)) == EVENTS and len(set(usuarios)) == USERS

                # The reads the bench measures find them: by id, by word (the prefix index), sealed data opened.
                got = await events.get(f"/api/eventos/{eventos[7]}")
                assert got.status_code == 200 and got.json()["nombre"] == comando(7).nombre
                found = await events.get("/api/eventos", params={"q": "rock", "limit": 100})
                assert found.json()["total"] == len(range(0, EVENTS, 10))  # event i is "rock" when i % 10 == 0
                body, _ = await views.usuario(redis, writes.data_keys, usuarios[3])
                assert body["email"] == "crecimiento.3@ejemplo.com"
            finally:
                await redis.aclose()
                await nc.drain()
