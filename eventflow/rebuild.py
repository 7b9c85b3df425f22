"""`python -m eventflow.rebuild [service ...]`: rebuild the Redis read models from JetStream, beside the live ones.

Safe while the services run, and their reads stay available. Per family (the read models of one service,
read together) it builds a new generation with its own checkpoints while the services keep serving and
updating the current one; once the new one has reached the head of its streams and is not behind the live
one, one script switches the family's pointer. The services follow at once (pub/sub, or their next poll or
commit), and the old generation is deleted after a grace period for reads still in flight. Nothing is ever
deleted under a reader, so no event can be counted twice. One rebuild per family at a time: a second one
is refused (eventflow.generations).
"""

from __future__ import annotations

import argparse
import asyncio
import importlib
import os
import sys
import time
from dataclasses import dataclass

from nats.js import JetStreamContext
from redis.asyncio import Redis

from eventflow.config import Settings
from eventflow.generations import (
    RebuildInProgress,
    RebuildLock,
    allocate,
    checkpoint_key,
    parse,
    pointer_key,
    switch,
)
from eventflow.jetstream import StreamSpec, connect
from eventflow.projections import Projection, ProjectionRunner
from eventflow.servers import url_listening
from eventflow.system import ROOT, system_env

SERVICES_WITH_READ_MODELS = ("users", "events", "reservations")
CONNECT_TIMEOUT_S = 10.0
GRACE_S = 3.0  # > the services' poll interval (1 s) + a read in flight: nobody reads the old keys after it
TIMEOUT_S = 300.0

Pair = tuple[StreamSpec, Projection]


class RebuildInterrupted(RuntimeError):
    """The family's pointer or the rebuild's lock changed under it; nothing was switched."""


@dataclass
class Rebuilt:
    projection: str
    stream: str
    events: int = 0
    removed: int = 0
    seconds: float = 0.0
    generation: int = 0


def read_models(services: list[str]) -> list[Pair]:
    """Every (stream, projection) the named services declare, once per checkpoint."""
    found: dict[tuple[str, str], Pair] = {}
    for service in services:
        if not (ROOT / "services" / service / "bootstrap.py").exists():
            continue
        bootstrap = importlib.import_module(f"services.{service}.bootstrap")
        for stream, projection in bootstrap.read_models():
            found.setdefault((projection.name, stream.name), (stream, projection))
    return list(found.values())


def families(pairs: list[Pair]) -> dict[str, list[Pair]]:
    grouped: dict[str, list[Pair]] = {}
    for stream, projection in pairs:
        grouped.setdefault(projection.family, []).append((stream, projection))
    return grouped


async def rebuild(
    settings: Settings, pairs: list[Pair], *, grace_s: float = GRACE_S, timeout_s: float = TIMEOUT_S
) -> list[Rebuilt]:
    for url in (settings.nats_url, settings.redis_url):
        if not url_listening(url):
            raise SystemExit(f"nothing answers at {url}: is EventFlow running (make up)?")
    try:
        nc = await asyncio.wait_for(connect(settings.nats_url, "eventflow-rebuild"), CONNECT_TIMEOUT_S)
    except Exception as err:  # nats-py raises several kinds; a timeout too
        reason = type(err).__name__
        raise SystemExit(
            f"cannot reach NATS at {settings.nats_url} ({reason}): is EventFlow running (make up)?"
        ) from None
    redis = Redis.from_url(settings.redis_url, decode_responses=True)
    try:
        await redis.ping()
        js = nc.jetstream(timeout=10.0)
        grouped = families(pairs)
        locks = await _lock_all(redis, list(grouped))  # refuse before touching anything
        try:
            results: list[Rebuilt] = []
            for family, members in grouped.items():
                results += await _rebuild_family(js, redis, locks[family], members, grace_s, timeout_s)
            return results
        finally:
            for lock in locks.values():
                await lock.release()
    finally:
        await redis.aclose()
        await nc.drain()


async def _lock_all(redis: Redis, names: list[str]) -> dict[str, RebuildLock]:
    locks: dict[str, RebuildLock] = {}
    try:
        for family in names:
            lock = RebuildLock(redis, family)
            await lock.acquire()
            locks[family] = lock
    except BaseException:
        for lock in locks.values():
            await lock.release()
        raise
    return locks


async def _rebuild_family(
    js: JetStreamContext, redis: Redis, lock: RebuildLock, pairs: list[Pair], grace_s: float, timeout_s: float
) -> list[Rebuilt]:
    started = time.perf_counter()
    source = parse(await redis.get(pointer_key(lock.family)))
    target = await allocate(redis, lock.family)
    removed = [0] * len(pairs)
    for stale in await _stale_generations(redis, pairs, keep=source, below=target):  # of rebuilds that died
        removed = _add(removed, await _remove(js, redis, pairs, stale))
    heads = [int((await js.stream_info(stream.name)).state.last_seq) for stream, _ in pairs]
    await _build_and_switch(js, redis, lock, pairs, source, target, heads, timeout_s)
    seconds = time.perf_counter() - started
    if await redis.exists(*(checkpoint_key(p.name, s.name, source) for s, p in pairs)):
        await asyncio.sleep(grace_s)  # reads that picked the old generation just before the switch finish
        removed = _add(removed, await _remove(js, redis, pairs, source))
    return [
        Rebuilt(p.name, s.name, head, n, seconds, target) for (s, p), head, n in zip(pairs, heads, removed, strict=True)
    ]


async def _build_and_switch(
    js: JetStreamContext,
    redis: Redis,
    lock: RebuildLock,
    pairs: list[Pair],
    source: int,
    target: int,
    heads: list[int],
    timeout_s: float,
) -> None:
    deadline = asyncio.get_running_loop().time() + timeout_s
    build = [ProjectionRunner(js, redis, stream, projection.at(target)) for stream, projection in pairs]
    try:
        for runner in build:
            runner.start()
        try:
            for runner, head in zip(build, heads, strict=True):
                await _reach(runner, head, deadline)
            await _switch(redis, lock, source, build, deadline)
        finally:
            for runner in build:
                await runner.stop()
    except BaseException:  # not switched (unless only its answer got lost): the half-built generation goes
        if parse(await redis.get(pointer_key(lock.family))) != target:
            await asyncio.shield(_remove(js, redis, pairs, target))
        raise


async def _reach(runner: ProjectionRunner, seq: int, deadline: float) -> None:
    if not await runner.wait_for(seq, max(0.0, deadline - asyncio.get_running_loop().time())):
        raise TimeoutError(f"{runner.checkpoint_key} did not reach {seq} in time")


async def _switch(redis: Redis, lock: RebuildLock, source: int, build: list[ProjectionRunner], deadline: float) -> None:
    """Switch once no rebuilt read model is behind its live one; the live runners may still be moving."""
    live = [checkpoint_key(r.projection.name, r.stream.name, source) for r in build]
    pairs = list(zip(live, (r.checkpoint_key for r in build), strict=True))
    while (outcome := await switch(redis, lock, source, build[0].projection.generation, pairs)) == "behind":
        for runner, position in zip(build, await redis.mget(live), strict=True):
            await _reach(runner, int(position or 0), deadline)
    if outcome != "switched":
        raise RebuildInterrupted(f"{lock.family}: {outcome} (was Redis wiped, or the lock lost?); run it again")


async def _stale_generations(redis: Redis, pairs: list[Pair], keep: int, below: int) -> set[int]:
    """Generations with a checkpoint left that are neither current nor being built (their keys go with it)."""
    bases = {checkpoint_key(p.name, s.name, 0) for s, p in pairs}
    found = {0} if await redis.exists(*bases) else set()
    async for key in redis.scan_iter(match="proj:*:g*", count=1000):
        base, _, number = key.rpartition(":g")
        if base in bases and number.isdigit():
            found.add(int(number))
    return {g for g in found if g != keep and g < below}


async def _remove(js: JetStreamContext, redis: Redis, pairs: list[Pair], generation: int) -> list[int]:
    return [await ProjectionRunner(js, redis, s, p.at(generation)).reset() for s, p in pairs]


def _add(totals: list[int], more: list[int]) -> list[int]:
    return [a + b for a, b in zip(totals, more, strict=True)]


def table(results: list[Rebuilt]) -> str:
    head = f"{'projection':<24} {'stream':<12} {'events':>8} {'generation':>10} {'keys removed':>13} {'seconds':>8}"
    rows = [head]
    rows += [
        f"{r.projection:<24} {r.stream:<12} {r.events:>8} {r.generation:>10} {r.removed:>13} {r.seconds:>8.2f}"
        for r in results
    ]
    return "\n".join(rows)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m eventflow.rebuild", description=__doc__.splitlines()[0])
    parser.add_argument("services", nargs="*", metavar="service", help=", ".join(SERVICES_WITH_READ_MODELS))
    args = parser.parse_args(argv)
    unknown = set(args.services) - set(SERVICES_WITH_READ_MODELS)
    if unknown:
        parser.error(f"unknown service(s): {', '.join(sorted(unknown))}")
    pairs = read_models(args.services or list(SERVICES_WITH_READ_MODELS))
    if not pairs:
        print("no read models to rebuild")
        return 0
    for name, value in system_env().items():
        os.environ.setdefault(name, value)
    try:
        results = asyncio.run(rebuild(Settings(), pairs))
    except (RebuildInProgress, RebuildInterrupted) as err:
        raise SystemExit(f"make rebuild: {err}") from None
    print(table(results))
    return 0


if __name__ == "__main__":
    sys.exit(main())
