"""The KV inventory store on the real nats-server: no oversell under concurrency, CAS between processes,
expiry, lazy creation from EVENTOS, and group commit actually batching."""

from __future__ import annotations

import asyncio
import random
import uuid

import pytest

from eventflow.contracts import EVENTO_CREADO
from eventflow.eventstore import EventStore, NewEvent
from eventflow.jetstream import EVENTOS, connect, ensure_stream
from services.reservations.inventory import (
    Confirmed,
    EventoSinInventario,
    Held,
    HoldLost,
    HoldRequest,
    InventarioNoDisponible,
    Inventory,
    InventoryStore,
    Sale,
    SeatsTaken,
    SoldOut,
)
from services.reservations.inventory_store import BUCKET, JetStreamInventoryStore


class Clock:
    def __init__(self) -> None:
        self.now = 1_000_000.0

    def __call__(self) -> float:
        return self.now


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


async def create_event(js, aforo: int, secciones: list[dict] | None = None) -> str:
    evento_id = str(uuid.uuid4())
    data = {
        "nombre": "Concierto",
        "descripcion": "",
        "fecha": "2030-01-01T20:00:00+00:00",
        "lugar": "Madrid",
        "aforo_total": aforo,
        "precio_centimos": 2500,
        "categoria": "musica",
        "secciones": secciones,
        "venta_desde": None,
    }
    await EventStore(js, EVENTOS).append(evento_id, [NewEvent(EVENTO_CREADO, data)], expected_version=0)
    return evento_id


def hold(evento_id: str, rid: str | None = None, user: str | None = None, n: int = 1, seats=(), ttl=60.0, limit=None):
    rid = rid or str(uuid.uuid4())
    return HoldRequest(rid, evento_id, user or str(uuid.uuid4()), n, tuple(seats), ttl, limit)


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
    await store.release(evento_id, "late")
    await store.hold(hold(evento_id, rid="lost", ttl=5))
    clock.now += 10
    assert isinstance(await store.hold(hold(evento_id, rid="thief")), Held)
    assert await store.confirm(evento_id, "lost") == HoldLost("lost")


async def test_release_of_a_sold_reservation_gives_the_tickets_back(js, store):
    evento_id = await create_event(js, 3)
    await store.hold(hold(evento_id, rid="r1", n=3))
    await store.confirm(evento_id, "r1")
    assert (await store.availability(evento_id)).vendidas == 3
    await store.release(evento_id, "r1")
    await store.release(evento_id, "r1")
    avail = await store.availability(evento_id)
    assert (avail.vendidas, avail.disponibles) == (0, 3)


async def test_the_same_reserva_id_held_concurrently_takes_tickets_once(js, store):
    evento_id = await create_event(js, 10)
    request = hold(evento_id, n=4)
    outcomes = await asyncio.gather(*(store.hold(request) for _ in range(5)))
    assert len(set(outcomes)) == 1 and isinstance(outcomes[0], Held)
    assert (await store.availability(evento_id, request.usuario_id)).por_usuario == 4


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
    assert [h.asientos for h in stored.retenidas.values()] == [pair]


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

    buyers = [asyncio.create_task(buyer()) for _ in range(20)]
    await asyncio.sleep(0.3)
    await asyncio.to_thread(servers.restart_nats)
    await asyncio.sleep(0.5)
    stop.set()
    await asyncio.gather(*buyers)
    assert outcomes and all(isinstance(o, Held) for o in outcomes)
    assert (await store.availability(evento_id)).retenidas == len(outcomes)


async def test_an_inventory_that_outgrows_max_payload_fails_fast_and_clearly(js, store):
    evento_id = await create_event(js, 10)
    kv = await js.key_value(BUCKET)
    base = Inventory(10, vendidas={"r0": Sale("", 1, ())})
    filler = js._nc.max_payload - 10 - len(base.to_json())
    await kv.put(evento_id, Inventory(10, vendidas={"r0": Sale("u" * filler, 1, ())}).to_json())
    with pytest.raises(InventarioNoDisponible, match="too large"):
        await store.hold(hold(evento_id))
    assert store.stats.transient_errors == 0


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
    assert sorted(a for h in stored.retenidas.values() for a in h.asientos) == sorted(taken)


async def test_a_recent_availability_answers_from_this_process_commits_and_matches_the_leader(
    js, settings, store, clock
):
    evento_id = await create_event(js, 10)
    buyer = str(uuid.uuid4())
    await asyncio.gather(*(store.hold(hold(evento_id, user=buyer)) for _ in range(3)), store.hold(hold(evento_id)))
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
