"""Personal data never reaches the event log, the KV buckets, Redis or the logs in plain text."""

from __future__ import annotations

import logging
import uuid
from datetime import UTC, datetime
from pathlib import Path

from eventflow.contracts import RESERVA_CONFIRMADA
from eventflow.crypto import Pseudonymizer
from eventflow.eventstore import EventStore, NewEvent
from eventflow.jetstream import RESERVAS, USUARIOS
from eventflow.logs import JsonFormatter
from services.users.bootstrap import create_app
from services.users.projections import doc_key
from tests.users import factories
from tests.utils.app import api_client
from tests.utils.servers import running_servers


def personal_values(bodies: list[dict]) -> set[bytes]:
    values: set[bytes] = set()
    for body in bodies:
        for field in ("nombre", "apellido", "email", "nro_documento"):
            values |= {body[field].encode(), body[field].lower().encode(), body[field].upper().encode()}
    return values


def raw_bytes(folder: Path) -> bytes:
    files = [path for path in folder.rglob("*") if path.is_file()]
    assert files, f"nothing was written under {folder}"
    return b"\n".join(path.read_bytes() for path in files)


async def exercise(client, js, bodies: list[dict]) -> list[dict]:
    """Registers, reads, conflicts, a refused request and a purchase: every path that touches personal data."""
    users = []
    for body in bodies:
        created = await client.post("/api/usuarios", json=body)
        assert created.status_code == 201
        users.append(created.json())
        assert (await client.get(f"/api/usuarios/{created.json()['id']}")).json()["nombre"] == body["nombre"]
    assert (
        await client.post("/api/usuarios", json={**factories.usuario(), "email": bodies[0]["email"]})
    ).status_code == 409
    refused = {**factories.usuario(), "nombre": bodies[1]["nombre"], "nro_documento": "x"}
    assert (await client.post("/api/usuarios", json=refused)).status_code == 422
    reserva_id = str(uuid.uuid4())
    compra = {
        "reserva_id": reserva_id,
        "usuario_id": users[0]["id"],
        "evento_id": "ev",
        "cantidad": 1,
        "asientos": [],
        "importe_centimos": 100,
        "confirmada_en": datetime.now(UTC).isoformat(),
    }
    await EventStore(js, RESERVAS).append(reserva_id, [NewEvent(RESERVA_CONFIRMADA, compra)], None)
    return users


async def test_raw_nats_and_redis_files_hold_no_plain_personal_data(tmp_path):
    bodies = [factories.usuario() for _ in range(3)]
    bodies[2] = factories.usuario(tipo_documento="Cedula", nro_documento=factories.cedula())
    with running_servers(tmp_path) as servers:
        settings = servers.settings()
        app = create_app(settings)
        async with api_client(app) as client:
            js = app.state.deps.store.js
            users = await exercise(client, js, bodies)
            events, _ = await EventStore(js, USUARIOS).load(users[0]["id"])
            sealed_name = events[0].data["cifrado"]["nombre"].encode()
            in_redis = await app.state.redis.get(doc_key(users[0]["id"]))
            assert sealed_name.decode() in in_redis
        email_pseudonym = Pseudonymizer(settings.pseudonym_key_bytes).pseudonym("email", bodies[0]["email"])
        nats_dir, redis_dir = servers.nats.data_dir, servers.redis.data_dir
    # Both servers are stopped now: Redis flushed its AOF, NATS fsyncs every write anyway.
    nats_raw, redis_raw = raw_bytes(nats_dir), raw_bytes(redis_dir)
    assert sealed_name in nats_raw and sealed_name in redis_raw  # the data is there, sealed
    assert email_pseudonym.encode() in nats_raw  # the claim and the event carry the pseudonym
    leaked = {value for value in personal_values(bodies) if value in nats_raw or value in redis_raw}
    assert leaked == set()


async def test_logs_of_a_create_and_get_hold_no_plain_personal_data(settings, caplog):
    caplog.set_level(logging.DEBUG)
    bodies = [factories.usuario(), factories.usuario()]
    app = create_app(settings)
    async with api_client(app) as client:
        users = await exercise(client, app.state.deps.store.js, bodies)
    formatter = JsonFormatter("users")
    lines = [formatter.format(record) for record in caplog.records]
    assert any(users[0]["id"] in line for line in lines)  # the registration was logged, by id
    for value in personal_values(bodies):
        assert not [line for line in lines if value.decode() in line]
