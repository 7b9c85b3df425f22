"""Decisions that destroy or give away data read the stream leader, never a replica that may lag.

A lost ack is exactly when the leader has the event and a replica may not yet: a compensation that read
"absent" from a replica would delete the data key of a user who exists (crypto-shredding by accident). A spy
client sees which kind of read each decision sends (tests/utils/jetstream_spy.py).
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator

import pytest
import pytest_asyncio
from nats.aio.client import Client as NATS
from nats.js.api import KeyValueConfig, StorageType

from eventflow.claims import UniquenessClaims
from eventflow.crypto import KeyRing, Pseudonymizer
from eventflow.eventstore import EventStore
from eventflow.jetstream import USUARIOS, connect
from services.users.bootstrap import CLAIMS_BUCKET, create_app
from services.users.privacy import DataKeys
from tests.users import factories
from tests.utils.app import api_client
from tests.utils.jetstream_spy import spying_on

pytestmark = pytest.mark.asyncio(loop_scope="module")


@pytest_asyncio.fixture(loop_scope="module")
async def nc(servers) -> AsyncIterator[NATS]:
    """The connection every read under test goes over, so the spy can tell when it has seen them all."""
    conn = await connect(servers.nats.url, "leader-reads-tests")
    yield conn
    await conn.drain()


class LostAck:
    """The real EventStore behind our EventLog port, with an append whose ack never comes back."""

    def __init__(self, real: EventStore, *, lands: bool, load_failures: int = 0) -> None:
        self.real, self.lands, self.load_failures = real, lands, load_failures
        self.appended: list[str] = []

    async def append(self, aggregate_id, events, expected_version):
        self.appended.append(aggregate_id)
        if self.lands:
            await self.real.append(aggregate_id, events, expected_version)
        raise ConnectionError("no ack")

    async def load(self, aggregate_id):
        if self.appended and self.load_failures > 0:  # NATS still down after the append: reconciled later
            self.load_failures -= 1
            raise ConnectionError("still down")
        return await self.real.load(aggregate_id)


async def eventually(check, seconds: float = 20.0) -> None:
    for _ in range(int(seconds / 0.05)):
        if await check():
            return
        await asyncio.sleep(0.05)
    raise AssertionError("condition not reached")


@pytest.mark.parametrize("lands", [False, True], ids=["append-lost", "ack-lost"])
async def test_the_compensation_after_an_ambiguous_append_reads_the_leader(servers, nc, client, lands):
    """(`client`: the module's ordinary app made the first admin, so this app's start registers nobody.)"""
    store = LostAck(EventStore(nc.jetstream(), USUARIOS), lands=lands)
    async with spying_on(servers.nats.url, USUARIOS.name) as spy:
        async with api_client(create_app(servers.settings(), event_store=store)) as users:
            resp = await users.post("/api/usuarios", json=factories.usuario())
        leader, direct = await spy.reads_of(USUARIOS.subject(store.appended[0]), sent_over=nc)
    assert resp.status_code == (201 if lands else 503), resp.text
    assert leader, "the compensation decided without reading the stream leader"
    assert direct == []


async def test_the_reconciliation_reads_the_leader_before_it_undoes(servers, nc, client):
    store = LostAck(EventStore(nc.jetstream(), USUARIOS), lands=False, load_failures=1)
    app = create_app(servers.settings(), event_store=store)
    async with spying_on(servers.nats.url, USUARIOS.name) as spy:
        async with api_client(app) as users:
            assert (await users.post("/api/usuarios", json=factories.usuario())).status_code == 503

            async def settled() -> bool:
                return app.state.deps.reconciler.pending == 0

            await eventually(settled)
        leader, direct = await spy.reads_of(USUARIOS.subject(store.appended[0]), sent_over=nc)
    assert leader and direct == []


async def test_the_take_over_of_a_stale_claim_asks_the_leader_whether_its_owner_exists(servers, nc, client):
    body = factories.usuario()
    pseudonyms = Pseudonymizer(servers.settings().pseudonym_key_bytes)
    claims = UniquenessClaims(await nc.jetstream().key_value(CLAIMS_BUCKET))  # `client` first: it made the bucket
    crashed = str(uuid.uuid4())
    await claims.claim(pseudonyms.pseudonym("email", body["email"]), crashed)
    async with spying_on(servers.nats.url, USUARIOS.name) as spy:
        app = create_app(servers.settings(), claim_stale_after=0, event_store=EventStore(nc.jetstream(), USUARIOS))
        async with api_client(app) as users:
            assert (await users.post("/api/usuarios", json=body)).status_code == 201
        leader, direct = await spy.reads_of(USUARIOS.subject(crashed), sent_over=nc)
    assert leader and direct == []


async def test_claims_and_data_keys_read_the_leader_even_on_a_bucket_that_allows_direct_reads(servers, nc, rds):
    js = nc.jetstream()
    bucket = f"DIRECT_{uuid.uuid4().hex[:8].upper()}"
    kv = await js.create_key_value(KeyValueConfig(bucket=bucket, storage=StorageType.FILE, direct=True))
    assert kv._direct  # the premise: nats-py's own get() would ask any replica here
    claims = UniquenessClaims(kv)
    settings = servers.settings()
    data_keys = DataKeys(kv, rds, KeyRing({settings.master_key_id: settings.master_key_bytes}, settings.master_key_id))
    async with spying_on(servers.nats.url, f"KV_{bucket}") as spy:
        await claims.claim("email.x", "a")
        assert (await claims.claim("email.x", "b")).owner == "a"  # create refused: reads who holds it
        assert (await claims.get("email.x")) is not None
        dek = await data_keys.create("u1")
        assert await data_keys.create("u1") == dek  # create refused: reads the stored key back
        assert await data_keys.get("u1") == dek
        leader, direct = await spy.reads_of(bucket, sent_over=nc)
    assert len(leader) >= 4 and direct == []  # nats-py's create reads too when refused: also the leader
    await js.delete_key_value(bucket)
