"""Generations of a read model family: a rebuild writes beside the live keys, then every reader switches at once.

A family is the read models of one service that are read together (the events service's catalog and sales,
the users service's documents and histories). Generation 0 is the plain layout (`events:doc:<id>`): what a
fresh or wiped Redis starts from. Generation N > 0 lives under `<family>:g<N>:` with its own checkpoints.
`gen:<family>` names the current generation (missing = 0). A rebuild builds a new one while the services keep
serving and updating the current one, and switches the pointer once it has caught up (eventflow.rebuild).

Processes cache the current generation (`Generation`): refreshed by a GET every second and at once on the
pub/sub message a switch publishes, so a read costs no extra round trip. The live projection runners WATCH
the pointer in the transaction they already run per event: once it has moved, nothing more lands in the old
generation, which is what keeps read-your-writes true across a switch (eventflow.projections).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import socket
import uuid

from redis.asyncio import Redis
from redis.exceptions import RedisError

log = logging.getLogger(__name__)

POLL_S = 1.0  # how stale a process's cached generation may get when the pub/sub message is lost
LOCK_TTL_MS = 30_000  # a rebuild that dies gives its family back after this long
LOCK_RENEW_S = 10.0


def keyspace(family: str, generation: int) -> str:
    """The prefix of a generation's keys: `events` for generation 0, `events:g3` for generation 3."""
    return family if generation == 0 else f"{family}:g{generation}"


def checkpoint_key(projection: str, stream: str, generation: int) -> str:
    base = f"proj:{projection}:{stream}"
    return base if generation == 0 else f"{base}:g{generation}"


def pointer_key(family: str) -> str:
    """The current generation (also the pub/sub channel a switch is announced on)."""
    return f"gen:{family}"


def lock_key(family: str) -> str:
    return f"gen:{family}:rebuild"


def counter_key(family: str) -> str:
    """The last generation number handed out: two rebuilds never build into the same generation."""
    return f"gen:{family}:last"


def parse(value: str | bytes | None) -> int:
    """A missing (wiped) or unreadable pointer means the default generation."""
    text = value.decode() if isinstance(value, bytes) else value
    return int(text) if text and text.isdigit() else 0


class Generation:
    """The generation of one family this process reads and projects: cached, and followed as it switches."""

    def __init__(self, redis: Redis, family: str, poll_s: float = POLL_S) -> None:
        self.redis = redis
        self.family = family
        self.pointer_key = pointer_key(family)
        self.poll_s = poll_s
        self.current = 0
        self._moved = asyncio.Event()
        self._lock = asyncio.Lock()
        self._task: asyncio.Task[None] | None = None
        self._stopping = False

    async def start(self) -> None:
        try:
            await self.refresh()
        except RedisError as err:  # Redis is the AP side: start anyway, the poll catches up once it answers
            log.warning("generation unknown; reading the default", extra={"family": self.family, "error": str(err)})
        self._task = asyncio.create_task(self._follow(), name=f"generation:{self.family}")

    async def stop(self) -> None:
        self._stopping = True
        if self._task:
            # redis-py's get_message(timeout=) runs on 3.11's asyncio timeouts, which can swallow a cancel
            # that lands as the read completes: cancel again until the task has really ended.
            while not self._task.done():
                self._task.cancel()
                await asyncio.wait({self._task}, timeout=0.1)
            await asyncio.gather(self._task, return_exceptions=True)
            self._task = None

    async def refresh(self) -> int:
        """Read the pointer. Serialized, so an older answer can never overwrite a newer one."""
        async with self._lock:
            self._set(parse(await self.redis.get(self.pointer_key)))
        return self.current

    async def moved_from(self, generation: int, timeout: float) -> bool:
        """True as soon as the current generation is not `generation`; False if `timeout` passes first."""
        if self.current == generation:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._moved.wait(), timeout)
        return self.current != generation

    def _set(self, generation: int) -> None:
        if generation != self.current:
            log.info("read model generation switched", extra={"family": self.family, "generation": generation})
            self.current = generation
            self._moved.set()
            self._moved = asyncio.Event()

    async def _follow(self) -> None:
        while not self._stopping:
            pubsub = self.redis.pubsub(ignore_subscribe_messages=True)
            try:
                await pubsub.subscribe(self.pointer_key)
                while not self._stopping:
                    await pubsub.get_message(timeout=self.poll_s)  # a switch announced, or the poll is due
                    await self.refresh()
            except RedisError as err:
                log.debug("generation poll failed", extra={"family": self.family, "error": str(err)})
                await asyncio.sleep(self.poll_s)
            finally:
                with contextlib.suppress(RedisError):
                    await pubsub.aclose()


class ReadModelRedis(Redis):
    """The service's Redis client (same connection pool) plus the generation its reads must use."""

    def __init__(self, redis: Redis, generation: Generation) -> None:
        super().__init__(connection_pool=redis.connection_pool)
        self.generation = generation


def read_generation(redis: Redis) -> int:
    """The generation a view reads: the process's cached one; a bare client reads the default generation."""
    return redis.generation.current if isinstance(redis, ReadModelRedis) else 0


# -- the rebuild's side: one rebuild per family at a time, then an atomic switch --------------------------
RENEW = "if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('PEXPIRE', KEYS[1], ARGV[2]) end return 0"
RELEASE = "if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('DEL', KEYS[1]) end return 0"
# KEYS counter, pointer. Above the current one even if the counter was lost while the pointer was not.
ALLOCATE = """
local n = redis.call('INCR', KEYS[1])
local current = tonumber(redis.call('GET', KEYS[2])) or 0
if n <= current then n = current + 1; redis.call('SET', KEYS[1], n) end
return n
"""
# KEYS lock, pointer, then (live checkpoint, rebuilt checkpoint) per read model; ARGV token, from, to.
# Switches only while the caller holds the lock, the pointer is still `from`, and no rebuilt read model is
# behind its live one: everything a reader could see before the switch is there after it.
SWITCH = """
if redis.call('GET', KEYS[1]) ~= ARGV[1] then return 'lost-lock' end
if (tonumber(redis.call('GET', KEYS[2])) or 0) ~= tonumber(ARGV[2]) then return 'moved' end
for i = 3, #KEYS, 2 do
  if (tonumber(redis.call('GET', KEYS[i + 1])) or 0) < (tonumber(redis.call('GET', KEYS[i])) or 0) then
    return 'behind'
  end
end
redis.call('SET', KEYS[2], ARGV[3])
redis.call('PUBLISH', KEYS[2], ARGV[3])
return 'switched'
"""


class RebuildInProgress(RuntimeError):
    def __init__(self, family: str, ttl_ms: int) -> None:
        expires = f"its lock expires in {max(ttl_ms, 0) / 1000:.0f} s"
        super().__init__(f"a rebuild of {family!r} is already running ({expires}); nothing was changed")
        self.family = family


class RebuildLock:
    """One rebuild per family: SET NX with a TTL, renewed while it runs, released only by its holder."""

    def __init__(self, redis: Redis, family: str) -> None:
        self.redis = redis
        self.family = family
        self.key = lock_key(family)
        self.token = f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:8]}"
        self._renewer: asyncio.Task[None] | None = None

    async def acquire(self) -> None:
        if not await self.redis.set(self.key, self.token, nx=True, px=LOCK_TTL_MS):
            raise RebuildInProgress(self.family, int(await self.redis.pttl(self.key)))
        self._renewer = asyncio.create_task(self._renew(), name=f"rebuild-lock:{self.family}")

    async def release(self) -> None:
        if self._renewer:
            self._renewer.cancel()
            await asyncio.gather(self._renewer, return_exceptions=True)
        await self.redis.eval(RELEASE, 1, self.key, self.token)

    async def _renew(self) -> None:
        while True:
            await asyncio.sleep(LOCK_RENEW_S)
            with contextlib.suppress(RedisError):
                if not await self.redis.eval(RENEW, 1, self.key, self.token, LOCK_TTL_MS):
                    log.error("rebuild lock lost: the switch will be refused", extra={"family": self.family})
                    return


async def allocate(redis: Redis, family: str) -> int:
    return int(await redis.eval(ALLOCATE, 2, counter_key(family), pointer_key(family)))


async def switch(redis: Redis, lock: RebuildLock, source: int, target: int, checkpoints: list[tuple[str, str]]) -> str:
    """'switched', or why not: 'behind' (wait and retry), 'moved' (the pointer changed: a wipe), 'lost-lock'."""
    keys = [lock.key, pointer_key(lock.family), *(key for pair in checkpoints for key in pair)]
    return str(await redis.eval(SWITCH, len(keys), *keys, lock.token, source, target))
