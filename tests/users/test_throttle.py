"""The sign-in throttle on the real users service: its counters are shared by every replica through Redis, and
with Redis unreachable each replica keeps counting in its own memory, so an outage never opens the door wide."""

from __future__ import annotations

import logging
import uuid

import pytest
from redis.asyncio import Redis

from eventflow.crypto import Pseudonymizer
from eventflow.servers import free_port
from services.users.bootstrap import create_app
from services.users.throttle import PAIR
from tests.utils.app import api_client
from tests.utils.auth import registrar

pytestmark = pytest.mark.asyncio(loop_scope="module")


def address() -> dict[str, str]:
    """A client address of its own per test (the counters outlive a test: they expire after 15 minutes)."""
    return {"X-Forwarded-For": f"203.0.113.{uuid.uuid4().int % 250 + 1}, 2001:db8::{uuid.uuid4().hex[:4]}"}


async def test_failures_counted_by_one_replica_lock_the_pair_on_another(client, servers):
    cuenta = await registrar(client)
    wrong, attacker = {"email": cuenta.email, "password": "adivinanza bien larga"}, address()
    async with api_client(create_app(servers.settings())) as replica:
        for n in range(PAIR.limit):
            answered = await (client if n % 2 else replica).post("/api/auth/token", json=wrong, headers=attacker)
            assert answered.status_code == 401
        for users in (client, replica):
            right = {**wrong, "password": cuenta.password}
            assert (await users.post("/api/auth/token", json=right, headers=attacker)).status_code == 429


async def test_with_redis_unreachable_the_throttle_counts_in_process(servers, rds, caplog):
    """The throttle alone gets a Redis whose server is gone (a port nothing listens on); registration and reads
    keep the real one."""
    nowhere = Redis.from_url(f"redis://127.0.0.1:{free_port()}/0", decode_responses=True)
    app = create_app(servers.settings(), throttle_redis=nowhere)
    try:
        async with api_client(app) as users:
            cuenta = await registrar(users)
            wrong, attacker = {"email": cuenta.email, "password": "adivinanza bien larga"}, address()
            with caplog.at_level(logging.WARNING, logger="services.users.throttle"):
                for _ in range(PAIR.limit):
                    assert (await users.post("/api/auth/token", json=wrong, headers=attacker)).status_code == 401
            assert any("counting in process" in r.getMessage() for r in caplog.records)
            right = {**wrong, "password": cuenta.password}
            blocked = await users.post("/api/auth/token", json=right, headers=attacker)
            assert blocked.status_code == 429, "locked although Redis never counted a single failure"
            assert int(blocked.headers["retry-after"]) > 0
            assert blocked.json()["type"] == "/problems/too-many-sign-in-attempts"
            elsewhere = await users.post("/api/auth/token", json=right, headers=address())
            assert elsewhere.status_code == 200, "signing in works without Redis, from an address not locked"
    finally:
        await nowhere.aclose()
    account = Pseudonymizer(servers.settings().pseudonym_key_bytes).pseudonym("email", cuenta.email)
    assert [key async for key in rds.scan_iter(match=f"signin:*{account}*")] == []  # nothing reached Redis
