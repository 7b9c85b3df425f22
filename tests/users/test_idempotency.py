"""Idempotency-Key on POST /api/usuarios, on the real NATS and Redis: one key, one user, whatever the retries."""

from __future__ import annotations

import asyncio
import time
import uuid

import orjson
import pytest
import pytest_asyncio

from eventflow.claims import UniquenessClaims
from eventflow.contracts import USUARIO_REGISTRADO
from eventflow.crypto import Pseudonymizer
from eventflow.eventstore import EventStore
from eventflow.jetstream import USUARIOS
from services.users.bootstrap import CLAIMS_BUCKET
from tests.users import factories
from tests.users.signed_in import headers_of

pytestmark = pytest.mark.asyncio(loop_scope="module")
PERSONAL = ("nro_documento", "nombre", "apellido", "email")


def key() -> dict[str, str]:
    return {"Idempotency-Key": str(uuid.uuid4())}


def usuario_id_para(settings, idempotency_key: str) -> str:
    """The id a registration under this key gets: an HMAC with the pseudonym key, not computable without it."""
    return Pseudonymizer(settings.pseudonym_key_bytes).id_for("usuario", idempotency_key)


@pytest_asyncio.fixture(loop_scope="module")
async def claims(js, client) -> UniquenessClaims:  # `client` first: the app creates the bucket
    return UniquenessClaims(await js.key_value(CLAIMS_BUCKET))


async def log_of(js, usuario_id: str) -> list:
    events, _ = await EventStore(js, USUARIOS).load(usuario_id)
    return events


async def test_same_key_and_body_twice_answers_the_same_user_once_in_the_log(client, js, settings):
    body, headers = factories.usuario(), key()
    first = await client.post("/api/usuarios", json=body, headers=headers)
    again = await client.post("/api/usuarios", json=body, headers=headers)
    assert (first.status_code, again.status_code) == (201, 200), again.text
    assert again.json() == first.json()
    assert first.json()["id"] == usuario_id_para(settings, headers["Idempotency-Key"])
    assert again.headers["location"] == first.headers["location"]
    assert again.headers["idempotency-key"] == headers["Idempotency-Key"]
    events = await log_of(js, first.json()["id"])
    assert [e.type for e in events] == [USUARIO_REGISTRADO]
    huella = events[0].data["huella"]
    assert huella.startswith("registro.") and not any(body[f].lower() in huella.lower() for f in PERSONAL)
    read = await client.get(first.headers["location"], headers=await headers_of(client, body))
    assert read.status_code == 200 and read.json()["email"] == body["email"]


async def test_a_repeat_with_another_password_keeps_the_first_one(client):
    """The password is not part of "the same request" (it is never fingerprinted): the retry answers the stored
    user, and only the password of the request that registered signs in."""
    body, headers = factories.usuario(), key()
    assert (await client.post("/api/usuarios", json=body, headers=headers)).status_code == 201
    other = {**body, "password": factories.password()}
    assert (await client.post("/api/usuarios", json=other, headers=headers)).status_code == 200
    assert (
        await client.post("/api/auth/token", json={"email": body["email"], "password": other["password"]})
    ).status_code == 401
    assert await headers_of(client, body)


async def test_concurrent_requests_with_one_key_register_one_user(client, js, claims, servers):
    body, headers = factories.usuario(), key()
    answers = await asyncio.gather(*(client.post("/api/usuarios", json=body, headers=headers) for _ in range(8)))
    assert sorted(a.status_code for a in answers) == [200] * 7 + [201], [a.text for a in answers]
    usuario_id = usuario_id_para(servers.settings(), headers["Idempotency-Key"])
    assert {a.json()["id"] for a in answers} == {usuario_id}
    assert len({a.json()["registrado_en"] for a in answers}) == 1
    assert len(await log_of(js, usuario_id)) == 1
    # no duplicate undid the winner's steps: its data key opens the stored data, its claims and account still hold
    mine = await headers_of(client, body)
    assert (await client.get(f"/api/usuarios/{usuario_id}", headers=mine)).json()["email"] == body["email"]
    email_claim = await claims.get(
        Pseudonymizer(servers.settings().pseudonym_key_bytes).pseudonym("email", body["email"])
    )
    assert email_claim is not None and email_claim.owner == usuario_id


async def test_same_key_with_a_different_body_is_a_problem_and_takes_nothing(client, js, settings):
    body, other, headers = factories.usuario(), factories.usuario(), key()
    assert (await client.post("/api/usuarios", json=body, headers=headers)).status_code == 201
    reused = await client.post("/api/usuarios", json=other, headers=headers)
    assert reused.status_code == 422
    assert reused.headers["content-type"] == "application/problem+json"
    assert reused.json()["type"] == "/problems/idempotency-key-reused"
    events = await log_of(js, usuario_id_para(settings, headers["Idempotency-Key"]))
    assert len(events) == 1
    # the refused body claimed neither its email nor its document
    assert (await client.post("/api/usuarios", json=other)).status_code == 201


async def test_concurrent_different_bodies_under_one_key_one_wins_the_other_is_refused(client, js):
    one, two, headers = factories.usuario(), factories.usuario(), key()
    answers = await asyncio.gather(
        *(client.post("/api/usuarios", json=b, headers=headers) for b in (one, two, one, two, one, two))
    )
    statuses = sorted(a.status_code for a in answers)
    assert statuses in ([200, 200, 201, 422, 422, 422],), [a.text for a in answers]
    winner = next(a.json() for a in answers if a.status_code == 201)
    loser = two if winner["email"] == one["email"] else one
    assert len(await log_of(js, winner["id"])) == 1
    assert (await client.post("/api/usuarios", json=loser)).status_code == 201


async def test_a_refused_registration_frees_the_key(client):
    taken, headers = factories.usuario(), key()
    assert (await client.post("/api/usuarios", json=taken)).status_code == 201
    clash = factories.usuario(email=taken["email"])
    refused = await client.post("/api/usuarios", json=clash, headers=headers)
    assert refused.status_code == 409 and refused.json()["type"] == "/problems/email-taken"
    fixed = await client.post("/api/usuarios", json=factories.usuario(), headers=headers)
    assert fixed.status_code == 201, fixed.text


async def test_a_retry_after_a_writer_died_reuses_its_data_key_and_renews_its_old_claims(
    app, client, js, claims, servers
):
    """A crashed attempt left its data key and the claims (owner = the derived id), older than the write deadline."""
    body, headers = factories.usuario(), key()
    usuario_id = usuario_id_para(servers.settings(), headers["Idempotency-Key"])
    pseudonyms = Pseudonymizer(servers.settings().pseudonym_key_bytes)
    doc = f"{body['tipo_documento']}:{body['nro_documento']}"
    old = orjson.dumps({"owner": usuario_id, "at": time.time() - 30})
    for claim_key in (pseudonyms.pseudonym("email", body["email"]), pseudonyms.pseudonym("doc", doc)):
        await claims.kv.create(claim_key, old)
    dead_attempts_key = await app.state.deps.data_keys.create(usuario_id)
    retried = await client.post("/api/usuarios", json=body, headers=headers)
    assert retried.status_code == 201, retried.text
    assert retried.json()["id"] == usuario_id and len(await log_of(js, usuario_id)) == 1
    mine = await headers_of(client, body)
    assert (await client.get(f"/api/usuarios/{usuario_id}", headers=mine)).json()["email"] == body["email"]
    assert await app.state.deps.data_keys.get(usuario_id) == dead_attempts_key


async def test_without_a_key_nothing_changes(client):
    body = factories.usuario()
    first = await client.post("/api/usuarios", json=body)
    assert first.status_code == 201 and "idempotency-key" not in first.headers
    assert (await client.post("/api/usuarios", json=body)).status_code == 409  # a new user, refused as a duplicate
    other = await client.post("/api/usuarios", json=factories.usuario())
    assert other.status_code == 201 and other.json()["id"] != first.json()["id"]
