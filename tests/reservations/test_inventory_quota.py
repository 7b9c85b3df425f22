"""The per-user limit on the real store: one quota key per (event, user) in the CUPOS bucket, taken before the
hold and given back by refused holds, releases and returns; exact under concurrency, also across processes."""

from __future__ import annotations

import asyncio
import random
import uuid
from collections import defaultdict

import pytest
from nats.js.errors import KeyNotFoundError

from eventflow.jetstream import EVENTOS, connect, ensure_stream
from services.reservations.inventory import (
    EXPIRED_HOLD_GRACE_S,
    Confirmed,
    EventoSinInventario,
    Held,
    LimitExceeded,
    SaleRecord,
    SeatsTaken,
    SoldOut,
)
from services.reservations.inventory_store import JetStreamInventoryStore
from services.reservations.quota_store import BUCKET as QUOTAS
from services.reservations.quota_store import quota_key
from tests.reservations.inventory_helpers import Clock, create_event, hold


@pytest.fixture
async def js(settings):
    nc = await connect(settings.nats_url, "test-quota")
    js = nc.jetstream()
    await ensure_stream(js, EVENTOS)
    yield js
    await nc.drain()


@pytest.fixture
async def clock():
    return Clock()


@pytest.fixture
async def store(js, clock):
    store = await JetStreamInventoryStore.create(js, clock=clock)
    yield store
    await store.drain()


async def mine(store: JetStreamInventoryStore, evento_id: str, user: str) -> int:
    return (await store.availability(evento_id, user)).por_usuario or 0


async def test_the_limit_holds_across_holds_confirms_settles_releases_and_returns(js, store):
    evento_id = await create_event(js, 100)
    assert isinstance(await store.hold(hold(evento_id, "r1", "u", 3, limit=4)), Held)
    assert await store.hold(hold(evento_id, "r2", "u", 2, limit=4)) == LimitExceeded(4, 3)
    assert await store.confirm(evento_id, "r1") == Confirmed("r1", ())
    await store.settle(evento_id, "r1")
    assert await mine(store, evento_id, "u") == 3, "a settled sale still counts"
    assert await store.hold(hold(evento_id, "r2", "u", 2, limit=4)) == LimitExceeded(4, 3)
    assert isinstance(await store.hold(hold(evento_id, "r3", "u", 1, limit=4)), Held)
    assert await store.hold(hold(evento_id, "r4", "u", 1, limit=4)) == LimitExceeded(4, 4)
    assert isinstance(await store.hold(hold(evento_id, "o1", "other", 4, limit=4)), Held), "limits are per user"
    for _ in range(2):
        await store.release(evento_id, "r3", "u")
    assert await mine(store, evento_id, "u") == 3
    for _ in range(2):
        await store.return_sale(evento_id, SaleRecord("r1", "u", 3, ()))
    assert await mine(store, evento_id, "u") == 0
    assert isinstance(await store.hold(hold(evento_id, "r5", "u", 4, limit=4)), Held)
    avail = await store.availability(evento_id, "u")
    assert (avail.vendidas, avail.retenidas, avail.por_usuario) == (0, 8, 4)


@pytest.mark.parametrize("processes", [1, 2])
async def test_holds_racing_for_the_last_allowed_tickets_win_exactly_up_to_the_limit(js, settings, processes):
    evento_id = await create_event(js, 100)
    other_nc = await connect(settings.nats_url, "test-quota-2")
    try:
        stores = [await JetStreamInventoryStore.create(js)]
        if processes == 2:
            stores.append(await JetStreamInventoryStore.create(other_nc.jetstream()))
        await stores[0].hold(hold(evento_id, "first", "u", 2, limit=4))
        pair = await asyncio.gather(
            *(stores[k % processes].hold(hold(evento_id, None, "u", 2, limit=4)) for k in range(2))
        )
        assert sorted(type(o).__name__ for o in pair) == ["Held", "LimitExceeded"]
        assert next(o for o in pair if isinstance(o, LimitExceeded)) == LimitExceeded(4, 4)
        await stores[0].release(evento_id, "first", "u")
        many = await asyncio.gather(
            *(stores[k % processes].hold(hold(evento_id, None, "u", 1, limit=4)) for k in range(10))
        )
        assert sum(isinstance(o, Held) for o in many) == 2
        avail = await stores[-1].availability(evento_id, "u")
        assert (avail.retenidas, avail.por_usuario) == (4, 4)
    finally:
        await other_nc.drain()


async def test_a_refused_hold_gives_the_quota_back(js, store):
    evento_id = await create_event(js, 2, [{"nombre": "A", "asientos": 2}])
    await store.hold(hold(evento_id, "mine", "u", seats=["A-1"], limit=4))
    assert await store.hold(hold(evento_id, "big", "u", 3, limit=4)) == SoldOut(1)
    assert await store.hold(hold(evento_id, "seat", "u", seats=["A-1"], limit=4)) == SeatsTaken(("A-1",))
    assert await mine(store, evento_id, "u") == 1
    with pytest.raises(EventoSinInventario):
        await store.hold(hold(str(uuid.uuid4()), "ghost", "u", 1, limit=4))


async def test_an_expired_hold_keeps_its_quota_until_confirmed_or_released(js, store, clock):
    evento_id = await create_event(js, 5)
    await store.hold(hold(evento_id, "r1", "u", 4, ttl=10, limit=4))
    clock.now += 10
    assert await mine(store, evento_id, "u") == 4, "an expired hold still counts until it is confirmed or released"
    assert await store.confirm(evento_id, "r1") == Confirmed("r1", ())  # re-acquired: the quota was kept
    await store.release(evento_id, "r1", "u")  # a compensation before the pivot: un-sold, quota back
    assert await mine(store, evento_id, "u") == 0
    await store.hold(hold(evento_id, "r2", "u", 3, ttl=10, limit=4))
    clock.now += 10 + EXPIRED_HOLD_GRACE_S  # the inventory forgets r2; the saga does not
    assert (await store.availability(evento_id, "u")).por_usuario == 3
    await store.release(evento_id, "r2", "u")
    assert await mine(store, evento_id, "u") == 0


async def test_without_a_limit_no_quota_key_is_written(js, store):
    evento_id = await create_event(js, 5)
    await store.hold(hold(evento_id, "r1", "free-user", 2))
    await store.release(evento_id, "r1", "free-user")
    with pytest.raises(KeyNotFoundError):
        await (await js.key_value(QUOTAS)).get(quota_key(evento_id, "free-user"))


async def test_an_event_sells_out_with_every_user_exactly_at_the_limit(js, store):
    """400 users x 10 tickets = capacity; two concurrent buyers per user. Selling out needs every user at 10."""
    evento_id = await create_event(js, 4_000)
    per_user: dict[str, int] = defaultdict(int)

    async def buyer(user: str, seed: int) -> None:
        rng = random.Random(seed)
        while True:
            req = hold(evento_id, None, user, rng.randint(1, 4), limit=10)
            out = await store.hold(req)
            if isinstance(out, LimitExceeded) and out.actuales + 1 > out.limite:
                return
            if isinstance(out, SoldOut) and out.disponibles == 0:
                return
            if isinstance(out, Held):
                assert isinstance(await store.confirm(evento_id, req.reserva_id), Confirmed)
                await store.settle(evento_id, req.reserva_id)
                per_user[user] += req.cantidad

    await asyncio.gather(*(buyer(f"u{k // 2}", k) for k in range(800)))
    assert max(per_user.values()) <= 10
    assert sum(per_user.values()) == (await store.availability(evento_id)).vendidas == 4_000
    totals = await asyncio.gather(*(mine(store, evento_id, f"u{k}") for k in range(400)))
    assert totals == [10] * 400
