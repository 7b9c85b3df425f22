"""The inventory in a JetStream KV bucket: one key per event, written by group commit; quotas beside it.

Every change is a compare-and-set on the key's revision, so two processes can never both write from the same
state. Inside one process a per-event lane queues the ops; one worker per hot event takes everything queued
(up to `max_batch`), applies it in order to the cached state, writes once and resolves each op with its own
outcome (or its own exception: an op that fails never fails the others). One fsync'd write then carries a
whole batch: this is what keeps one hot event fast (measured-here.md). The per-user limit is enforced with one
small key per (event, user) in the CUPOS bucket (quota_store.py), taken before the hold.
"""

from __future__ import annotations

import asyncio
import functools
import logging
import re
import time
from collections import OrderedDict, deque
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any, cast

import nats.errors
from nats.js import JetStreamContext
from nats.js.errors import KeyWrongLastSequenceError
from nats.js.kv import KeyValue

from eventflow.contracts import EVENTO_CREADO
from eventflow.eventstore import EventStore
from eventflow.jetstream import EVENTOS, ensure_bucket
from services.reservations.inventory import (
    Availability,
    ConfirmOp,
    ConfirmOutcome,
    EventoSinInventario,
    Held,
    HoldOutcome,
    HoldRequest,
    InventarioNoDisponible,
    Inventory,
    InventoryOp,
    ReleaseOp,
    ReturnSaleOp,
    SaleRecord,
    SettleOp,
    apply_batch,
)
from services.reservations.quota_store import JetStreamQuotaStore, is_transient, read_latest

BUCKET = "INVENTARIO"
log = logging.getLogger(__name__)
# Retry by time, not count: an R3 leader election pauses writes for up to ~10 s (measured-here.md).
RETRY_FOR_S = 20.0
_KEY = re.compile(r"^[-_=a-zA-Z0-9]+$")
Pending = tuple[InventoryOp, "asyncio.Future[Any]"]
# Told of every committed write: (evento_id, state before, state after, revision before, revision after).
OnCommit = Callable[[str, Inventory, Inventory, int, int], Awaitable[None]]


@dataclass
class StoreStats:
    ops: int = 0
    batches: int = 0
    largest_batch: int = 0
    conflicts: int = 0  # another process wrote the key first: reloaded and re-applied
    transient_errors: int = 0
    failed_ops: int = 0  # ops that raised (each failed alone; the rest of its batch was written)
    splits: int = 0  # batches too large for one write, split in two


@dataclass
class _Lane:
    queue: deque[Pending] = field(default_factory=deque)
    worker: asyncio.Task[None] | None = None
    batch: list[Pending] = field(default_factory=list)  # being written now


class _Unwritable(Exception):
    """The batch's document cannot be written (too large for one message, or not serializable): split it."""

    def __init__(self, error: Exception) -> None:
        super().__init__(str(error))
        self.error = error  # what the one op that cannot be written even alone fails with


class JetStreamInventoryStore:
    def __init__(
        self,
        js: JetStreamContext,
        kv: KeyValue,
        event_store_for_eventos: EventStore,
        quotas: JetStreamQuotaStore,
        clock: Callable[[], float] = time.time,
        *,
        max_batch: int = 256,
        retry_for_s: float = RETRY_FOR_S,
        cache_size: int = 256,
        max_document_bytes: int | None = None,
        on_commit: OnCommit | None = None,
    ) -> None:
        self.on_commit = on_commit  # the live availability feed (live.py); never delays or fails an op
        self.js, self.kv, self.events, self.quotas, self.clock = js, kv, event_store_for_eventos, quotas, clock
        self.max_batch, self.retry_for_s, self.cache_size = max_batch, retry_for_s, cache_size
        # nats-py checks only the payload against max_payload; the server counts headers too: keep room.
        server_max = int(getattr(getattr(js, "_nc", None), "max_payload", 0) or 1 << 20)
        self.max_document_bytes = max_document_bytes or server_max - 4096
        self.stats = StoreStats()
        self._lanes: dict[str, _Lane] = {}
        self._cache: OrderedDict[str, tuple[Inventory, int]] = OrderedDict()
        # The last state this process committed per event, never taken by a worker: for pre-checks.
        self._committed: OrderedDict[str, Inventory] = OrderedDict()

    @classmethod
    async def create(
        cls, js: JetStreamContext, *, replicas: int = 1, clock: Callable[[], float] = time.time, **options: Any
    ) -> JetStreamInventoryStore:
        kv = await ensure_bucket(js, BUCKET, replicas=replicas)
        quotas = await JetStreamQuotaStore.create(js, replicas=replicas)
        return cls(js, kv, EventStore(js, EVENTOS), quotas, clock, **options)

    async def hold(self, req: HoldRequest) -> HoldOutcome:
        """The user's quota first (when there is a limit), then the hold; a hold refused gives it back. A hold
        whose outcome is unknown (an exception) keeps it: the saga's `release` gives it back."""
        _check_key(req.evento_id)
        if req.limite_por_usuario is None:
            return cast(HoldOutcome, await self._submit(req.evento_id, req))
        args = (req.evento_id, req.usuario_id, req.reserva_id)
        refused = await self.quotas.take(*args, req.cantidad, req.limite_por_usuario)
        if refused is not None:
            return refused
        try:
            outcome = cast(HoldOutcome, await self._submit(req.evento_id, req))
        except EventoSinInventario:
            await self.quotas.give_back(*args)
            raise
        if not isinstance(outcome, Held):
            await self.quotas.give_back(*args)
        return outcome

    async def confirm(self, evento_id: str, reserva_id: str) -> ConfirmOutcome:
        return cast(ConfirmOutcome, await self._submit(evento_id, ConfirmOp(evento_id, reserva_id)))

    async def release(self, evento_id: str, reserva_id: str, usuario_id: str) -> None:
        """The inventory first, then the quota: a crash between the two leaves the user under the limit, and
        the saga's retry (a no-op for the inventory) gives the quota back."""
        await self._submit(evento_id, ReleaseOp(evento_id, reserva_id))
        await self.quotas.give_back(evento_id, usuario_id, reserva_id)

    async def settle(self, evento_id: str, reserva_id: str) -> None:
        await self._submit(evento_id, SettleOp(evento_id, reserva_id))

    async def return_sale(self, evento_id: str, sale: SaleRecord) -> None:
        await self._submit(evento_id, ReturnSaleOp(evento_id, sale))
        await self.quotas.give_back(evento_id, sale.usuario_id, sale.reserva_id)

    async def availability(
        self, evento_id: str, usuario_id: str | None = None, *, reciente: bool = False
    ) -> Availability:
        """Read from the stream leader, not the cache: another process may have written since.

        `reciente=True` is for fail-fast pre-checks that are never the authority: it answers from the state
        this process last committed for the event when it has one (one hot event would otherwise re-read and
        parse its whole document on every request: half the service's CPU, measured with py-spy).
        `por_usuario` comes from the user's quota key (0 without one): from the leader, or with `reciente` as
        this process last knew it (0 if it never saw the key: the hold's compare-and-set decides).
        """
        _check_key(evento_id)
        if usuario_id is None:
            state = await self._state_for_read(evento_id, reciente)
            return state.availability(evento_id, self.clock())
        state, mine = await asyncio.gather(
            self._state_for_read(evento_id, reciente), self.quotas.total(evento_id, usuario_id, reciente=reciente)
        )
        return state.availability(evento_id, self.clock(), mine)

    async def _state_for_read(self, evento_id: str, reciente: bool) -> Inventory:
        if reciente and (committed := self._committed.get(evento_id)) is not None:
            return committed
        found = await self._read(evento_id)
        return found[0] if found else await self._from_event(evento_id)

    async def document_size(self, evento_id: str) -> int:
        """Bytes of the stored document (0 before the first write): for tests and the benchmark."""
        found = await read_latest(self.js, BUCKET, evento_id)
        return len(found[0]) if found else 0

    async def drain(self) -> None:
        """Wait until every queued op has been written (for shutdown and tests)."""
        while workers := [lane.worker for lane in self._lanes.values() if lane.worker]:
            await asyncio.gather(*workers, return_exceptions=True)
            await asyncio.sleep(0)  # let done-callbacks of cancelled workers unregister their lanes

    async def _submit(self, evento_id: str, op: InventoryOp) -> Any:
        _check_key(evento_id)
        future: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        lane = self._lanes.get(evento_id)
        if lane is None:
            lane = self._lanes[evento_id] = _Lane()
            lane.worker = asyncio.create_task(self._drain_lane(evento_id, lane), name=f"inventory:{evento_id}")
            lane.worker.add_done_callback(functools.partial(self._worker_done, evento_id, lane))
        lane.queue.append((op, future))
        return await future

    async def _drain_lane(self, evento_id: str, lane: _Lane) -> None:
        """One worker per event while it has work; it ends (and the lane goes) as soon as the queue is empty."""
        while lane.queue:
            lane.batch = [lane.queue.popleft() for _ in range(min(len(lane.queue), self.max_batch))]
            await self._commit(evento_id, lane.batch)
            lane.batch = []
        del self._lanes[evento_id]

    def _worker_done(self, evento_id: str, lane: _Lane, _: asyncio.Task[None]) -> None:
        """Only matters if the worker was cancelled (shutdown), even before it started: nobody waits forever."""
        if self._lanes.get(evento_id) is lane:
            del self._lanes[evento_id]
        _fail([*lane.batch, *lane.queue], InventarioNoDisponible("the inventory worker stopped; retry"))

    async def _commit(self, evento_id: str, batch: list[Pending]) -> None:
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self.retry_for_s
        delay = 0.05
        while True:
            try:
                state, revision = (
                    self._cache.pop(evento_id) if evento_id in self._cache else await self._load(evento_id)
                )
                work, outcomes = apply_batch(state, [op for op, _ in batch], self.clock())
                document = self._serialize(work)
                previous = revision
                revision = await self.kv.update(evento_id, document, last=previous)
            except KeyWrongLastSequenceError:
                self.stats.conflicts += 1
                if loop.time() < deadline:
                    continue
                _fail(batch, InventarioNoDisponible("too much contention on this event; retry"))
            except (_Unwritable, nats.errors.MaxPayloadError) as err:
                self._cache[evento_id] = (state, revision)  # nothing was written: still current
                await self._split(evento_id, batch, err.error if isinstance(err, _Unwritable) else _too_large())
            except Exception as err:
                # An ambiguous failure may have written: reload (idempotent ops replay to the same outcomes).
                if not is_transient(err):
                    _fail(batch, err)
                    return
                self.stats.transient_errors += 1
                if loop.time() < deadline:
                    await asyncio.sleep(delay)
                    delay = min(delay * 2, 1.0)
                    continue
                _fail(batch, InventarioNoDisponible("the inventory store is not answering; retry"))
            else:
                self._remember(evento_id, work, revision)
                self.stats.ops += len(batch)
                self.stats.batches += 1
                self.stats.largest_batch = max(self.stats.largest_batch, len(batch))
                for (_, future), outcome in zip(batch, outcomes, strict=True):
                    if future.done():
                        continue
                    if isinstance(outcome, Exception):
                        self.stats.failed_ops += 1
                        future.set_exception(outcome)
                    else:
                        future.set_result(outcome)
                await self._notify(evento_id, state, work, previous, revision)
            return

    async def _notify(self, evento_id: str, before: Inventory, after: Inventory, previous: int, revision: int) -> None:
        """After the ops are answered, in commit order (one worker per event): a feed that fails is only logged."""
        if self.on_commit is None:
            return
        try:
            await self.on_commit(evento_id, before, after, previous, revision)
        except Exception:
            log.exception("the live availability feed failed for event %s", evento_id)

    async def estado(self, evento_id: str) -> tuple[Inventory, int]:
        """The event's whole inventory and its revision, read from the stream leader (0: never written yet)."""
        _check_key(evento_id)
        found = await self._read(evento_id)
        return found if found else (await self._from_event(evento_id), 0)

    def _serialize(self, state: Inventory) -> bytes:
        try:
            document = state.to_json()
        except Exception as err:  # some op put in what JSON cannot hold: splitting finds it
            raise _Unwritable(err) from err
        if len(document) > self.max_document_bytes:
            raise _Unwritable(_too_large())
        return document

    async def _split(self, evento_id: str, batch: list[Pending], error: Exception) -> None:
        """Write the halves one after the other, so only an op that cannot be written even alone fails."""
        if len(batch) == 1:
            log.error("an op on the inventory of event %s cannot be written: %s", evento_id, error)
            _fail(batch, error)
            return
        self.stats.splits += 1
        half = len(batch) // 2
        await self._commit(evento_id, batch[:half])
        await self._commit(evento_id, batch[half:])

    def recent_availability(self, limit: int = 20) -> dict[str, int]:
        """Tickets left per event this process committed to most recently (for /metrics: a few hot events,
        so the label set stays small)."""
        recent = list(self._committed.items())[-limit:]
        return {evento_id: state.disponibles for evento_id, state in recent}

    def _remember(self, evento_id: str, state: Inventory, revision: int) -> None:
        self._cache[evento_id] = (state, revision)
        self._committed[evento_id] = state
        self._committed.move_to_end(evento_id)
        for recent in (self._cache, self._committed):
            while len(recent) > self.cache_size:
                recent.popitem(last=False)

    async def _load(self, evento_id: str) -> tuple[Inventory, int]:
        """The stored inventory, or a new one made from the event's EventoCreado (create-if-absent)."""
        if found := await self._read(evento_id):
            return found
        state = await self._from_event(evento_id)
        try:
            return state, await self.kv.create(evento_id, state.to_json())
        except KeyWrongLastSequenceError:  # another process created it first: use theirs
            if found := await self._read(evento_id):
                return found
            raise

    async def _read(self, evento_id: str) -> tuple[Inventory, int] | None:
        found = await read_latest(self.js, BUCKET, evento_id)
        return (Inventory.from_json(found[0]), found[1]) if found else None

    async def _from_event(self, evento_id: str) -> Inventory:
        events, _ = await self.events.load(evento_id)
        created = next((e for e in events if e.type == EVENTO_CREADO), None)
        if created is None:
            raise EventoSinInventario(evento_id)
        return Inventory.for_event(int(created.data["aforo_total"]), created.data.get("secciones"))


def _too_large() -> InventarioNoDisponible:
    return InventarioNoDisponible("this event's inventory document is too large to write")


def _check_key(evento_id: str) -> None:
    if not _KEY.match(evento_id):
        raise EventoSinInventario(evento_id)


def _fail(batch: list[Pending], err: BaseException) -> None:
    for _, future in batch:
        if not future.done():
            future.set_exception(err)
