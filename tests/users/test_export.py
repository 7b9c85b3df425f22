"""The anonymized users export and erasure, on real NATS and Redis of this module's own (exact row counts).

The export must hold the purchase history (category, event month, quantity, amount, outcome) and none of the
identifying data: no name, email, document, user id, reservation id, pseudonym or ciphertext; ids are random
per export; the quasi-identifiers are k-anonymous (generalized, then suppressed). Erasure destroys the data key.
"""

from __future__ import annotations

import csv
import io
import logging
import uuid
from collections.abc import AsyncIterator
from datetime import UTC, datetime

import orjson
import pytest
import pytest_asyncio
from cryptography.exceptions import InvalidTag
from nats.js.errors import KeyNotFoundError

from eventflow.contracts import EVENTO_CREADO, RESERVA_CANCELADA, RESERVA_CONFIRMADA
from eventflow.crypto import FieldCipher
from eventflow.eventstore import EventStore, NewEvent
from eventflow.jetstream import EVENTOS, RESERVAS, USUARIOS, ensure_stream
from services.users.bootstrap import create_app
from services.users.privacy import KEYS_BUCKET
from services.users.projections import historial_key, orden_key, recientes_key
from tests.users import factories
from tests.users.signed_in import admin_headers, headers_of
from tests.utils.app import api_client
from tests.utils.servers import running_servers

pytestmark = pytest.mark.asyncio(loop_scope="module")
module_fixture = pytest_asyncio.fixture(scope="module", loop_scope="module")
COMMON = "ejemplo-comun.com"


@module_fixture
async def world(tmp_path_factory) -> AsyncIterator[dict]:
    """6 users at one common domain, 2 at rare ones, the admin; one event, two purchases of users[0]."""
    with running_servers(tmp_path_factory.mktemp("export")) as servers:
        app = create_app(servers.settings())
        async with api_client(app) as client:
            js = app.state.deps.store.js
            bodies = [factories.usuario(email=f"{uuid.uuid4().hex[:10]}@{COMMON}") for _ in range(6)]
            bodies += [factories.usuario(), factories.usuario()]
            users = []
            for body in bodies:
                resp = await client.post("/api/usuarios", json=body)
                assert resp.status_code == 201, resp.text
                users.append(resp.json())
            await ensure_stream(js, EVENTOS)
            evento_id = str(uuid.uuid4())
            evento = {
                "nombre": "Concierto",
                "descripcion": "",
                "fecha": "2027-03-10T20:00:00+00:00",
                "lugar": "X",
                "aforo_total": 10,
                "precio_centimos": 1500,
                "categoria": "musica",
                "secciones": None,
                "venta_desde": None,
            }
            await EventStore(js, EVENTOS).append(evento_id, [NewEvent(EVENTO_CREADO, evento)], 0)
            reservas = [str(uuid.uuid4()), str(uuid.uuid4())]
            now = datetime.now(UTC).isoformat()
            store = EventStore(js, RESERVAS)
            for reserva_id, cantidad in zip(reservas, (2, 1), strict=True):
                compra = {
                    "reserva_id": reserva_id,
                    "usuario_id": users[0]["id"],
                    "evento_id": evento_id,
                    "cantidad": cantidad,
                    "asientos": [],
                    "importe_centimos": 1500 * cantidad,
                    "confirmada_en": now,
                }
                seq = await store.append(reserva_id, [NewEvent(RESERVA_CONFIRMADA, compra)], None)
            cancel = {
                "reserva_id": reservas[1],
                "usuario_id": users[0]["id"],
                "evento_id": evento_id,
                "cantidad": 1,
                "asientos": [],
                "importe_reembolsado_centimos": 1500,
                "cancelada_en": now,
            }
            seq = await store.append(reservas[1], [NewEvent(RESERVA_CANCELADA, cancel)], None)
            assert await app.state.runners["usuarios-historial"].wait_for(seq, 10)
            yield {
                "app": app,
                "settings": servers.settings(),
                "client": client,
                "js": js,
                "bodies": bodies,
                "users": users,
                "reservas": reservas,
                "admin": await admin_headers(client),
                "admin_id": (await client.get("/api/usuarios/me", headers=await admin_headers(client))).json()["id"],
            }


def forbidden_values(world: dict) -> set[str]:
    """What must never be in an export: every identifying value, pseudonym and ciphertext of every user."""
    values = set(world["reservas"])
    for body, user in zip(world["bodies"], world["users"], strict=True):
        values |= {body["email"], body["nombre"], body["apellido"], body["nro_documento"], user["id"]}
        values |= {user["id"].replace("-", "")}
    return values


async def sealed_and_pseudonyms(world: dict) -> set[str]:
    values = set()
    for user in world["users"]:
        events, _ = await EventStore(world["js"], USUARIOS).load(user["id"])
        values |= set(events[0].data["cifrado"].values()) | set(events[0].data["seudonimos"].values())
    return values


async def export(world: dict, formato: str, k: int = 5, extra: str = "") -> str:
    path = f"/api/usuarios/exportar?formato={formato}&k={k}{extra}"
    resp = await world["client"].get(path, headers=world["admin"])
    assert resp.status_code == 200, resp.text
    return resp.text


async def test_ndjson_export_is_generalized_until_k_anonymous_and_keeps_the_purchases(world):
    text = await export(world, "ndjson", k=5)
    *rows, trailer = [orjson.loads(line) for line in text.splitlines()]
    resumen = trailer["resumen"]
    # 9 users: (DNI, common, month) x6, (DNI, otro, month) x2, (Pasaporte, otro, month) x1 for the admin. Only
    # dropping the domain and the document type (level 4) leaves every class with 5 or more.
    assert len(rows) == 9 and resumen["filas_suprimidas"] == 0 and resumen["nivel_de_generalizacion"] == 4
    assert resumen["k"] == 5 and resumen["filas_exportadas"] == 9
    assert {(r["tipo_documento"], r["dominio_email"]) for r in rows} == {("*", "*")}
    assert {r["registro"] for r in rows} == {str(datetime.now(UTC).year)}
    assert len({r["id"] for r in rows}) == 9
    compras = [r["compras"] for r in rows if r["compras"]]
    assert compras == [
        [
            {"categoria": "musica", "mes_evento": "2027-03", "cantidad": 1, "importe": 15.0, "estado": "cancelada"},
            {"categoria": "musica", "mes_evento": "2027-03", "cantidad": 2, "importe": 30.0, "estado": "confirmada"},
        ]
    ]
    leaked = {v for v in forbidden_values(world) | await sealed_and_pseudonyms(world) if v.lower() in text.lower()}
    assert leaked == set()


async def test_a_lower_k_keeps_more_detail_and_rare_domains_become_otro(world):
    """k=2: the common domain and `otro` classes hold 6 and 2; the admin alone (Pasaporte) is suppressed, which
    the default 5 % would not allow (it generalizes instead, as above) but 20 % does."""
    rows = orjson.loads(await export(world, "json", k=2, extra="&suprimir_hasta=0.2"))
    assert rows["resumen"]["nivel_de_generalizacion"] == 0
    kinds = {(r["tipo_documento"], r["dominio_email"]) for r in rows["usuarios"]}
    assert kinds == {("DNI", COMMON), ("DNI", "otro")}
    assert rows["resumen"]["filas_suprimidas"] == 1 and len(rows["usuarios"]) == 8


async def test_k_above_the_population_suppresses_everyone(world):
    summary = await world["client"].get("/api/usuarios/exportar/resumen?k=10", headers=world["admin"])
    assert summary.status_code == 200 and summary.json()["filas_suprimidas"] == 9
    text = await export(world, "csv", k=10)
    assert text.splitlines() == [
        "id,tipo_documento,dominio_email,registro,categoria,mes_evento,cantidad,importe,estado"
    ]


async def test_two_exports_cannot_be_joined_by_id(world):
    first = {orjson.loads(line).get("id") for line in (await export(world, "ndjson")).splitlines()}
    second = {orjson.loads(line).get("id") for line in (await export(world, "ndjson")).splitlines()}
    assert first - {None} and not (first & second) - {None}


async def test_csv_is_rfc4180_with_one_row_per_purchase(world, caplog):
    caplog.set_level(logging.INFO)
    text = await export(world, "csv", k=5)
    audits = [r for r in caplog.records if getattr(r, "audit", None) == "usuarios.exportar"]
    assert [(a.formato, a.k, a.filas, a.suprimidas) for a in audits] == [("csv", 5, 9, 0)]  # type: ignore[attr-defined]
    assert audits[0].por == world["admin_id"]  # type: ignore[attr-defined]
    assert "\r\n" in text
    rows = list(csv.DictReader(io.StringIO(text)))
    assert len(rows) == 10  # 8 users without purchases, users[0] twice
    bought = [r for r in rows if r["categoria"]]
    assert sorted(r["estado"] for r in bought) == ["cancelada", "confirmada"]
    assert len({r["id"] for r in bought}) == 1  # the same anonymous id links a user's purchases


async def test_only_an_admin_exports(world):
    client = world["client"]
    buyer = await headers_of(client, world["bodies"][1])
    for path in ("/api/usuarios/exportar", "/api/usuarios/exportar/resumen"):
        assert (await client.get(path)).status_code == 401
        assert (await client.get(path, headers=buyer)).status_code == 403
    bad = await client.get("/api/usuarios/exportar?formato=xml", headers=world["admin"])
    assert bad.status_code == 422 and bad.headers["content-type"].startswith("application/problem+json")


async def test_erasure_shreds_the_data_key_and_forgets_the_user(world):
    client, js, body, user = world["client"], world["js"], world["bodies"][7], world["users"][7]
    own = await headers_of(client, body)
    stranger = await headers_of(client, world["bodies"][6])
    refresh = await client.post("/api/auth/token", json={"email": body["email"], "password": body["password"]})
    assert (await client.delete(f"/api/usuarios/{user['id']}", headers=stranger)).status_code == 404
    assert (await client.delete(f"/api/usuarios/{user['id']}", headers=own)).status_code == 204
    assert (await client.get(f"/api/usuarios/{user['id']}", headers=world["admin"])).status_code == 404
    assert (await client.get(f"/api/usuarios/{user['id']}/historial", headers=world["admin"])).status_code == 404
    assert (await client.delete(f"/api/usuarios/{user['id']}", headers=world["admin"])).status_code == 204
    # A purchase event of theirs arriving later is not projected: the read model keeps nothing of them.
    late = str(uuid.uuid4())
    compra = {
        "reserva_id": late,
        "usuario_id": user["id"],
        "evento_id": str(uuid.uuid4()),
        "cantidad": 1,
        "asientos": [],
        "importe_centimos": 100,
        "confirmada_en": datetime.now(UTC).isoformat(),
    }
    seq = await EventStore(js, RESERVAS).append(late, [NewEvent(RESERVA_CONFIRMADA, compra)], None)
    assert await world["app"].state.runners["usuarios-historial"].wait_for(seq, 10)
    redis = world["app"].state.redis
    assert not await redis.exists(historial_key(user["id"]), orden_key(user["id"]), recientes_key(user["id"]))
    # No key the system holds opens the sealed fields left in the append-only log.
    events, _ = await EventStore(js, USUARIOS).load(user["id"])
    assert [e.type for e in events] == ["UsuarioRegistrado", "UsuarioBorrado"]
    kv = await js.key_value(KEYS_BUCKET)
    with pytest.raises(KeyNotFoundError):
        await kv.get(user["id"])
    ring = world["app"].state.deps.data_keys.ring
    for key in await kv.keys():
        dek = ring.unwrap((await kv.get(key)).value.decode())
        with pytest.raises(InvalidTag):
            FieldCipher(dek, user["id"]).open("email", events[0].data["cifrado"]["email"])
    # Sessions and the account are gone; the email and document are free again.
    signin = await client.post("/api/auth/token", json={"email": body["email"], "password": body["password"]})
    assert signin.status_code == 401
    again = await client.post("/api/auth/refresh", json={"refresh_token": refresh.json()["refresh_token"]})
    assert again.status_code == 401
    reborn = await client.post("/api/usuarios", json=body)
    assert reborn.status_code == 201 and reborn.json()["id"] != user["id"]
    # The export counts the new user once, not the erased one.
    rows = (await export(world, "ndjson", k=2)).splitlines()
    assert orjson.loads(rows[-1])["resumen"]["filas_totales"] == 9


async def test_an_erasure_a_crash_left_halfway_is_completed_at_the_next_start(world):
    """The crash right after the event: nothing else happened. The next start of the service finishes it."""
    client, js = world["client"], world["js"]
    body = factories.usuario()
    user = (await client.post("/api/usuarios", json=body)).json()
    _, version = await EventStore(js, USUARIOS).load(user["id"])
    borrado = NewEvent("UsuarioBorrado", {"usuario_id": user["id"], "borrado_en": datetime.now(UTC).isoformat()})
    await EventStore(js, USUARIOS).append(user["id"], [borrado], expected_version=version)
    kv = await js.key_value(KEYS_BUCKET)
    assert (await kv.get(user["id"])).value  # the key is still there: the erasure is not complete
    restarted = create_app(world["settings"])
    async with api_client(restarted) as other:
        assert await restarted.state.borrados_pendientes == [user["id"]]
        with pytest.raises(KeyNotFoundError):
            await kv.get(user["id"])
        signin = await other.post("/api/auth/token", json={"email": body["email"], "password": body["password"]})
        assert signin.status_code == 401
        assert (await other.post("/api/usuarios", json=body)).status_code == 201  # the email is free again
    # The users erased completely before (the test above) are not done again.
