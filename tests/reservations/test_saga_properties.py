"""Saga-level property (hypothesis): whatever the cards, quantities and the point where the process dies
(before or after an operation took effect), a restarted orchestrator ends every saga consistently:
confirmada <=> tickets sold and payment captured; rechazada => nothing held, sold or captured; never
oversold. In memory (our ports' fakes and a CAS store fake), so hundreds of crash points run in seconds; the
same claims are checked on the real servers and a real SIGKILL in test_crash.py."""

from __future__ import annotations

import asyncio
import itertools
import time
from dataclasses import dataclass
from typing import Any

import orjson
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from eventflow.eventstore import ConcurrencyConflict, NewEvent
from services.reservations.domain import Estado, Saga
from services.reservations.payments import CardDetails
from services.reservations.saga import Orquestador, SagaConfig
from services.reservations.saga_store import SagaTomada, SagaYaExiste
from services.reservations.steps import SagaDeps
from tests.reservations.fakes import FakeInventario, FakePagos
from tests.reservations.helpers import DECLINED, INSUFFICIENT, PROCESSING_ERROR, VISA_OK


class Crash(BaseException):
    """The process dies here: nothing after this line runs (not even `except Exception`)."""


class MemorySagaStore:
    def __init__(self) -> None:
        self.docs: dict[str, tuple[bytes, int]] = {}
        self.revisions = itertools.count(1)

    async def create(self, saga: Saga) -> None:
        if saga.reserva_id in self.docs:
            raise SagaYaExiste(saga.reserva_id)
        saga.revision = next(self.revisions)
        self.docs[saga.reserva_id] = (orjson.dumps(saga.to_doc()), saga.revision)

    async def save(self, saga: Saga) -> None:
        current = self.docs.get(saga.reserva_id)
        if current is None or current[1] != saga.revision:
            raise SagaTomada(saga.reserva_id)
        saga.revision = next(self.revisions)
        self.docs[saga.reserva_id] = (orjson.dumps(saga.to_doc()), saga.revision)

    async def get(self, reserva_id: str) -> Saga | None:
        found = self.docs.get(reserva_id)
        return Saga.from_doc(orjson.loads(found[0]), found[1]) if found else None

    async def unfinished(self) -> list[Saga]:
        sagas = [await self.get(k) for k in self.docs]
        return [s for s in sagas if s is not None and not s.terminada]


@dataclass
class _Stored:
    id: str


class MemoryEventStore:
    def __init__(self) -> None:
        self.streams: dict[str, list[str]] = {}

    async def append(self, aggregate_id: str, events: list[NewEvent], expected_version: int | None) -> int:
        stream = self.streams.setdefault(aggregate_id, [])
        if expected_version is not None and expected_version != len(stream):
            raise ConcurrencyConflict("moved")
        stream.extend(e.id for e in events)
        return len(stream)

    async def load(self, aggregate_id: str) -> tuple[list[_Stored], int]:
        stream = self.streams.get(aggregate_id, [])
        return [_Stored(i) for i in stream], len(stream)


class Dying:
    """Wraps a fake port: the `at`-th call overall crashes, before or after the operation takes effect."""

    def __init__(self, inner: Any, clock: dict[str, int], at: int, after: bool) -> None:
        self.inner, self.clock, self.at, self.after = inner, clock, at, after

    def __getattr__(self, name: str) -> Any:
        attr = getattr(self.inner, name)
        if name in ("tokenize", "availability", "payments_for", "load") or not callable(attr):
            return attr

        async def call(*args: Any, **kwargs: Any) -> Any:
            self.clock["n"] += 1
            dies = self.clock["n"] == self.at
            if dies and not self.after:
                raise Crash
            result = await attr(*args, **kwargs)
            if dies:
                raise Crash
            return result

        return call


CARDS = st.sampled_from([VISA_OK, VISA_OK, VISA_OK, DECLINED, INSUFFICIENT, PROCESSING_ERROR])
FAST = SagaConfig(owner="p", step_timeout_s=1, retry_for_s=0.01, record_retry_for_s=0.01, compensation_retry_for_s=0.01)


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    orders=st.lists(st.tuples(CARDS, st.integers(1, 3)), min_size=1, max_size=6),
    capacity=st.integers(1, 6),
    crash_at=st.integers(1, 40),
    after=st.booleans(),
    tick=st.sampled_from([0.0, 50.0]),
)
def test_any_crash_point_ends_consistently(
    orders: list[tuple[str, int]], capacity: int, crash_at: int, after: bool, tick: float
) -> None:
    """`tick`: seconds the inventory's clock advances per operation; 50 makes 120 s holds expire mid-saga."""
    asyncio.run(_scenario(orders, capacity, crash_at, after, FAST, tick))


async def _scenario(
    orders: list[tuple[str, int]], capacity: int, crash_at: int, after: bool, config: SagaConfig, tick: float
) -> None:
    now = itertools.count(1_000_000.0, tick) if tick else None
    clock = (lambda: next(now)) if now else time.time  # type: ignore[arg-type]
    inventario, pagos, store, log = (
        FakeInventario(clock, ev=capacity),
        FakePagos(),
        MemorySagaStore(),
        MemoryEventStore(),
    )
    calls = {"n": 0}
    sagas: list[Saga] = []
    for i, (card, cantidad) in enumerate(orders):
        metodo = await pagos.tokenize(CardDetails(card, "12/34", "123"))
        saga = Saga(f"r{i}", f"u{i}", "ev", cantidad, [], 1000 * cantidad, metodo.__dict__, "h")
        saga.registrar("release")
        await store.create(saga)
        sagas.append(saga)

    dying = SagaDeps(
        Dying(inventario, calls, crash_at, after),  # type: ignore[arg-type]
        Dying(pagos, calls, crash_at, after),  # type: ignore[arg-type]
        Dying(log, calls, crash_at, after),  # type: ignore[arg-type]
    )
    first = Orquestador(store, dying, config)  # type: ignore[arg-type]
    results = await asyncio.gather(*(first.start(s) for s in sagas), return_exceptions=True)
    crashed = any(isinstance(r, Crash) for r in results)
    if crashed:  # the process died: every other task dies with it
        for task in list(first._tasks.values()):
            task.cancel()
        await asyncio.gather(*first._tasks.values(), return_exceptions=True)

    healthy = SagaDeps(inventario, pagos, log)  # type: ignore[arg-type]
    second = Orquestador(store, healthy, config)  # type: ignore[arg-type]
    await second.resume_all()
    await asyncio.gather(*list(second._tasks.values()))

    final = [await store.get(s.reserva_id) for s in sagas]
    availability = await inventario.availability("ev")
    assert availability.vendidas + availability.retenidas <= capacity
    sold = 0
    for saga in final:
        assert saga is not None and saga.terminada, saga
        auth = pagos.ops.get(f"{saga.reserva_id}:authorize", {}).get("auth")
        state = pagos.estado.get(auth) if auth else None
        in_inventory = inventario.sold("ev", saga.reserva_id)
        if saga.estado == Estado.CONFIRMADA:
            assert in_inventory and state == "captured"
            assert log.streams[saga.reserva_id] == [f"{saga.reserva_id}:confirmada"]
            sold += saga.cantidad
        else:
            assert saga.estado == Estado.RECHAZADA, saga.estado
            assert not in_inventory and not inventario.held("ev", saga.reserva_id)
            assert state in (None, "voided")
            assert log.streams[saga.reserva_id] == [f"{saga.reserva_id}:rechazada"]
    assert sold == availability.vendidas
