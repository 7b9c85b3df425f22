"""Forcing interleavings between a rebuild and live projections, without sleeps, on the real servers.

- `GatedProjection`: the first event a predicate picks stops inside `apply` (its writes not committed yet)
  until the test lets it go: "the rebuild is midway".
- `RedisGate`: a TCP relay in front of the real Redis that holds the first command a predicate picks until
  the test lets it go, as a slow network would: "the rebuild is deleting keys right now".
- `dump`: every key and value of a read model, with the generation taken out of the names, to compare a
  rebuilt read model with a cold one.
"""

from __future__ import annotations

import asyncio
import re
from collections.abc import Awaitable, Callable
from typing import Any

from redis.asyncio import Redis

from eventflow.config import Settings
from eventflow.rebuild import rebuild


class Gate:
    def __init__(self) -> None:
        self.reached = asyncio.Event()
        self._go = asyncio.Event()

    def release(self) -> None:
        self._go.set()

    async def stop_here(self) -> None:
        self.reached.set()
        await self._go.wait()


class GatedProjection:
    """A projection whose first event picked by `stop_at` waits inside apply until `gate.release()`."""

    def __init__(self, inner: Any, stop_at: Callable[[Any], bool], gate: Gate) -> None:
        self.inner, self.stop_at, self.gate = inner, stop_at, gate

    @property
    def name(self) -> str:
        return self.inner.name

    @property
    def family(self) -> str:
        return self.inner.family

    @property
    def generation(self) -> int:
        return self.inner.generation

    @property
    def key_patterns(self) -> tuple[str, ...]:
        return self.inner.key_patterns

    def at(self, generation: int) -> GatedProjection:
        return GatedProjection(self.inner.at(generation), self.stop_at, self.gate)

    async def apply(self, event, redis, tx) -> None:
        if not self.gate.reached.is_set() and self.stop_at(event):
            await self.gate.stop_here()
        await self.inner.apply(event, redis, tx)


def deletes(prefix: str) -> Callable[[list[bytes]], bool]:
    """Picks an UNLINK or DEL of a key starting with `prefix`."""
    wanted = prefix.encode()

    def picks(command: list[bytes]) -> bool:
        return (
            bool(command)
            and command[0].upper() in (b"UNLINK", b"DEL")
            and any(key.startswith(wanted) for key in command[1:])
        )

    return picks


class RedisGate:
    """Relays to the Redis on `port`; holds the first command `hold` picks (and what follows on its connection)."""

    def __init__(self, port: int, hold: Callable[[list[bytes]], bool]) -> None:
        self.upstream_port = port
        self.hold = hold
        self.holding = asyncio.Event()
        self._go = asyncio.Event()
        self._tasks: set[asyncio.Task[None]] = set()
        self._server: asyncio.Server | None = None

    def url(self, db: int) -> str:
        assert self._server is not None
        return f"redis://127.0.0.1:{self._server.sockets[0].getsockname()[1]}/{db}"

    def release(self) -> None:
        self._go.set()

    async def __aenter__(self) -> RedisGate:
        self._server = await asyncio.start_server(self._relay, "127.0.0.1", 0)
        return self

    async def __aexit__(self, *exc: object) -> None:
        self.release()
        assert self._server is not None
        self._server.close()
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)

    async def _relay(self, client_r: asyncio.StreamReader, client_w: asyncio.StreamWriter) -> None:
        server_r, server_w = await asyncio.open_connection("127.0.0.1", self.upstream_port)
        pumps = [
            asyncio.create_task(self._commands(client_r, server_w)),
            asyncio.create_task(_copy(server_r, client_w)),
        ]
        self._tasks.update(pumps)
        try:
            await asyncio.wait(pumps, return_when=asyncio.FIRST_COMPLETED)
        finally:
            for task in pumps:
                task.cancel()
            for writer in (client_w, server_w):
                writer.close()

    async def _commands(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        """Forwards command by command (RESP arrays, as redis-py sends them), holding the one picked."""
        while line := await reader.readline():
            raw, args = [line], []
            if line.startswith(b"*"):
                for _ in range(int(line[1:])):
                    header = await reader.readline()
                    data = await reader.readexactly(int(header[1:]) + 2)
                    raw += [header, data]
                    args.append(data[:-2])
            if not self.holding.is_set() and self.hold(args):
                self.holding.set()
                await self._go.wait()
            writer.write(b"".join(raw))
            await writer.drain()


async def _copy(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    while data := await reader.read(65536):
        writer.write(data)
        await writer.drain()


_FAMILY_GENERATION = re.compile(r"^([^:]+):g\d+:")
_CHECKPOINT_GENERATION = re.compile(r"^(proj:[^:]+:[^:]+):g\d+")


async def dump(redis: Redis, patterns: list[str], skip: tuple[str, ...] = ()) -> tuple[dict[str, Any], set[str]]:
    """({key without its generation: value}, the generations seen): one generation means no leftovers."""
    found: dict[str, Any] = {}
    generations: set[str] = set()
    for pattern in patterns:
        async for key in redis.scan_iter(match=pattern, count=1000):
            if skip and key.startswith(skip):
                continue
            match = _FAMILY_GENERATION.match(key) or _CHECKPOINT_GENERATION.match(key)
            generations.add(match.group(0).rsplit(":g", 1)[1].rstrip(":") if match else "0")
            name = _FAMILY_GENERATION.sub(r"\1:", key, count=1)
            name = _CHECKPOINT_GENERATION.sub(r"\1", name, count=1)
            found[name] = await _value(redis, key)
    return found, generations


async def _value(redis: Redis, key: str) -> Any:
    kind = await redis.type(key)
    if kind == "string":
        return await redis.get(key)
    if kind == "hash":
        return await redis.hgetall(key)
    if kind == "set":
        return sorted(await redis.smembers(key))
    if kind == "zset":
        return await redis.zrange(key, 0, -1, withscores=True)
    if kind == "list":
        return await redis.lrange(key, 0, -1)
    raise AssertionError(f"{key}: a {kind} in a read model")


async def fresh_db(servers: Any, db: int) -> Settings:
    """Settings on an emptied Redis database of the session's server: a rebuild there switches no one else."""
    client = Redis.from_url(f"redis://127.0.0.1:{servers.redis.port}/{db}")
    await client.flushdb()
    await client.aclose()
    return servers.settings(redis_url=f"redis://127.0.0.1:{servers.redis.port}/{db}")


async def rebuild_stopping(
    settings: Settings,
    pairs: list[Any],
    gate: Gate,
    relay: RedisGate,
    at_gate: Callable[[], Awaitable[None]],
    at_relay: Callable[[], Awaitable[None]],
) -> tuple[Any, set[str]]:
    """Runs `eventflow.rebuild.rebuild(settings, pairs)`; when it reaches the gate ("midway"), or the relay
    holds it ("deleting"), runs the test's action there, then lets it go on. Returns the rebuild's result
    and the points it reached (the test asserts on them after what it checks first)."""
    task = asyncio.create_task(rebuild(settings, pairs))
    reached: set[str] = set()

    async def when(
        point: str, event: asyncio.Event, act: Callable[[], Awaitable[None]], go: Callable[[], None]
    ) -> None:
        waiting = asyncio.create_task(event.wait())
        await asyncio.wait({waiting, task}, return_when=asyncio.FIRST_COMPLETED)
        waiting.cancel()
        if event.is_set():
            reached.add(point)
            try:
                await act()
            finally:
                go()

    try:
        await asyncio.wait_for(
            asyncio.gather(
                when("midway", gate.reached, at_gate, gate.release),
                when("deleting", relay.holding, at_relay, relay.release),
            ),
            120,
        )
        return await asyncio.wait_for(task, 120), reached
    finally:
        gate.release()
        relay.release()
        if not task.done():
            task.cancel()
        await asyncio.gather(task, return_exceptions=True)
