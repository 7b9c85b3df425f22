"""Projection runner: JetStream stream -> Redis read model.

The position of each (projection, stream) pair lives in Redis, next to the documents it describes, and
moves in the same MULTI/EXEC as the writes of the event it records (WATCHed, so two replicas racing
apply each event once). Events are applied strictly in stream order: an event is applied only when the
checkpoint is exactly one behind it. Consequences:
- idempotent: a redelivered event finds the checkpoint past it and is skipped;
- resumable: a restart subscribes from checkpoint + 1;
- self-healing and rebuildable: if the read model is wiped (Redis is the AP side, it may lose data),
  the checkpoint reads 0, the next event is a gap, and the runner replays the log from the start;
- traced: an event appended with a W3C `traceparent` header is applied in that trace (a span of its own), and the
  runner logs one line per applied event in it, so a reservation's trace reaches its read models;
- back at once after a NATS outage: when the client reconnects, the runner resubscribes from its checkpoint (the
  restarted server may have lost the ordered consumer, which lives in memory, and nats-py would only notice
  after missing its heartbeats, about 15 s later);
- read-your-writes not held up by a lost subscription: when someone waits for an event and nothing has been
  delivered for a moment, the runner reads the next events from the log by sequence (DIRECT.GET, which any replica
  answers) until the subscription delivers again (see _read_directly_for_waiters);
- never stalled by one bad event: an event the projection keeps failing on (not a Redis outage, which is
  retried forever) is parked after a few attempts: logged at error level, listed with its reason under
  `proj:<name>:<stream>:parked`, counted in `runner.parked`, and the read model moves on.

A runner either projects one fixed generation of its read model (a rebuild, a test) or follows its
family's current generation (a service, `generation=`): then the pointer is WATCHed and read in the same
commands as the checkpoint (no extra round trip), and a commit that finds it moved lands nowhere: the
runner resubscribes in the new generation, from that generation's checkpoint (eventflow.generations).
"""

from __future__ import annotations

import asyncio
import contextlib
import heapq
import itertools
import logging
from typing import Any, Protocol

import nats.errors
import orjson
from nats.aio.client import Client as NATS
from nats.aio.msg import Msg
from nats.js import JetStreamContext
from nats.js.api import ConsumerConfig, DeliverPolicy
from redis.asyncio import Redis
from redis.asyncio.client import Pipeline
from redis.exceptions import RedisError, WatchError

from eventflow.eventstore import StoredEvent
from eventflow.generations import Generation, checkpoint_key, parse
from eventflow.jetstream import StreamSpec
from eventflow.logs import TRACEPARENT, parse_traceparent, trace_var

log = logging.getLogger(__name__)

# Attempts before an event that fails for a reason of its own (not Redis's, NATS's or the network's) is parked.
POISON_ATTEMPTS = 3
WATCHDOG_S = 2.0
RECONNECT_POLL_S = 0.1  # a look at the client's reconnect counter: no I/O
SILENCE_LOOKS = 2  # looks (WATCHDOG_S apart) at a log that is ahead while nothing arrives, before resubscribing
DIRECT_AFTER_S = 0.2  # someone waits and nothing was delivered for this long: read the log by sequence
DIRECT_POLL_S = 0.1  # while reading directly, the next look when the event waited for is not in the log yet


def _stop_if_cancelled() -> None:
    """Python 3.11's `asyncio.wait_for` (inside nats-py's requests) can swallow a cancellation that arrives as
    its answer does, and return the answer. A watchdog that then loops on would never end, and the runner waits
    for it forever after a resubscribe (seen: a wiped read model never replayed). Honour the request here."""
    task = asyncio.current_task()
    if task is not None and task.cancelling():
        raise asyncio.CancelledError()


class Projection(Protocol):
    """One generation of a read model. `apply` reads through `redis` and queues its writes on `tx` (MULTI).

    `family` names the read models that switch generation together; `key_patterns` match this
    generation's keys only; `at(n)` is the same read model writing generation n's keys.
    """

    name: str
    family: str
    generation: int
    key_patterns: tuple[str, ...]

    def at(self, generation: int) -> Projection: ...

    async def apply(self, event: StoredEvent, redis: Redis, tx: Pipeline) -> None: ...


class _Gap(Exception):
    """The read model is behind the subscription (it was wiped or rebuilt), or its family switched generation:
    resubscribe from the checkpoint of the generation to project now."""


# The infrastructure failing, not the event: retried (resubscribe, wait for Redis or NATS) however long it takes,
# never counted toward parking. A NATS or network timeout under load once parked a new event after 3 quick
# attempts, and the catalog never showed it.
_NOT_THE_EVENTS_FAULT: tuple[type[Exception], ...] = (_Gap, RedisError, nats.errors.Error, OSError)


class ProjectionRunner:
    def __init__(
        self,
        js: JetStreamContext,
        redis: Redis,
        stream: StreamSpec,
        projection: Projection,
        generation: Generation | None = None,
        *,
        direct_after_s: float | None = DIRECT_AFTER_S,
    ) -> None:
        """`direct_after_s=None`: never read the log directly for a waiter (a test of the subscription alone)."""
        self.js = js
        self.redis = redis
        self.stream = stream
        self.follows = generation
        self._use(projection if generation is None else projection.at(generation.current))
        self.parked = 0
        self.resubscribed_after_reconnect = 0
        self.resubscribed_after_silence = 0
        self.read_directly = 0
        self.position = 0
        self.stalled: str | None = None
        self._waiters: list[tuple[int, int, asyncio.Future[None]]] = []
        self._tiebreak = itertools.count()
        self._waited = asyncio.Event()
        self.direct_after_s = direct_after_s
        self._deliveries = 0
        self._delivered = 0  # the last sequence the subscription delivered (or the checkpoint it started after)
        self._applying = asyncio.Lock()  # one event at a time, delivered or read directly
        self._task: asyncio.Task[None] | None = None

    def _use(self, projection: Projection) -> None:
        self.projection = projection
        self.checkpoint_key = checkpoint_key(projection.name, self.stream.name, projection.generation)
        self.parked_key = f"{self.checkpoint_key}:parked"

    # -- lifecycle -----------------------------------------------------------------------------
    def start(self) -> None:
        self._task = asyncio.create_task(self.run(), name=f"projection:{self.checkpoint_key}")

    async def stop(self) -> None:
        if self._task:
            # Python 3.11's asyncio.wait_for (inside nats-py) can swallow a cancel that lands just as its
            # future completes (fixed in 3.12): cancel again until the task has really ended.
            while not self._task.done():
                self._task.cancel()
                await asyncio.wait({self._task}, timeout=0.1)
            await asyncio.gather(self._task, return_exceptions=True)
            self._task = None

    async def run(self) -> None:
        direct = asyncio.create_task(self._read_directly_for_waiters(self.direct_after_s))
        try:
            while True:
                try:
                    await self._consume()
                except asyncio.CancelledError:
                    raise
                except _Gap:
                    continue
                except Exception as err:
                    self.stalled = f"{type(err).__name__}: {err}"
                    log.exception("projection stopped; retrying", extra={"projection": self.checkpoint_key})
                    await asyncio.sleep(1.0)
        finally:
            direct.cancel()
            await asyncio.gather(direct, return_exceptions=True)

    async def _consume(self) -> None:
        if self.follows and self.follows.current != self.projection.generation:
            self._use(self.projection.at(self.follows.current))
            self.position = 0  # this generation's own checkpoint says how far it is
        checkpoint = await self._checkpoint()
        self._advance(checkpoint)
        self._delivered = checkpoint
        sub = await self.js.subscribe(
            f"{self.stream.prefix}.>",
            stream=self.stream.name,
            ordered_consumer=True,
            config=ConsumerConfig(deliver_policy=DeliverPolicy.BY_START_SEQUENCE, opt_start_seq=checkpoint + 1),
        )
        watchdogs = {
            asyncio.create_task(self._watch_for_wipe()),
            asyncio.create_task(self._watch_for_reconnect()),
            asyncio.create_task(self._watch_for_silence()),
        }
        next_msg: asyncio.Future[Msg] | None = None
        try:
            while True:
                next_msg = asyncio.ensure_future(sub.next_msg(timeout=None))
                done, _ = await asyncio.wait({next_msg, *watchdogs}, return_when=asyncio.FIRST_COMPLETED)
                for watchdog in watchdogs & done:
                    watchdog.result()
                msg = next_msg.result()
                self._deliveries += 1
                self._delivered = msg.metadata.sequence.stream
                async with self._applying:
                    await self._apply_traced(msg.metadata.sequence.stream, msg.subject, msg.data, msg.headers)
                self.stalled = None
        finally:
            tasks: list[asyncio.Future[Any]] = [*watchdogs, *([next_msg] if next_msg is not None else [])]
            for task in tasks:
                if not task.done():
                    task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
            with contextlib.suppress(Exception):  # after a reconnect the server may not know it any more
                await sub.unsubscribe()

    async def _watch_for_wipe(self) -> None:
        """Notice a wiped read model, or a switched generation, even when no new event arrives to reveal it."""
        while True:
            if self.follows is None:
                await asyncio.sleep(WATCHDOG_S)
            elif await self.follows.moved_from(self.projection.generation, WATCHDOG_S):
                raise _Gap()
            behind = await self._checkpoint() < self.position
            _stop_if_cancelled()
            if behind:
                self.position = 0
                raise _Gap()

    async def _watch_for_silence(self) -> None:
        """In a cluster the ordered consumer lives on one node: when that node restarts while this client stays
        connected to another, nothing is delivered again and no reconnect reveals it (found by the chaos suite's
        rolling restart: a projection behind for minutes). The log ahead of what the subscription delivered, and
        nothing delivered, for a few looks means resubscribing from the checkpoint (whatever was read directly for
        a waiter meanwhile: that does not bring the subscription back)."""
        silent = 0
        while True:
            seen, deliveries = self._delivered, self._deliveries
            await asyncio.sleep(WATCHDOG_S)
            try:
                head = int((await self.js.stream_info(self.stream.name)).state.last_seq)
            except Exception:  # NATS away: the reconnect watchdog handles that
                continue
            finally:
                _stop_if_cancelled()
            silent = silent + 1 if head > seen and self._deliveries == deliveries else 0
            if silent >= SILENCE_LOOKS:
                self.resubscribed_after_silence += 1
                log.warning(
                    "no delivery while the log is ahead: resubscribing", extra={"projection": self.checkpoint_key}
                )
                raise _Gap()

    async def _watch_for_reconnect(self) -> None:
        """Resubscribe as soon as the NATS client is connected again after losing its server."""
        nc: NATS | None = getattr(self.js, "_nc", None)
        if nc is None:
            await asyncio.Event().wait()
            return
        seen = nc.stats["reconnects"]
        # Polled: the reconnect callback is the connection's own (eventflow.jetstream.connect), not a runner's.
        while nc.stats["reconnects"] == seen or not nc.is_connected:  # noqa: ASYNC110
            await asyncio.sleep(RECONNECT_POLL_S)
        self.resubscribed_after_reconnect += 1
        log.info("NATS reconnected: resubscribing", extra={"projection": self.checkpoint_key})
        raise _Gap()

    async def _read_directly_for_waiters(self, after_s: float | None) -> None:
        """Read-your-writes must not wait for the subscription to come back. After a cluster node is killed, a new
        ordered consumer needs a JetStream meta leader, and electing one took longer than the 2 s read-your-writes
        bound here (issue 11: a POST answered, then its GET 404), while the stream's replicas still answered direct
        gets. So when someone waits for an event and nothing was delivered for DIRECT_AFTER_S, the runner reads the
        next events by sequence itself until the subscription delivers again or nobody waits. Both paths apply one
        event at a time (`_applying`) and commit through the checkpoint, so each event is still applied once and in
        order."""
        if after_s is None:
            return
        while True:
            await self._waited.wait()
            self._waited.clear()
            seen = self._deliveries
            await asyncio.sleep(after_s)
            read = self.read_directly
            while self._someone_waits() and self._deliveries == seen and not self._applying.locked():
                applied = await self._apply_next_directly()
                _stop_if_cancelled()
                if not applied:
                    await asyncio.sleep(DIRECT_POLL_S)
            if self.read_directly > read:
                log.info(
                    "nothing delivered while a write waited: read from the log directly",
                    extra={"projection": self.checkpoint_key, "events": self.read_directly - read},
                )
            if self._someone_waits():
                self._waited.set()  # the subscription delivers: look again later, it may stop

    def _someone_waits(self) -> bool:
        while self._waiters and self._waiters[0][2].done():  # timed out: nobody is waiting for it any more
            heapq.heappop(self._waiters)
        return bool(self._waiters)

    async def _apply_next_directly(self) -> bool:
        """Apply the event after our position, read from any replica; False if it is not there (yet) or failed."""
        seq = self.position + 1
        try:
            msg = await self.js.get_msg(self.stream.name, seq=seq, direct=True)
        except Exception:  # not in the log yet (404), or NATS away: looked at again shortly
            return False
        try:
            async with self._applying:
                await self._apply_traced(seq, msg.subject or "", msg.data or b"", msg.headers)
        except _NOT_THE_EVENTS_FAULT:  # the subscription's loop resubscribes or waits; we look again
            return False
        self.read_directly += 1
        return True

    # -- applying --------------------------------------------------------------------------------
    async def _apply_traced(self, seq: int, subject: str, data: bytes, headers: dict[str, str] | None) -> None:
        """Apply one event in the trace it was appended in (if it carries one), and log it there."""
        caller = parse_traceparent((headers or {}).get(TRACEPARENT))
        token = trace_var.set(caller.child() if caller is not None else None)
        try:
            await self._apply_once(seq, subject, data)
            if caller is not None:
                log.info("projected", extra={"projection": self.checkpoint_key, "seq": seq, "subject": subject})
        finally:
            trace_var.reset(token)

    async def _apply_once(self, seq: int, subject: str, payload: bytes) -> None:
        """Apply one event exactly once, in order; park it if it keeps failing for a reason of its own."""
        failures = 0
        while True:
            try:
                event = StoredEvent.decode(self.stream.name, seq, subject, payload)
                if await self._commit(seq, event):
                    return
            except _NOT_THE_EVENTS_FAULT:
                raise  # resubscribe / wait for Redis or NATS: the event is retried, never skipped
            except Exception as err:
                failures += 1
                if failures >= POISON_ATTEMPTS:
                    await self._park(seq, subject, err)
                    return
                await asyncio.sleep(0.1 * 2**failures)

    async def _commit(self, seq: int, event: StoredEvent | None, parked: bytes | None = None) -> bool:
        """One WATCHed MULTI: the event's writes (or its parked record) and the checkpoint move together.

        Returns False when another replica moved the checkpoint meanwhile (re-read and try again).
        """
        watched = [self.checkpoint_key] if self.follows is None else [self.checkpoint_key, self.follows.pointer_key]
        async with self.redis.pipeline(transaction=True) as tx:
            try:
                await tx.watch(*watched)
                values = await tx.mget(watched)
                if self.follows and parse(values[1]) != self.projection.generation:
                    await self.follows.refresh()
                    raise _Gap()  # the family switched generation: this one is frozen, resubscribe in the new one
                checkpoint = int(values[0] or 0)
                if seq <= checkpoint:
                    self._advance(checkpoint)
                    return True
                if checkpoint < seq - 1 and checkpoint + 1 >= await self._first_seq():
                    self.position = checkpoint
                    raise _Gap()
                tx.multi()
                if event is not None:
                    await self.projection.apply(event, self.redis, tx)
                if parked is not None:
                    tx.rpush(self.parked_key, parked)
                tx.set(self.checkpoint_key, seq)
                await tx.execute()
                self._advance(seq)
                return True
            except WatchError:
                return False

    async def _park(self, seq: int, subject: str, err: Exception) -> None:
        """A poison event (breaks the contract, or a projection bug) must not stall every later event.

        It is logged at error level and recorded in the read model's parked list with the reason; the
        event itself stays in the log, so fixing the projection and rebuilding applies it.
        """
        reason = f"{type(err).__name__}: {err}"
        log.error(
            "parking an event the projection cannot apply (%s)",
            reason,
            extra={"projection": self.checkpoint_key, "seq": seq, "error": reason},
        )
        record = orjson.dumps({"seq": seq, "subject": subject, "error": reason})
        while not await self._commit(seq, None, record):
            pass
        self.parked += 1

    async def _first_seq(self) -> int:
        info = await self.js.stream_info(self.stream.name)
        return int(info.state.first_seq or 1)

    async def _checkpoint(self) -> int:
        return int(await self.redis.get(self.checkpoint_key) or 0)

    # -- read-your-writes ------------------------------------------------------------------------
    def _advance(self, position: int) -> None:
        self.position = max(self.position, position)
        while self._waiters and self._waiters[0][0] <= self.position:
            _, _, future = heapq.heappop(self._waiters)
            if not future.done():
                future.set_result(None)

    async def wait_for(self, seq: int, timeout: float) -> bool:
        """True once this read model includes stream sequence `seq`; False if `timeout` ran out first."""
        if self.position >= seq:
            return True
        future: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        heapq.heappush(self._waiters, (seq, next(self._tiebreak), future))
        self._waited.set()
        try:
            await asyncio.wait_for(future, timeout)
            return True
        except TimeoutError:
            return False

    # -- rebuild ---------------------------------------------------------------------------------
    async def reset(self) -> int:
        """Delete this generation's keys, parked list and checkpoint (last: it marks what is left); returns
        how many keys were removed. Only for a generation nobody reads: a live one would serve the gap."""
        removed = 0
        for pattern in (*self.projection.key_patterns, self.parked_key, self.checkpoint_key):
            batch: list[str] = []
            async for key in self.redis.scan_iter(match=pattern, count=1000):
                batch.append(key)
                if len(batch) >= 500:
                    removed += await self.redis.unlink(*batch)
                    batch.clear()
            if batch:
                removed += await self.redis.unlink(*batch)
        self.position = 0
        return removed

    async def catch_up(self, timeout: float = 300.0) -> int:
        """Run until the read model includes everything in the stream now; returns that sequence."""
        info = await self.js.stream_info(self.stream.name)
        head = int(info.state.last_seq)
        owns_task = self._task is None
        if owns_task:
            self.start()
        try:
            if not await self.wait_for(head, timeout):
                raise TimeoutError(f"{self.checkpoint_key} did not reach {head} in {timeout}s")
        finally:
            if owns_task:
                await self.stop()
        return head
