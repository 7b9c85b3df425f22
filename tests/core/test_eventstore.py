from __future__ import annotations

import asyncio
import uuid

import pytest

from eventflow.eventstore import ConcurrencyConflict, EventStore, NewEvent
from eventflow.jetstream import StreamSpec, connect, ensure_stream
from tests.utils.jetstream_spy import spying_on

SPEC = StreamSpec("TESTEVENTS", "testevents")


@pytest.fixture
async def store(settings):
    nc = await connect(settings.nats_url, "test")
    js = nc.jetstream()
    await ensure_stream(js, SPEC)
    yield EventStore(js, SPEC)
    await nc.drain()


async def test_append_then_load_returns_events_in_order_with_version(store):
    agg = uuid.uuid4().hex
    v1 = await store.append(agg, [NewEvent("Creado", {"n": 1})], expected_version=0)
    v2 = await store.append(agg, [NewEvent("Cambiado", {"n": 2}), NewEvent("Cambiado", {"n": 3})], v1)
    events, version = await store.load(agg)
    assert [e.data["n"] for e in events] == [1, 2, 3]
    assert [e.type for e in events] == ["Creado", "Cambiado", "Cambiado"]
    assert version == v2 and all(e.aggregate_id == agg for e in events)


async def test_stale_expected_version_is_a_conflict_and_stores_nothing(store):
    agg = uuid.uuid4().hex
    v1 = await store.append(agg, [NewEvent("Creado", {})], 0)
    await store.append(agg, [NewEvent("Cambiado", {})], v1)
    with pytest.raises(ConcurrencyConflict):
        await store.append(agg, [NewEvent("Perdido", {})], v1)
    events, _ = await store.load(agg)
    assert [e.type for e in events] == ["Creado", "Cambiado"]


async def test_creating_the_same_aggregate_twice_concurrently_lets_exactly_one_win(store):
    agg = uuid.uuid4().hex
    results = await asyncio.gather(
        *(store.append(agg, [NewEvent("Creado", {"i": i})], 0) for i in range(10)), return_exceptions=True
    )
    assert sum(isinstance(r, int) for r in results) == 1
    assert sum(isinstance(r, ConcurrencyConflict) for r in results) == 9


async def test_retrying_an_append_with_the_same_event_id_stores_it_once(store):
    agg = uuid.uuid4().hex
    event = NewEvent("Creado", {"x": 1})
    first = await store.append(agg, [event], None)
    again = await store.append(agg, [event], None)
    assert again == first
    events, _ = await store.load(agg)
    assert len(events) == 1


async def test_loading_an_unknown_aggregate_gives_nothing_and_version_zero(store):
    assert await store.load(uuid.uuid4().hex) == ([], 0)


async def test_load_reads_the_stream_leader_unless_told_any_replica_may_answer(settings):
    nc = await connect(settings.nats_url, "test-reads")
    store = EventStore(nc.jetstream(), SPEC)
    agg = uuid.uuid4().hex
    await store.append(agg, [NewEvent("Creado", {"n": 1}), NewEvent("Cambiado", {"n": 2})], 0)
    async with spying_on(settings.nats_url, SPEC.name) as spy:
        from_leader = await store.load(agg)
        leader, direct = await spy.reads_of(SPEC.subject(agg), sent_over=nc)
        assert (len(leader), direct) == (3, [])  # two events, then "no next one"
        assert await store.load(agg, direct=True) == from_leader
        leader, direct = await spy.reads_of(SPEC.subject(agg), sent_over=nc)
        assert (len(leader), len(direct)) == (3, 3)
    await nc.drain()
