"""The KV inventory store on the real nats-server: no oversell under concurrency, CAS between processes,
expiry, lazy creation from EVENTOS, group commit actually batching, an op that fails failing alone, batches
split when too large, settle/return_sale, and v1 documents converted on load."""

from __future__ import annotations

import asyncio
import random
import uuid

import orjson
import pytest

from eventflow.jetstream import EVENTOS, connect, ensure_stream
from services.reservations.inventory import (
    Confirmed,
    EventoSinInventario,
    Held,
    HoldLost,
    InventarioNoDisponible,
    Inventory,
    InventoryStore,
    SaleRecord,
    SeatsTaken,
    SoldOut,
    VentaInconsistente,
)
from services.reservations.inventory_store import BUCKET, JetStreamInventoryStore
from tests.reservations.inventory_helpers import ANY_RID, ANY_TIME, Clock, create_event, hold


@pytest.fixture
async def js(settings):
    nc = await connect(settings.nats_url, "test-inventory")
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
    port: InventoryStore = store  # mypy checks the adapter against the port
    yield port
    await store.drain()


async def test_300_concurrent_buyers_for_100_tickets_get_exactly_100_holds(js, store):
    evento_id = await create_event(js, 100)
    outcomes = await asyncio.gather(*(store.hold(hold(evento_id)) for _ in range(300)))
    assert sum(isinstance(o, Held) for o in outcomes) == 100
    assert sum(isinstance(o, SoldOut) for o in outcomes) == 200
    avail = await store.availability(evento_id)
    assert (avail.capacidad, avail.retenidas, avail.disponibles) == (100, 100, 0)
    assert store.stats.batches < store.stats.ops, "group commit should put several ops in one write"
    assert not store._lanes, "workers must end when their queue is empty"


async def test_concurrent_holds_then_confirms_sell_exactly_the_capacity(js, store):
    evento_id = await create_event(js, 50)
    requests = [hold(evento_id, n=1 + i % 3) for i in range(60)]
    outcomes = await asyncio.gather(*(store.hold(r) for r in requests))
    held = [r for r, o in zip(requests, outcomes, strict=True) if isinstance(o, Held)]
    confirmed = await asyncio.gather(*(store.confirm(evento_id, r.reserva_id) for r in held))
    assert all(isinstance(c, Confirmed) for c in confirmed)
    avail = await store.availability(evento_id)
    assert avail.vendidas == sum(r.cantidad for r in held) <= 50
    assert avail.vendidas + avail.disponibles == 50


async def test_two_processes_racing_on_one_event_never_oversell(js, settings, clock):
    evento_id = await create_event(js, 100)
    nc2 = await connect(settings.nats_url, "test-inventory-2")
    try:
        # Small batches: many writes from each side, so they really interleave and hit CAS conflicts.
        store = await JetStreamInventoryStore.create(js, clock=clock, max_batch=4)
        other = await JetStreamInventoryStore.create(nc2.jetstream(), clock=clock, max_batch=4)
        mine = [store.hold(hold(evento_id)) for _ in range(150)]
        theirs = [other.hold(hold(evento_id)) for _ in range(150)]
        outcomes = await asyncio.gather(*(x for pair in zip(mine, theirs, strict=True) for x in pair))
        assert sum(isinstance(o, Held) for o in outcomes) == 100
        assert (await other.availability(evento_id)).disponibles == 0
        assert (await store.availability(evento_id)).retenidas == 100
    finally:
        await nc2.drain()


async def test_a_stale_cache_is_a_cas_conflict_that_reloads_and_reapplies(js, settings, store, clock):
    evento_id = await create_event(js, 2)
    assert isinstance(await store.hold(hold(evento_id, rid="a")), Held)  # `store` now caches revision N
    other = await JetStreamInventoryStore.create(js, clock=clock)
    assert isinstance(await other.hold(hold(evento_id, rid="b")), Held)  # writes revision N+1
    assert await store.hold(hold(evento_id, rid="c")) == SoldOut(0)
    assert store.stats.conflicts == 1
    assert await store.confirm(evento_id, "b") == Confirmed("b", ())


async def test_holds_expire_by_themselves(js, store, clock):
    evento_id = await create_event(js, 1)
    assert isinstance(await store.hold(hold(evento_id, ttl=30)), Held)
    assert isinstance(await store.hold(hold(evento_id)), SoldOut)
    clock.now += 30
    assert (await store.availability(evento_id)).disponibles == 1
    assert isinstance(await store.hold(hold(evento_id)), Held)


async def test_confirm_after_expiry_reacquires_if_free_and_is_hold_lost_if_taken(js, store, clock):
    evento_id = await create_event(js, 1)
    await store.hold(hold(evento_id, rid="late", ttl=5))
    clock.now += 10
    assert await store.confirm(evento_id, "late") == Confirmed("late", ())
    await store.release(evento_id, "late", "u")
    await store.hold(hold(evento_id, rid="lost", ttl=5))
    clock.now += 10
    assert isinstance(await store.hold(hold(evento_id, rid="thief")), Held)
    assert await store.confirm(evento_id, "lost") == HoldLost("lost")


async def test_release_un_sells_an_unsettled_confirmation_but_never_a_settled_sale(js, store):
    evento_id = await create_event(js, 6)
    for rid in ("r1", "r2"):
        await store.hold(hold(evento_id, rid=rid, user="u", n=3))
        await store.confirm(evento_id, rid)
    await store.settle(evento_id, "r2")
    assert (await store.availability(evento_id)).vendidas == 6
    for _ in range(2):
        await store.release(evento_id, "r1", "u")  # not recorded yet: the compensation un-sells it
        await store.release(evento_id, "r2", "u")  # recorded: only return_sale undoes it
    avail = await store.availability(evento_id)
    assert (avail.vendidas, avail.disponibles) == (3, 3)
    assert await store.confirm(evento_id, "r1") == HoldLost("r1")


async def test_return_sale_un_sells_a_settled_sale_once(js, store):
    seats = [{"nombre": "A", "asientos": 4}]
    evento_id = await create_event(js, 4, seats)
    assert isinstance(await store.hold(hold(evento_id, rid="r1", user="u", n=2)), Held)
    assert await store.confirm(evento_id, "r1") == Confirmed("r1", ("A-1", "A-2"))
    await store.settle(evento_id, "r1")
    sale = SaleRecord("r1", "u", 2, ("A-1", "A-2"))
    await asyncio.gather(store.return_sale(evento_id, sale), store.return_sale(evento_id, sale))
    await store.return_sale(evento_id, sale)
    assert (await store.availability(evento_id)).disponibles == 4
    stored = Inventory.from_json((await (await js.key_value(BUCKET)).get(evento_id)).value)
    assert stored.devueltas == {"r1": (2, None)}
    await store.settle(evento_id, "r1")
    assert await store.hold(hold(evento_id, n=4)) == Held(ANY_RID, ANY_TIME, ("A-1", "A-2", "A-3", "A-4"))


async def test_the_same_reserva_id_held_concurrently_takes_tickets_and_quota_once(js, store):
    evento_id = await create_event(js, 10)
    request = hold(evento_id, n=4, limit=8)
    outcomes = await asyncio.gather(*(store.hold(request) for _ in range(5)))
    assert len(set(outcomes)) == 1 and isinstance(outcomes[0], Held)
    avail = await store.availability(evento_id, request.usuario_id)
    assert (avail.retenidas, avail.por_usuario) == (4, 4)


async def test_inventory_is_created_lazily_from_the_evento_creado_with_its_seats(js, store):
    evento_id = await create_event(js, 4, [{"nombre": "A", "asientos": 2}, {"nombre": "B", "asientos": 2}])
    assert (await store.availability(evento_id)).disponibles == 4  # read before any write
    kv = await js.key_value(BUCKET)
    with pytest.raises(Exception, match=r"(?i)not ?found"):
        await kv.get(evento_id)
    pair = ("A-2", "B-1")
    outcomes = await asyncio.gather(
        store.hold(hold(evento_id, n=2, seats=pair)), store.hold(hold(evento_id, n=2, seats=("B-1", "B-2")))
    )
    assert sorted(type(o).__name__ for o in outcomes) == ["Held", "SeatsTaken"]
    assert next(o for o in outcomes if isinstance(o, SeatsTaken)).asientos == ("B-1",)
    stored = Inventory.from_json((await kv.get(evento_id)).value)
    assert stored.capacidad == 4 and stored.secciones == {"A": 2, "B": 2}
    assert [stored.names(h.asientos) for h in stored.retenidas.values()] == [pair]


async def test_an_event_that_does_not_exist_has_no_inventory(store):
    missing = str(uuid.uuid4())
    with pytest.raises(EventoSinInventario):
        await store.hold(hold(missing))
    with pytest.raises(EventoSinInventario):
        await store.availability(missing)
    with pytest.raises(EventoSinInventario):
        await store.confirm("not a valid key!", "r1")


async def test_batches_are_bounded(js, clock):
    store = await JetStreamInventoryStore.create(js, clock=clock, max_batch=8)
    evento_id = await create_event(js, 1000)
    await asyncio.gather(*(store.hold(hold(evento_id)) for _ in range(60)))
    assert store.stats.ops == 60 and store.stats.largest_batch <= 8 and store.stats.batches >= 8


@pytest.mark.slow
async def test_a_nats_restart_mid_traffic_loses_and_duplicates_nothing(js, store, servers):
    """Writes in flight during the restart time out ambiguously; the batch is retried by time and replays."""
    evento_id = await create_event(js, 10_000)
    outcomes: list[object] = []
    stop = asyncio.Event()

    async def buyer() -> None:
        while not stop.is_set():
            outcomes.append(await store.hold(hold(evento_id)))

    async def at_least(n: int) -> None:
        deadline = asyncio.get_running_loop().time() + 60
        while len(outcomes) < n:
            assert asyncio.get_running_loop().time() < deadline, "the buyers made no progress"
            await asyncio.sleep(0.01)

    buyers = [asyncio.create_task(buyer()) for _ in range(20)]
    await at_least(40)  # traffic is flowing: 20 buyers each have a hold in flight when the server goes
    await asyncio.to_thread(servers.restart_nats)
    await at_least(len(outcomes) + 40)  # ... and it flows again after the restart
    stop.set()
    await asyncio.gather(*buyers)
    assert outcomes and all(isinstance(o, Held) for o in outcomes)
    assert (await store.availability(evento_id)).retenidas == len(outcomes)


async def test_a_batch_too_large_for_one_write_is_split_so_only_the_op_that_cannot_fit_fails(js, store):
    """Three holds whose buyer ids are each 40 % of the largest document: two fit, the third cannot."""
    evento_id = await create_event(js, 10)
    huge = int(store.max_document_bytes * 0.4)
    requests = [hold(evento_id, user=str(k) * huge) for k in range(3)]
    outcomes = await asyncio.gather(*(store.hold(r) for r in requests), return_exceptions=True)
    assert store.stats.splits >= 1 and store.stats.largest_batch <= 2, "one batch of three, split"
    assert sum(isinstance(o, Held) for o in outcomes) == 2
    refused = [o for o in outcomes if not isinstance(o, Held)]
    assert len(refused) == 1 and isinstance(refused[0], InventarioNoDisponible) and "too large" in str(refused[0])
    assert (await store.availability(evento_id)).retenidas == 2
    assert store.stats.transient_errors == 0


async def test_an_op_that_raises_fails_alone_and_the_rest_of_its_batch_is_written(js, store):
    evento_id = await create_event(js, 100)
    requests = [hold(evento_id, n=2) for _ in range(20)]
    bad = SaleRecord("never-sold", "u", 50, ())  # more than is sold: refused, nothing changes
    outcomes = await asyncio.gather(
        *(store.hold(r) for r in requests[:10]),
        store.return_sale(evento_id, bad),
        *(store.hold(r) for r in requests[10:]),
        return_exceptions=True,
    )
    assert store.stats.largest_batch == 21, "all 21 ops in one batch"
    assert isinstance(outcomes[10], VentaInconsistente) and store.stats.failed_ops == 1
    assert all(isinstance(o, Held) for o in outcomes[:10] + outcomes[11:])
    avail = await store.availability(evento_id)
    assert (avail.retenidas, avail.vendidas) == (40, 0)
    confirmed = await asyncio.gather(*(store.confirm(evento_id, r.reserva_id) for r in requests))
    assert all(isinstance(c, Confirmed) for c in confirmed)
    assert (await store.availability(evento_id)).vendidas == 40


async def test_an_op_that_cannot_be_serialized_fails_alone(js, store):
    """A buyer id with a lone surrogate passes every check but is not valid JSON text: only its hold fails."""
    evento_id = await create_event(js, 100)
    requests = [hold(evento_id, user="\ud800" if k == 7 else None) for k in range(16)]
    outcomes = await asyncio.gather(*(store.hold(r) for r in requests), return_exceptions=True)
    assert isinstance(outcomes[7], orjson.JSONEncodeError) and store.stats.splits >= 1
    assert all(isinstance(o, Held) for k, o in enumerate(outcomes) if k != 7)
    assert (await store.availability(evento_id)).retenidas == 15


async def test_a_version_1_document_is_converted_on_load_and_stays_small(js, store):
    """A v1 document kept every sale (85 B each): the first write after the upgrade keeps only counts and bits."""
    evento_id = await create_event(js, 40_000, [{"nombre": "A", "asientos": 40_000}])
    sales = {str(uuid.uuid4()): [str(uuid.uuid4()), 1, [f"A-{n}"]] for n in range(1, 30_001)}
    v1 = {"capacidad": 40_000, "secciones": {"A": 40_000}, "vendidas": sales, "retenidas": {}, "caducadas": {}}
    kv = await js.key_value(BUCKET)
    await kv.put(evento_id, orjson.dumps(v1))
    assert (await store.availability(evento_id)).vendidas == 30_000
    assert await store.hold(hold(evento_id, seats=["A-30000"])) == SeatsTaken(("A-30000",))
    assert await store.hold(hold(evento_id, rid="next", n=2)) == Held("next", ANY_TIME, ("A-30001", "A-30002"))
    assert len((await kv.get(evento_id)).value) < 8_000


@pytest.mark.parametrize("started", [False, True])
async def test_a_cancelled_worker_fails_its_ops_instead_of_leaving_callers_waiting(js, store, started):
    evento_id = await create_event(js, 10)
    calls = [asyncio.ensure_future(store.hold(hold(evento_id))) for _ in range(5)]
    await asyncio.sleep(0)  # every call is queued; the worker is created but has not run yet
    worker = store._lanes[evento_id].worker
    if started:
        await asyncio.sleep(0)  # now it is inside its first write
        assert store._lanes[evento_id].batch
    worker.cancel()
    results = await asyncio.wait_for(asyncio.gather(*calls, return_exceptions=True), 10)
    assert all(isinstance(r, InventarioNoDisponible) for r in results)
    assert not store._lanes
    assert isinstance(await store.hold(hold(evento_id)), Held)  # a new worker serves the event


async def test_concurrent_multi_seat_holds_never_share_a_seat_and_are_all_or_nothing(js, store):
    seats = [f"{s}-{n}" for s in "AB" for n in range(1, 11)]
    evento_id = await create_event(js, 20, [{"nombre": "A", "asientos": 10}, {"nombre": "B", "asientos": 10}])
    rng = random.Random(3)
    requests = [hold(evento_id, n=k, seats=rng.sample(seats, k)) for k in [rng.randint(1, 4) for _ in range(60)]]
    outcomes = await asyncio.gather(*(store.hold(r) for r in requests))
    held = [o.asientos for o in outcomes if isinstance(o, Held)]
    taken = [a for asientos in held for a in asientos]
    assert len(taken) == len(set(taken)) and held
    assert all(set(o.asientos) <= set(taken) for o in outcomes if isinstance(o, SeatsTaken))
    stored = Inventory.from_json((await (await js.key_value(BUCKET)).get(evento_id)).value)
    assert sorted(a for h in stored.retenidas.values() for a in stored.names(h.asientos)) == sorted(taken)


async def test_a_recent_availability_answers_from_this_process_commits_and_matches_the_leader(
    js, settings, store, clock
):
    evento_id = await create_event(js, 10)
    buyer = str(uuid.uuid4())
    await asyncio.gather(
        *(store.hold(hold(evento_id, user=buyer, limit=5)) for _ in range(3)), store.hold(hold(evento_id))
    )
    recent = await store.availability(evento_id, buyer, reciente=True)
    assert recent == await store.availability(evento_id, buyer)
    assert (recent.retenidas, recent.disponibles, recent.por_usuario) == (4, 6, 3)

    # Another process writes: this one's recent answer lags (a pre-check, never the authority), the strong
    # read does not, and a process that never wrote the event reads the leader even when asked for recent.
    nc = await connect(settings.nats_url, "other")
    other = await JetStreamInventoryStore.create(nc.jetstream(), clock=clock)
    try:
        await other.hold(hold(evento_id, n=2))
        assert (await store.availability(evento_id, reciente=True)).disponibles == 6
        assert (await store.availability(evento_id)).disponibles == 4
        fresh = await JetStreamInventoryStore.create(js, clock=clock)
        assert (await fresh.availability(evento_id, reciente=True)).disponibles == 4
    finally:
        await nc.drain()
