"""Generations of a read model family: the switch, the fence on live runners, one rebuild at a time, wipes.

Each test has its own family (a Counter named at random) and its own stream, so they share the session's
Redis without seeing each other; the wipe test empties a database of its own.
"""

from __future__ import annotations

import asyncio
import uuid

import pytest
import redis.asyncio as aioredis

from eventflow.generations import (
    Generation,
    RebuildInProgress,
    RebuildLock,
    allocate,
    checkpoint_key,
    counter_key,
    lock_key,
    pointer_key,
    switch,
)
from eventflow.projections import ProjectionRunner
from eventflow.rebuild import rebuild
from tests.core.counting import Counter, append_many
from tests.utils.rebuilding import Gate, GatedProjection, fresh_db


def family() -> str:
    return f"f{uuid.uuid4().hex[:8]}"


async def counted(redis, projection: Counter) -> tuple[int, list[int]]:
    """(events counted, their sequences in the order applied) in the projection's generation."""
    counts = await redis.hgetall(f"{projection.prefix}:counts")
    order = [int(seq) for seq in await redis.lrange(f"{projection.prefix}:order", 0, -1)]
    return sum(int(n) for n in counts.values()), order


async def test_a_commit_in_flight_at_the_switch_lands_only_in_the_new_generation_and_its_writer_sees_it(
    js, redis, stream
):
    """The live runner stops inside apply of event 6 (WATCH armed on generation 0), the family switches to
    generation 1, then the runner goes on: nothing lands in the frozen generation 0, and a read-your-writes
    wait for event 6 ends once generation 1, the one reads now use, has it."""
    name, gate = family(), Gate()
    generation = Generation(redis, name)
    await generation.start()
    live = ProjectionRunner(js, redis, stream, GatedProjection(Counter(name), lambda e: e.seq == 6, gate), generation)
    live.start()
    lock = RebuildLock(redis, name)
    try:
        assert await live.wait_for(await append_many(js, stream, 5), 10)
        await append_many(js, stream, 1)
        await gate.reached.wait()
        read_your_write = asyncio.create_task(live.wait_for(6, 30))

        await lock.acquire()
        builder = ProjectionRunner(js, redis, stream, Counter(name).at(1))
        assert await builder.catch_up() == 6
        assert await switch(redis, lock, 0, 1, [(live.checkpoint_key, builder.checkpoint_key)]) == "switched"
        gate.release()

        assert await read_your_write
        assert generation.current == 1 and live.checkpoint_key == checkpoint_key(name, stream.name, 1)
        assert await counted(redis, Counter(name)) == (5, [1, 2, 3, 4, 5])
        assert await counted(redis, Counter(name, 1)) == (6, [1, 2, 3, 4, 5, 6])
        head = await append_many(js, stream, 2)
        assert await live.wait_for(head, 10)
        assert await counted(redis, Counter(name, 1)) == (8, list(range(1, 9)))
        assert await counted(redis, Counter(name)) == (5, [1, 2, 3, 4, 5])
    finally:
        gate.release()
        await live.stop()
        await generation.stop()
        await lock.release()


async def test_the_switch_needs_the_lock_the_expected_pointer_and_no_rebuilt_model_behind(redis):
    name = family()
    live, rebuilt = checkpoint_key("p", name, 0), checkpoint_key("p", name, 1)
    first, second = RebuildLock(redis, name), RebuildLock(redis, name)
    await first.acquire()
    try:
        await redis.mset({live: 5, rebuilt: 3})
        assert await switch(redis, first, 0, 1, [(live, rebuilt)]) == "behind"
        await redis.set(rebuilt, 5)
        await redis.delete(lock_key(name))  # the first rebuild's lock expired and another one took it
        await second.acquire()
        assert await switch(redis, first, 0, 1, [(live, rebuilt)]) == "lost-lock"
        assert await redis.get(pointer_key(name)) is None
        assert await switch(redis, second, 0, 1, [(live, rebuilt)]) == "switched"
        assert await redis.get(pointer_key(name)) == "1"
        assert await switch(redis, second, 0, 2, [(live, rebuilt)]) == "moved"
    finally:
        await first.release()  # not its lock any more: leaves the second's alone
        assert await redis.get(lock_key(name)) == second.token
        await second.release()


async def test_a_second_rebuild_of_a_family_is_refused_before_it_touches_anything(settings, js, redis, stream):
    name, gate = family(), Gate()
    await append_many(js, stream, 5)
    gated = GatedProjection(Counter(name), lambda e: e.seq == 3, gate)
    first = asyncio.create_task(rebuild(settings, [(stream, gated)], grace_s=0))
    try:
        await gate.reached.wait()
        with pytest.raises(RebuildInProgress):
            await rebuild(settings, [(stream, Counter(name))], grace_s=0)
        assert await redis.get(counter_key(name)) == "1"  # no generation handed out to the second
    finally:
        gate.release()
    [result] = await first
    assert (result.generation, result.events) == (1, 5)
    assert await redis.get(pointer_key(name)) == "1" and await redis.exists(lock_key(name)) == 0
    assert await counted(redis, Counter(name, 1)) == (5, [1, 2, 3, 4, 5])


async def test_a_rebuild_removes_what_a_rebuild_that_died_left_behind(settings, js, redis, stream):
    name = family()
    await append_many(js, stream, 3)
    died = Counter(name, await allocate(redis, name))  # it got generation 1, built part of it, and died
    await ProjectionRunner(js, redis, stream, died).catch_up()
    [result] = await rebuild(settings, [(stream, Counter(name))], grace_s=0)
    assert result.generation == 2 and result.removed == 3  # its counts, its order, its checkpoint
    assert [key async for key in redis.scan_iter(match=f"{name}:g1:*")] == []
    assert await redis.exists(checkpoint_key(name, stream.name, 1)) == 0
    assert await counted(redis, Counter(name, 2)) == (3, [1, 2, 3])


async def test_a_wiped_redis_falls_back_to_the_default_generation_and_replays_into_it(servers, js, stream):
    name = family()
    settings = await fresh_db(servers, 9)
    redis = aioredis.Redis.from_url(settings.redis_url, decode_responses=True)
    generation = Generation(redis, name)
    await generation.start()
    live = ProjectionRunner(js, redis, stream, Counter(name), generation)
    live.start()
    try:
        assert await live.wait_for(await append_many(js, stream, 4), 10)
        await rebuild(settings, [(stream, Counter(name))], grace_s=0)
        assert await generation.moved_from(0, 10)  # the switch's pub/sub message, or the next poll
        head = await append_many(js, stream, 2)
        assert await live.wait_for(head, 10)
        assert await counted(redis, Counter(name, 1)) == (6, list(range(1, 7)))

        await redis.flushdb()
        default = checkpoint_key(name, stream.name, 0)
        for _ in range(200):  # the poll reads the missing pointer as 0; the runner replays the log there
            if await redis.get(default) == str(head):
                break
            await asyncio.sleep(0.05)
        assert generation.current == 0
        assert await counted(redis, Counter(name)) == (6, list(range(1, 7)))
    finally:
        await live.stop()
        await generation.stop()
        await redis.aclose()
