"""Stadium-size events sell out completely under concurrent load, on the real store (issue #6, defect 3).

Before, one document per event kept every sale (~85 B each) and stopped being writable near the server's
max_payload (~49,000 reservations): every hold failed from then on (the GA test below fails so on that code).
Now the document keeps counts, a bitmap of sold seats and the work in flight, so its size does not depend on how
much is sold. Every buyer runs the saga's inventory steps (hold -> confirm -> settle) until the event is sold out.
"""

from __future__ import annotations

import asyncio
import random
import uuid
from collections import Counter

import pytest

from eventflow.jetstream import EVENTOS, connect, ensure_stream
from services.reservations.inventory import Confirmed, Held, HoldRequest, SoldOut
from services.reservations.inventory_store import JetStreamInventoryStore
from tests.reservations.inventory_helpers import create_event

BUYERS = 300


@pytest.fixture
async def js(settings):
    nc = await connect(settings.nats_url, "test-stadium")
    js = nc.jetstream(timeout=30)
    await ensure_stream(js, EVENTOS)
    yield js
    await nc.drain()


@pytest.fixture
async def store(js):
    store = await JetStreamInventoryStore.create(js)
    yield store
    await store.drain()


async def buy(store: JetStreamInventoryStore, evento_id: str, user: str, n: int, seats=()) -> object:
    """The saga's inventory steps for one reservation: hold, confirm (payment is not the point here), settle."""
    rid = str(uuid.uuid4())
    held = await store.hold(HoldRequest(rid, evento_id, user, n, tuple(seats), 600.0, None))
    if not isinstance(held, Held):
        return held
    confirmed = await store.confirm(evento_id, rid)
    assert isinstance(confirmed, Confirmed), confirmed
    await store.settle(evento_id, rid)
    return confirmed


async def test_a_100000_ticket_general_admission_event_sells_out_exactly(js, store):
    evento_id = await create_event(js, 100_000)
    bought: list[int] = []
    sizes: list[int] = []

    async def buyer(k: int) -> None:
        rng, left, usuario = random.Random(k), 2, str(uuid.uuid4())
        while True:
            n = min(rng.randint(1, 2), left)  # most orders are of 1 or 2 tickets: ~67,000 reservations
            out = await buy(store, evento_id, usuario, n)
            if isinstance(out, SoldOut):
                if out.disponibles == 0:
                    return  # nothing releases in this test: what is held now will be sold
                left = out.disponibles
            else:
                bought.append(n)
                if k == 0:  # one buyer samples the stored document as it goes
                    sizes.append(await store.document_size(evento_id))

    await asyncio.gather(*(buyer(k) for k in range(BUYERS)))
    avail = await store.availability(evento_id)
    assert sum(bought) == avail.vendidas == 100_000
    assert (avail.retenidas, avail.disponibles) == (0, 0)
    assert isinstance(await buy(store, evento_id, "late", 1), SoldOut)
    # Counters and nothing else once every sale is settled; mid-run only the work in flight (<= 2 per buyer).
    assert await store.document_size(evento_id) < 1_000
    assert sizes and max(sizes) < BUYERS * 2 * 150
    assert store.stats.failed_ops == 0


async def test_a_20000_seat_event_sells_every_seat_exactly_once(js, store):
    sections = [{"nombre": f"S{k:02}", "asientos": 1_000} for k in range(20)]
    evento_id = await create_event(js, 20_000, sections)
    every_seat = {f"{s['nombre']}-{n}" for s in sections for n in range(1, 1_001)}
    confirmed: list[str] = []
    kinds: Counter[str] = Counter()

    async def buyer(k: int) -> None:
        rng, left, usuario = random.Random(k), 10, str(uuid.uuid4())
        while True:
            if rng.random() < 0.5:  # picks seats: a few adjacent ones somewhere
                section, first, n = rng.choice(sections)["nombre"], rng.randint(1, 997), rng.randint(1, 4)
                picked = [f"{section}-{first + i}" for i in range(n)]
                kind, out = "picked", await buy(store, evento_id, usuario, n, picked)
            else:  # only a quantity: the inventory assigns the first free seats
                kind, out = "assigned", await buy(store, evento_id, usuario, min(rng.randint(1, 10), left))
                if isinstance(out, SoldOut):
                    if out.disponibles == 0:
                        return
                    left = out.disponibles
            if isinstance(out, Confirmed):
                confirmed.extend(out.asientos)
            kinds[kind if isinstance(out, Confirmed) else type(out).__name__] += 1

    await asyncio.gather(*(buyer(k) for k in range(BUYERS)))
    assert len(confirmed) == len(set(confirmed)) == 20_000, "a seat was sold twice, or one is missing"
    assert set(confirmed) == every_seat
    avail = await store.availability(evento_id)
    assert (avail.vendidas, avail.retenidas, avail.disponibles) == (20_000, 0, 0)
    assert kinds["picked"] and kinds["assigned"] and kinds["SeatsTaken"], kinds
    assert await store.document_size(evento_id) < 4_000  # 2.5 KB of seat bits (base64) and the counters
