"""Uniqueness on the CP side: races, compensation of failed writes, take-over of claims left by crashes."""

from __future__ import annotations

import asyncio
import uuid

import pytest
import pytest_asyncio
from nats.js.errors import KeyNotFoundError

from eventflow.claims import UniquenessClaims
from eventflow.crypto import Pseudonymizer
from eventflow.eventstore import EventStore
from eventflow.jetstream import USUARIOS
from services.users.bootstrap import CLAIMS_BUCKET, create_app
from services.users.cuentas import BUCKET as CUENTAS
from services.users.privacy import KEYS_BUCKET
from tests.users import factories
from tests.users.signed_in import headers_of
from tests.utils.app import api_client

pytestmark = pytest.mark.asyncio(loop_scope="module")


@pytest.fixture
def pseudonyms(servers) -> Pseudonymizer:
    return Pseudonymizer(servers.settings().pseudonym_key_bytes)


@pytest_asyncio.fixture(loop_scope="module")
async def claims(js, client) -> UniquenessClaims:  # `client` first: the app creates the bucket
    return UniquenessClaims(await js.key_value(CLAIMS_BUCKET))


def keys_of(body, pseudonyms: Pseudonymizer) -> tuple[str, str]:
    doc = f"{body['tipo_documento']}:{body['nro_documento']}"
    return pseudonyms.pseudonym("email", body["email"]), pseudonyms.pseudonym("doc", doc)


async def test_twelve_clients_racing_for_one_email_get_one_201_and_eleven_409(client):
    email = factories.usuario()["email"]
    bodies = [factories.usuario(email=email) for _ in range(12)]
    responses = await asyncio.gather(*(client.post("/api/usuarios", json=b) for b in bodies))
    statuses = sorted(r.status_code for r in responses)
    assert statuses == [201] + [409] * 11
    assert {r.json()["type"] for r in responses if r.status_code == 409} == {"/problems/email-taken"}
    (won,) = [(r.json(), body) for r, body in zip(responses, bodies, strict=True) if r.status_code == 201]
    winner, winners_body = won
    mine = await headers_of(client, winners_body)  # the account is the winner's: its password signs in
    assert (await client.get(f"/api/usuarios/{winner['id']}", headers=mine)).json()["email"] == email
    losers = [body for body in bodies if body is not winners_body][:3]  # a few: more would be throttled
    for body in losers:
        sign_in = {"email": email, "password": body["password"]}
        assert (await client.post("/api/auth/token", json=sign_in)).status_code == 401


async def test_twelve_clients_racing_for_one_document_get_one_201(client):
    nro = factories.dni()
    responses = await asyncio.gather(
        *(client.post("/api/usuarios", json=factories.usuario(nro_documento=nro)) for _ in range(12))
    )
    assert sorted(r.status_code for r in responses) == [201] + [409] * 11
    assert {r.json()["type"] for r in responses if r.status_code == 409} == {"/problems/document-taken"}


class FailingStore:
    """Our own EventLog port, failing the way a NATS outage or a lost ack looks to the handler."""

    def __init__(self, real: EventStore, *, lands: bool = False, load_failures: int = 0) -> None:
        self.real, self.lands, self.load_failures = real, lands, load_failures
        self.appended: list[str] = []

    async def append(self, aggregate_id, events, expected_version):
        self.appended.append(aggregate_id)
        if self.lands:
            await self.real.append(aggregate_id, events, expected_version)
        raise ConnectionError("no ack")

    async def load(self, aggregate_id):
        if self.appended and self.load_failures > 0:  # down from the failed append on (not at the start)
            self.load_failures -= 1
            raise ConnectionError("still down")
        return await self.real.load(aggregate_id)


async def eventually(check, seconds: float = 10.0) -> None:
    for _ in range(int(seconds / 0.05)):
        if await check():
            return
        await asyncio.sleep(0.05)
    raise AssertionError("condition not reached")


async def test_a_failed_append_releases_the_claims_and_deletes_the_data_key(servers, js, claims, pseudonyms):
    store = FailingStore(EventStore(js, USUARIOS))
    body = factories.usuario()
    async with api_client(create_app(servers.settings(), event_store=store)) as failing:
        resp = await failing.post("/api/usuarios", json=body)
    assert resp.status_code == 503
    assert resp.json()["type"] == "/problems/registration-not-completed"
    for key in keys_of(body, pseudonyms):
        assert await claims.get(key) is None
    for bucket in (KEYS_BUCKET, CUENTAS):  # the data key and the account (password hash) alike
        with pytest.raises(KeyNotFoundError):
            await (await js.key_value(bucket)).get(store.appended[0])
    assert (await store.real.load(store.appended[0]))[0] == []


async def test_after_a_compensated_failure_the_same_data_registers(servers, js, client):
    body = factories.usuario()
    async with api_client(create_app(servers.settings(), event_store=FailingStore(EventStore(js, USUARIOS)))) as bad:
        assert (await bad.post("/api/usuarios", json=body)).status_code == 503
    assert (await client.post("/api/usuarios", json=body)).status_code == 201


async def test_an_append_that_landed_despite_the_error_is_a_success(servers, js):
    store = FailingStore(EventStore(js, USUARIOS), lands=True)
    body = factories.usuario()
    async with api_client(create_app(servers.settings(), event_store=store)) as flaky:
        resp = await flaky.post("/api/usuarios", json=body)
        assert resp.status_code == 201
        mine = await headers_of(flaky, body)
        assert (await flaky.get(f"/api/usuarios/{resp.json()['id']}", headers=mine)).json() == resp.json()


async def test_when_the_outcome_is_unknown_the_registration_is_reconciled_later(servers, js, claims, pseudonyms):
    store = FailingStore(EventStore(js, USUARIOS), load_failures=3)
    body = factories.usuario()
    async with api_client(create_app(servers.settings(), event_store=store)) as down:
        assert (await down.post("/api/usuarios", json=body)).status_code == 503

        async def released() -> bool:
            return all([await claims.get(key) is None for key in keys_of(body, pseudonyms)])

        await eventually(released)  # once the log answers "not there", the claims are given back
    for bucket in (KEYS_BUCKET, CUENTAS):
        with pytest.raises(KeyNotFoundError):
            await (await js.key_value(bucket)).get(store.appended[0])


async def test_a_registration_that_landed_unseen_is_kept_by_the_reconciliation(servers, js, claims, pseudonyms):
    store = FailingStore(EventStore(js, USUARIOS), lands=True, load_failures=2)
    body = factories.usuario()
    app = create_app(servers.settings(), event_store=store)
    async with api_client(app) as down:
        assert (await down.post("/api/usuarios", json=body)).status_code == 503

        async def settled() -> bool:
            return app.state.deps.reconciler.pending == 0

        await eventually(settled)
        for key in keys_of(body, pseudonyms):
            held = await claims.get(key)
            assert held is not None and held.owner == store.appended[0]
        mine = await headers_of(down, body)  # the account was kept with the rest
        assert (await down.get(f"/api/usuarios/{store.appended[0]}", headers=mine)).status_code == 200


async def test_a_writer_past_its_deadline_does_not_append(servers, js, claims, pseudonyms):
    body = factories.usuario()
    async with api_client(create_app(servers.settings(), write_deadline=-1)) as late:
        assert (await late.post("/api/usuarios", json=body)).status_code == 503
    for key in keys_of(body, pseudonyms):
        assert await claims.get(key) is None


async def test_a_fresh_claim_of_a_writer_that_may_still_append_is_respected(client, claims, pseudonyms):
    body = factories.usuario()
    await claims.claim(keys_of(body, pseudonyms)[0], str(uuid.uuid4()))
    resp = await client.post("/api/usuarios", json=body)
    assert resp.status_code == 409
    assert resp.json()["type"] == "/problems/email-taken"


async def test_a_stale_claim_of_a_writer_that_crashed_is_taken_over(servers, claims, pseudonyms):
    body = factories.usuario()
    email_key, doc_key = keys_of(body, pseudonyms)
    crashed = str(uuid.uuid4())
    await claims.claim(email_key, crashed)
    await claims.claim(doc_key, crashed)
    await asyncio.sleep(0.3)
    async with api_client(create_app(servers.settings(), claim_stale_after=0.2)) as users:
        racers = await asyncio.gather(*(users.post("/api/usuarios", json=body) for _ in range(6)))
        assert sorted(r.status_code for r in racers) == [201] + [409] * 5  # the take-over is a CAS: one wins
        winner = next(r.json() for r in racers if r.status_code == 201)
        mine = await headers_of(users, body)
        assert (await users.get(f"/api/usuarios/{winner['id']}", headers=mine)).status_code == 200
    for key in (email_key, doc_key):
        held = await claims.get(key)
        assert held is not None and held.owner == winner["id"]


async def test_a_claim_whose_owner_exists_is_never_taken_over(servers):
    body = factories.usuario()
    async with api_client(create_app(servers.settings(), claim_stale_after=0)) as users:
        assert (await users.post("/api/usuarios", json=body)).status_code == 201
        again = await users.post("/api/usuarios", json=factories.usuario(email=body["email"]))
        assert again.status_code == 409
        same_doc = await users.post("/api/usuarios", json=factories.usuario(nro_documento=body["nro_documento"]))
        assert same_doc.status_code == 409
