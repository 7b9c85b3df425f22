"""Every endpoint of the users service and every error case, through HTTP on the real servers."""

from __future__ import annotations

import uuid

import pytest
import redis.asyncio as aioredis

from eventflow.breaker import Breaker
from eventflow.generations import read_generation
from services.users.bootstrap import create_app
from services.users.projections import doc_key
from tests.users import factories
from tests.users.signed_in import admin_headers, registered
from tests.utils.app import api_client
from tests.utils.servers import running_servers

pytestmark = pytest.mark.asyncio(loop_scope="module")

PROBLEM = "application/problem+json"


async def test_register_answers_201_with_the_user_its_id_and_location(client):
    body = factories.usuario()
    resp = await client.post("/api/usuarios", json=body)
    assert resp.status_code == 201, resp.text
    user = resp.json()
    assert uuid.UUID(user["id"])
    assert resp.headers["location"] == f"/api/usuarios/{user['id']}"
    for field in ("tipo_documento", "nro_documento", "nombre", "apellido"):
        assert user[field] == body[field]
    assert user["email"].lower() == body["email"].lower()
    assert user["historial_compras"] == []
    assert user["historial_url"] == f"/api/usuarios/{user['id']}/historial"
    assert user["registrado_en"]
    assert user["roles"] == ["comprador"]
    assert "password" not in user and body["password"] not in resp.text


async def test_a_registered_user_is_readable_immediately_and_identical(client):
    created, mine = await registered(client)
    resp = await client.get(f"/api/usuarios/{created['id']}", headers=mine)
    assert resp.status_code == 200
    assert resp.json() == created
    assert (await client.get("/api/usuarios/me", headers=mine)).json() == created


async def test_documents_are_stored_canonically(client):
    cedula = factories.cedula()
    typed = f"{cedula[0]}.{cedula[1:4]}.{cedula[4:7]}-{cedula[7]}"
    first = await client.post("/api/usuarios", json=factories.usuario(tipo_documento="Cedula", nro_documento=typed))
    assert first.status_code == 201, first.text
    assert first.json()["nro_documento"] == cedula
    again = await client.post("/api/usuarios", json=factories.usuario(tipo_documento="Cedula", nro_documento=cedula))
    assert again.status_code == 409
    assert again.json()["type"] == "/problems/document-taken"


async def test_reads_send_etag_and_cache_control_and_honour_if_none_match(client):
    created, mine = await registered(client)
    first = await client.get(f"/api/usuarios/{created['id']}", headers=mine)
    etag = first.headers["etag"]
    assert first.headers["cache-control"] == "private, max-age=5"
    again = await client.get(f"/api/usuarios/{created['id']}", headers={**mine, "If-None-Match": etag})
    assert again.status_code == 304
    assert again.content == b""
    assert again.headers["etag"] == etag
    other = await client.get(f"/api/usuarios/{created['id']}", headers={**mine, "If-None-Match": '"something-else"'})
    assert other.status_code == 200
    hist = await client.get(f"/api/usuarios/{created['id']}/historial", headers=mine)
    assert hist.headers["cache-control"] == "private, max-age=5"
    cached = await client.get(created["historial_url"], headers={**mine, "If-None-Match": hist.headers["etag"]})
    assert cached.status_code == 304


async def test_the_etag_changes_when_the_roles_do(client):
    """The document joins the account's roles: a role change must not be answered with a 304 of the old one."""
    created, mine = await registered(client)
    before = await client.get("/api/usuarios/me", headers=mine)
    boss = await admin_headers(client)
    assert (
        await client.put(f"/api/usuarios/{created['id']}/roles", json={"roles": ["organizador"]}, headers=boss)
    ).status_code == 200
    after = await client.get("/api/usuarios/me", headers={**mine, "If-None-Match": before.headers["etag"]})
    assert after.status_code == 200
    assert after.json()["roles"] == ["comprador", "organizador"]


@pytest.mark.parametrize(
    ("change", "field"),
    [
        ({"email": "no-at-sign"}, "email"),
        ({"nro_documento": "12"}, "nro_documento"),
        ({"tipo_documento": "NIF", "nro_documento": "12345678A"}, "nro_documento"),
        ({"tipo_documento": "Cedula", "nro_documento": "1.234.567-3"}, "nro_documento"),
        ({"nombre": ""}, "nombre"),
        ({"apellido": "x" * 101}, "apellido"),
        ({"tipo_documento": "Carnet"}, "tipo_documento"),
        ({"nombre": 12}, "nombre"),
        ({"email": "x" * 500}, "email"),
    ],
)
async def test_invalid_fields_are_422_problems_naming_the_field(client, change, field):
    resp = await client.post("/api/usuarios", json=factories.usuario(**change))
    assert resp.status_code == 422
    assert resp.headers["content-type"] == PROBLEM
    problem = resp.json()
    assert problem["type"] == "/problems/validation"
    assert problem["status"] == 422
    assert field in {e["field"] for e in problem["errors"]}


async def test_missing_fields_and_non_json_bodies_are_422(client):
    body = factories.usuario()
    del body["email"]
    resp = await client.post("/api/usuarios", json=body)
    assert resp.status_code == 422
    assert {e["field"] for e in resp.json()["errors"]} == {"email"}
    raw = await client.post("/api/usuarios", content=b"nope", headers={"content-type": "application/json"})
    assert raw.status_code == 422
    assert raw.headers["content-type"] == PROBLEM


async def test_all_rule_errors_come_back_together(client):
    resp = await client.post("/api/usuarios", json=factories.usuario(nombre="", email="bad", nro_documento="1"))
    assert {e["field"] for e in resp.json()["errors"]} == {"nombre", "email", "nro_documento"}


async def test_a_refused_registration_leaves_nothing_behind(client):
    body = factories.usuario(nro_documento="1")
    assert (await client.post("/api/usuarios", json=body)).status_code == 422
    fixed = await client.post("/api/usuarios", json={**body, "nro_documento": factories.dni()})
    assert fixed.status_code == 201  # the email was not claimed by the refused attempt


async def test_the_email_is_unique_whatever_its_case(client):
    body = factories.usuario()
    assert (await client.post("/api/usuarios", json=body)).status_code == 201
    resp = await client.post("/api/usuarios", json=factories.usuario(email=body["email"].upper()))
    assert resp.status_code == 409
    assert resp.headers["content-type"] == PROBLEM
    assert resp.json()["type"] == "/problems/email-taken"
    assert body["email"] not in resp.text


async def test_the_document_pair_is_unique_and_the_type_is_part_of_it(client):
    body = factories.usuario()
    assert (await client.post("/api/usuarios", json=body)).status_code == 201
    same_doc = await client.post("/api/usuarios", json=factories.usuario(nro_documento=body["nro_documento"]))
    assert same_doc.status_code == 409
    assert same_doc.json()["type"] == "/problems/document-taken"
    other_type = factories.usuario(tipo_documento="Pasaporte", nro_documento=body["nro_documento"])
    assert (await client.post("/api/usuarios", json=other_type)).status_code == 201


async def test_a_document_conflict_releases_the_email_claim(client):
    taken = factories.usuario()
    assert (await client.post("/api/usuarios", json=taken)).status_code == 201
    body = factories.usuario(nro_documento=taken["nro_documento"])
    assert (await client.post("/api/usuarios", json=body)).status_code == 409
    retry = await client.post("/api/usuarios", json={**body, "nro_documento": factories.dni()})
    assert retry.status_code == 201


@pytest.mark.parametrize("path", [f"/api/usuarios/{uuid.uuid4()}", "/api/usuarios/not-a-uuid", "/api/usuarios/%20"])
async def test_unknown_or_malformed_ids_are_404_problems(client, path):
    """Even for the admin, who may read every user; anyone else gets the same 404 for a user that exists."""
    boss = await admin_headers(client)
    resp = await client.get(path, headers=boss)
    assert resp.status_code == 404
    assert resp.headers["content-type"] == PROBLEM
    assert resp.json()["type"] == "/problems/user-not-found"
    hist = await client.get(f"{path}/historial", headers=boss)
    assert hist.status_code == 404
    assert hist.json()["type"] == "/problems/user-not-found"


@pytest.mark.parametrize("path", ["/api/usuarios/me", "/api/usuarios/{id}", "/api/usuarios/{id}/historial"])
async def test_reads_without_a_token_are_401_with_www_authenticate(client, path):
    created, _ = await registered(client)
    for headers in ({}, {"Authorization": "Bearer not.a.token"}, {"Authorization": "Basic eDp5"}):
        resp = await client.get(path.format(id=created["id"]), headers=headers)
        assert resp.status_code == 401, headers
        assert resp.headers["content-type"] == PROBLEM
        assert resp.headers["www-authenticate"].startswith("Bearer")
        assert resp.json()["type"] == "/problems/unauthenticated"
        assert created["email"] not in resp.text


async def test_history_of_a_new_user_is_an_empty_first_page(client):
    created, mine = await registered(client)
    resp = await client.get(created["historial_url"], headers=mine)
    assert resp.status_code == 200
    assert resp.json() == {"usuario_id": created["id"], "pagina": 1, "tamano": 20, "total": 0, "compras": []}


@pytest.mark.parametrize("query", ["pagina=0", "tamano=0", "tamano=101", "pagina=x"])
async def test_bad_paging_is_422(client, query):
    created, mine = await registered(client)
    resp = await client.get(f"{created['historial_url']}?{query}", headers=mine)
    assert resp.status_code == 422
    assert resp.json()["type"] == "/problems/validation"


async def test_health_endpoints(client):
    assert (await client.get("/health/live")).status_code == 200
    ready = await client.get("/health/ready")
    assert ready.status_code == 200
    assert ready.json()["checks"] == {"nats": "ok", "redis": "ok"}


async def test_a_user_whose_data_key_is_gone_reads_as_not_found(app, client):
    """Crypto-shredding: with the wrapped key deleted, the sealed document in Redis and the log is unreadable."""
    created, mine = await registered(client)
    assert (await client.get(f"/api/usuarios/{created['id']}", headers=mine)).status_code == 200  # fills the cache
    await app.state.deps.data_keys.delete(created["id"])
    assert (await client.get(f"/api/usuarios/{created['id']}", headers=mine)).status_code == 404
    assert (await client.get(f"/api/usuarios/{created['id']}", headers=await admin_headers(client))).status_code == 404


async def test_a_user_not_projected_yet_exists_for_the_reservation_chain(app, client):
    """/existe answers from the account on the CP side when the read model has no document yet (or Redis is
    down): a buyer who registered a moment ago can reserve at once. An id with no account stays 404."""
    boss = await admin_headers(client)
    user, _ = await registered(client)
    usuario_id = user["id"]
    redis = app.state.redis
    await redis.delete(doc_key(usuario_id, read_generation(redis)))  # as if the projection had not run yet
    assert (await client.get(f"/api/usuarios/{usuario_id}", headers=boss)).status_code == 404
    assert (await client.get(f"/api/usuarios/{usuario_id}/existe", headers=boss)).status_code == 204
    unknown = str(uuid.uuid4())
    assert (await client.get(f"/api/usuarios/{unknown}/existe", headers=boss)).status_code == 404


async def test_after_a_redis_failure_the_existence_check_asks_only_the_log_until_the_pause_ends(tmp_path) -> None:
    """A hung Redis would cost every reservation's user check its socket timeout: after one failure the check skips
    Redis for a while. Seen with an id only the read model knows (a document with no account behind it)."""
    now = [1_000.0]
    breaker = Breaker(pause_s=2.0, clock=lambda: now[0])
    with running_servers(tmp_path) as servers:
        async with api_client(create_app(servers.settings(), read_model_breaker=breaker)) as client:
            boss = await admin_headers(client)
            user, _ = await registered(client)
            solo_en_redis = str(uuid.uuid4())
            servers.redis.kill()
            try:
                with_redis_down = await client.get(f"/api/usuarios/{user['id']}/existe", headers=boss)
            finally:
                servers.redis.start_again()
            redis = aioredis.Redis.from_url(servers.redis.url)
            try:
                await redis.set(doc_key(solo_en_redis, 0), "{}")
            finally:
                await redis.aclose()
            url = f"/api/usuarios/{solo_en_redis}/existe"
            during_pause = await client.get(url, headers=boss)
            now[0] += 2.1
            after_pause = await client.get(url, headers=boss)
    assert with_redis_down.status_code == 204, "the log knows the user"
    assert during_pause.status_code == 404, "Redis was asked during the pause"
    assert after_pause.status_code == 204, "the pause is over: the read model is asked again"
