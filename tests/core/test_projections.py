from __future__ import annotations

import asyncio
import uuid

import nats.errors
import orjson
import redis.asyncio as aioredis

from eventflow.eventstore import EventStore, NewEvent
from eventflow.projections import POISON_ATTEMPTS, ProjectionRunner
from tests.core.counting import Counter, append_many


async def test_applies_every_event_once_in_order_and_wakes_waiters(js, redis, stream):
    projection = Counter(f"c{uuid.uuid4().hex[:6]}")
    runner = ProjectionRunner(js, redis, stream, projection)
    runner.start()
    try:
        head = await append_many(js, stream, 30)
        assert await runner.wait_for(head, timeout=10)
        assert await redis.hgetall(f"{projection.name}:counts") == {"a0": "10", "a1": "10", "a2": "10"}
        assert [int(s) for s in await redis.lrange(f"{projection.name}:order", 0, -1)] == list(range(1, 31))
    finally:
        await runner.stop()


async def test_two_replicas_of_a_projection_apply_each_event_exactly_once(js, redis, stream):
    projection = Counter(f"c{uuid.uuid4().hex[:6]}")
    runners = [ProjectionRunner(js, redis, stream, projection) for _ in range(2)]
    for runner in runners:
        runner.start()
    try:
        head = await append_many(js, stream, 60)
        for runner in runners:
            assert await runner.wait_for(head, timeout=10)
        assert await redis.hgetall(f"{projection.name}:counts") == {"a0": "20", "a1": "20", "a2": "20"}
        assert await redis.llen(f"{projection.name}:order") == 60
    finally:
        for runner in runners:
            await runner.stop()


async def test_restart_resumes_from_the_checkpoint_without_reapplying(js, redis, stream):
    projection = Counter(f"c{uuid.uuid4().hex[:6]}")
    first = ProjectionRunner(js, redis, stream, projection)
    await append_many(js, stream, 9)
    await first.catch_up()
    await append_many(js, stream, 6)
    second = ProjectionRunner(js, redis, stream, projection)
    head = await second.catch_up()
    assert head == 15
    assert await redis.llen(f"{projection.name}:order") == 15


async def test_a_wiped_read_model_is_rebuilt_identically_by_the_live_runner(js, redis, stream):
    projection = Counter(f"c{uuid.uuid4().hex[:6]}")
    runner = ProjectionRunner(js, redis, stream, projection)
    runner.start()
    try:
        head = await append_many(js, stream, 12)
        assert await runner.wait_for(head, 10)
        before = await redis.hgetall(f"{projection.name}:counts")
        await redis.delete(f"{projection.name}:counts", f"{projection.name}:order", runner.checkpoint_key)
        for _ in range(100):  # the watchdog notices within ~2 s, then replays the stream
            if await redis.get(runner.checkpoint_key) == str(head):
                break
            await asyncio.sleep(0.1)
        assert await redis.hgetall(f"{projection.name}:counts") == before
        assert await redis.llen(f"{projection.name}:order") == 12
    finally:
        await runner.stop()


async def test_wait_for_gives_up_after_its_timeout(js, redis, stream):
    runner = ProjectionRunner(js, redis, stream, Counter(f"c{uuid.uuid4().hex[:6]}"))
    assert await runner.wait_for(10_000, timeout=0.1) is False


class FailsOnPoison(Counter):
    async def apply(self, event, redis, tx):
        if event.type == "Poison":
            raise KeyError("reserva_id")
        await super().apply(event, redis, tx)


async def test_a_poison_event_is_parked_with_its_reason_and_later_events_still_apply(js, redis, stream):
    projection = FailsOnPoison(f"c{uuid.uuid4().hex[:6]}")
    runner = ProjectionRunner(js, redis, stream, projection)
    runner.start()
    try:
        store = EventStore(js, stream)
        await store.append("a0", [NewEvent("Tick", {})], None)
        poison = await store.append("a1", [NewEvent("Poison", {})], None)
        head = await store.append("a0", [NewEvent("Tick", {})], None)
        assert await runner.wait_for(head, timeout=10)
        assert await redis.hgetall(f"{projection.name}:counts") == {"a0": "2"}
        parked = [orjson.loads(p) for p in await redis.lrange(runner.parked_key, 0, -1)]
        assert [p["seq"] for p in parked] == [poison] and "reserva_id" in parked[0]["error"]
        assert runner.parked == 1
    finally:
        await runner.stop()


async def test_a_redis_outage_is_retried_not_parked(js, redis, stream):
    """While Redis does not answer, the event waits (never parked); once it answers, the event applies."""
    projection = Counter(f"c{uuid.uuid4().hex[:6]}")
    unreachable = aioredis.Redis.from_url("redis://127.0.0.1:1/0", decode_responses=True)
    runner = ProjectionRunner(js, unreachable, stream, projection)
    try:
        await EventStore(js, stream).append("a0", [NewEvent("Tick", {})], None)
        runner.start()
        await asyncio.sleep(1.5)
        assert runner.parked == 0 and runner.position == 0 and runner.stalled
        runner.redis = redis  # Redis is back
        assert await runner.wait_for(1, timeout=10)
        assert await redis.hgetall(f"{projection.name}:counts") == {"a0": "1"}
        assert runner.parked == 0
    finally:
        await runner.stop()
        await unreachable.aclose()


class FailsOnInfrastructureFirst(Counter):
    """Its first applies fail as a NATS or network timeout would (a read the projection makes, on a loaded box)."""

    def __init__(self, name: str, failures: list[Exception]) -> None:
        super().__init__(name)
        self.failures = failures

    def at(self, generation):
        return self

    async def apply(self, event, redis, tx):
        if self.failures:
            raise self.failures.pop(0)
        await super().apply(event, redis, tx)


async def test_a_failing_nats_or_network_is_retried_not_parked(js, redis, stream):
    """More failures than POISON_ATTEMPTS, none the event's fault: it waits and applies, never parked (a parked
    event is skipped for good, and the read model would miss it until a rebuild)."""
    failures: list[Exception] = [
        nats.errors.TimeoutError(),
        OSError("reset"),
        TimeoutError(),
        nats.errors.NoServersError(),
    ]
    assert len(failures) > POISON_ATTEMPTS
    projection = FailsOnInfrastructureFirst(f"c{uuid.uuid4().hex[:6]}", failures)
    runner = ProjectionRunner(js, redis, stream, projection)
    runner.start()
    try:
        head = await EventStore(js, stream).append("a0", [NewEvent("Tick", {})], None)
        assert await runner.wait_for(head, timeout=60)
        assert not failures and runner.parked == 0
        assert await redis.hgetall(f"{projection.prefix}:counts") == {"a0": "1"}
    finally:
        await runner.stop()


async def test_a_stopped_runner_leaves_no_task_behind(js, redis, stream):
    """Nothing of the runner (its subscription's pending read, its watchdog) outlives stop()."""
    before = asyncio.all_tasks()
    runner = ProjectionRunner(js, redis, stream, Counter(f"c{uuid.uuid4().hex[:6]}"))
    runner.start()
    head = await append_many(js, stream, 3)
    assert await runner.wait_for(head, timeout=10)
    await runner.stop()
    await asyncio.sleep(0)  # let done callbacks run
    assert {t for t in asyncio.all_tasks() - before if not t.done()} == set()
