"""Personal data and passwords never reach the event log, the KV buckets, Redis or the logs in plain text; the
password's argon2id hash lives in CUENTAS and nowhere else."""

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
from services.users.cuentas import BUCKET as CUENTAS
from services.users.projections import doc_key
from tests.users import factories
from tests.users.signed_in import headers_of
from tests.utils.app import api_client
from tests.utils.auth import bearer, tokens
from tests.utils.servers import ADMIN_PASSWORD, running_servers

ARGON2ID = b"$argon2id$"


def personal_values(bodies: list[dict]) -> set[bytes]:
    values: set[bytes] = set()
    for body in bodies:
        for field in ("nombre", "apellido", "email", "nro_documento"):
            values |= {body[field].encode(), body[field].lower().encode(), body[field].upper().encode()}
    return values


def password_values(passwords: list[str]) -> set[bytes]:
    """Each password whole, and its random tail alone (a leak in another encoding, a JSON escape or a URL form,
    still carries it)."""
    values: set[bytes] = set()
    for password in passwords:
        values |= {password.encode(), password.split()[-1].encode()}
    return values


def raw_files(folder: Path) -> dict[Path, bytes]:
    files = {path: path.read_bytes() for path in folder.rglob("*") if path.is_file()}
    assert files, f"nothing was written under {folder}"
    return files


async def exercise(client, js, bodies: list[dict]) -> tuple[list[dict], list[str]]:
    """Registers, signs in, reads, conflicts, a refused request, a wrong password, a password change, a refresh
    and a purchase: every path that touches personal data or a password. Returns the users and every password
    that was sent."""
    users, passwords = [], [body["password"] for body in bodies]
    for body in bodies:
        created = await client.post("/api/usuarios", json=body)
        assert created.status_code == 201
        users.append(created.json())
        mine = await headers_of(client, body)
        assert (await client.get(f"/api/usuarios/{created.json()['id']}", headers=mine)).json()["nombre"] == body[
            "nombre"
        ]
    taken = {**factories.usuario(), "email": bodies[0]["email"]}
    assert (await client.post("/api/usuarios", json=taken)).status_code == 409
    refused = {**factories.usuario(), "nombre": bodies[1]["nombre"], "nro_documento": "x"}
    assert (await client.post("/api/usuarios", json=refused)).status_code == 422
    wrong = factories.password()
    failed = await client.post("/api/auth/token", json={"email": bodies[0]["email"], "password": wrong})
    assert failed.status_code == 401
    changed = factories.password()
    session = await tokens(client, bodies[1]["email"], bodies[1]["password"])
    change = {"actual": bodies[1]["password"], "nueva": changed}
    assert (
        await client.put("/api/usuarios/me/password", json=change, headers=bearer(session["access_token"]))
    ).status_code == 204
    assert (await client.post("/api/auth/refresh", json={"refresh_token": session["refresh_token"]})).status_code == 200
    assert await headers_of(client, {**bodies[1], "password": changed})
    passwords += [taken["password"], refused["password"], wrong, changed]
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
    return users, passwords


async def test_raw_nats_and_redis_files_hold_no_plain_personal_data_or_password(tmp_path):
    bodies = [factories.usuario() for _ in range(3)]
    bodies[2] = factories.usuario(tipo_documento="Cedula", nro_documento=factories.cedula())
    with running_servers(tmp_path) as servers:
        settings = servers.settings()
        app = create_app(settings)
        async with api_client(app) as client:
            js = app.state.deps.store.js
            users, passwords = await exercise(client, js, bodies)
            events, _ = await EventStore(js, USUARIOS).load(users[0]["id"])
            sealed_name = events[0].data["cifrado"]["nombre"].encode()
            in_redis = await app.state.redis.get(doc_key(users[0]["id"]))
            assert sealed_name.decode() in in_redis
            hashes = [(await app.state.deps.cuentas.get(user["id"])).hash.encode() for user in users]
        email_pseudonym = Pseudonymizer(settings.pseudonym_key_bytes).pseudonym("email", bodies[0]["email"])
        nats_dir, redis_dir = servers.nats.data_dir, servers.redis.data_dir
    # Both servers are stopped now: Redis flushed its AOF, NATS fsyncs every write anyway.
    nats_files, redis_files = raw_files(nats_dir), raw_files(redis_dir)
    nats_raw, redis_raw = b"\n".join(nats_files.values()), b"\n".join(redis_files.values())
    assert sealed_name in nats_raw and sealed_name in redis_raw  # the data is there, sealed
    assert email_pseudonym.encode() in nats_raw  # the claim and the event carry the pseudonym
    leaked = {value for value in personal_values(bodies) if value in nats_raw or value in redis_raw}
    assert leaked == set()
    secrets = password_values([*passwords, ADMIN_PASSWORD])  # the first admin's, from the settings, too
    assert {value for value in secrets if value in nats_raw or value in redis_raw} == set()
    # The hashes: argon2id, in the CUENTAS bucket's files and nowhere else (not in the log, not in Redis).
    assert all(hash.startswith(ARGON2ID) for hash in hashes)
    holding = {path.relative_to(nats_dir).parts[3] for path, raw in nats_files.items() if ARGON2ID in raw}
    assert holding == {f"KV_{CUENTAS}"}, holding
    assert all(hash in nats_raw for hash in hashes) and ARGON2ID not in redis_raw


async def test_logs_hold_no_plain_personal_data_password_or_hash(settings, caplog):
    caplog.set_level(logging.DEBUG)
    bodies = [factories.usuario(), factories.usuario()]
    app = create_app(settings)
    async with api_client(app) as client:
        users, passwords = await exercise(client, app.state.deps.store.js, bodies)
    formatter = JsonFormatter("users")
    lines = [formatter.format(record) for record in caplog.records]
    assert any(users[0]["id"] in line for line in lines)  # the registration was logged, by id
    assert any("password changed" in line for line in lines)
    for value in personal_values(bodies) | password_values([*passwords, ADMIN_PASSWORD]):
        assert not [line for line in lines if value.decode() in line]
    assert not [line for line in lines if "$argon2" in line]
