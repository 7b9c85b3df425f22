"""Saga-level property (hypothesis): whatever the cards, quantities and the fault that hits one call of a port,
a restarted orchestrator ends every saga consistently: confirmada <=> tickets sold and payment captured;
rechazada => nothing held, sold, captured or still authorized; never oversold; every saga terminal.

Faults (`FAULTS`): the process dies before or after an operation took effect; the effect lands and the answer
is lost (a retryable error, so the saga retries and may exhaust its budget, and a void must still find the
authorization); a transient error; the port failing from then on (retries exhausted); an error that is neither
a business "no" nor retryable. In memory (our ports' fakes and CAS store fakes), so hundreds of cases run in
seconds; the same claims are checked on the real servers and a real SIGKILL in test_crash.py and test_api.py.
"""

from __future__ import annotations

import asyncio
import itertools
import time
from dataclasses import dataclass, field
from typing import Any

import orjson
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from eventflow.eventstore import ConcurrencyConflict, NewEvent
from services.reservations.domain import Estado, Saga
from services.reservations.payments import CardDetails, PaymentPermanentError
from services.reservations.saga import Orquestador, SagaConfig
from services.reservations.saga_store import ReservationArchive, SagaTomada, SagaYaExiste
from services.reservations.steps import SagaDeps
from tests.reservations.fakes import FakeInventario, FakePagos
from tests.reservations.helpers import DECLINED, INSUFFICIENT, PROCESSING_ERROR, VISA_OK


class Crash(BaseException):
    """The process dies here: nothing after this line runs (not even `except Exception`)."""


class MemorySagaStore:
    def __init__(self) -> None:
        self.docs: dict[str, tuple[bytes, int]] = {}
        self.revisions = itertools.count(1)

    def _write(self, saga: Saga) -> None:
        saga.revision = next(self.revisions)
        saga.persistido = orjson.dumps(saga.to_doc())
        self.docs[saga.reserva_id] = (saga.persistido, saga.revision)

    async def create(self, saga: Saga) -> None:
        if saga.reserva_id in self.docs:
            raise SagaYaExiste(saga.reserva_id)
        self._write(saga)

    async def save(self, saga: Saga) -> None:
        current = self.docs.get(saga.reserva_id)
        if current is None or current[1] != saga.revision:
            raise SagaTomada(saga.reserva_id)
        self._write(saga)

    async def renew_lease(self, saga: Saga, owner: str, lease_s: float) -> None:
        """As the real store: the document as last written, only its lease moved."""
        renewed = Saga.from_doc(orjson.loads(saga.persistido), saga.revision)
        renewed.arrendar(owner, lease_s)
        await self.save(renewed)
        saga.revision, saga.persistido, saga.owner, saga.lease_until = (
            renewed.revision,
            renewed.persistido,
            renewed.owner,
            renewed.lease_until,
        )

    async def finish(self, saga: Saga) -> None:
        current = self.docs.get(saga.reserva_id)
        if current is not None and current[1] != saga.revision:
            raise SagaTomada(saga.reserva_id)
        self.docs.pop(saga.reserva_id, None)

    async def get(self, reserva_id: str) -> Saga | None:
        found = self.docs.get(reserva_id)
        return Saga.from_doc(orjson.loads(found[0]), found[1]) if found else None

    async def unfinished(self) -> list[Saga]:
        sagas = [await self.get(k) for k in self.docs]
        return [s for s in sagas if s is not None and not s.terminada]


@dataclass
class _Stored:
    id: str
    type: str
    data: dict[str, Any]
    occurred_at: str = field(default="2030-01-01T00:00:00+00:00")


class MemoryEventStore:
    def __init__(self) -> None:
        self.streams: dict[str, list[_Stored]] = {}

    async def append(self, aggregate_id: str, events: list[NewEvent], expected_version: int | None) -> int:
        stream = self.streams.setdefault(aggregate_id, [])
        if expected_version is not None and expected_version != len(stream):
            raise ConcurrencyConflict("moved")
        stream.extend(_Stored(e.id, e.type, dict(e.data)) for e in events)
        return len(stream)

    async def load(self, aggregate_id: str) -> tuple[list[_Stored], int]:
        stream = self.streams.get(aggregate_id, [])
        return list(stream), len(stream)

    async def last(self, aggregate_id: str, *, direct: bool = False) -> _Stored | None:
        stream = self.streams.get(aggregate_id, [])
        return stream[-1] if stream else None

    def ids(self, aggregate_id: str) -> list[str]:
        return [e.id for e in self.streams.get(aggregate_id, [])]


FAULTS = ("crash_before", "crash_after", "answer_lost", "transient", "down_from_then_on", "non_retryable")
PERSISTENT = ("down_from_then_on",)


class Faulty:
    """Wraps a fake port: the `at`-th call overall (counted across the ports) meets `fault`."""

    READS = ("tokenize", "availability", "payments_for", "load", "sold", "held")

    def __init__(self, inner: Any, clock: dict[str, int], at: int, fault: str) -> None:
        self.inner, self.clock, self.at, self.fault = inner, clock, at, fault

    def __getattr__(self, name: str) -> Any:
        attr = getattr(self.inner, name)
        if name in self.READS or not callable(attr):
            return attr

        async def call(*args: Any, **kwargs: Any) -> Any:
            self.clock["n"] += 1
            hit = self.clock["n"] == self.at or (self.fault in PERSISTENT and self.clock["n"] > self.at)
            if not hit:
                return await attr(*args, **kwargs)
            if self.fault == "crash_before":
                raise Crash
            if self.fault in ("transient", "down_from_then_on"):
                raise TimeoutError(f"{name}: no answer")
            if self.fault == "non_retryable":
                raise PaymentPermanentError(f"{name}: refused for good") if name == "authorize" else ValueError(name)
            await attr(*args, **kwargs)
            if self.fault == "crash_after":
                raise Crash
            raise TimeoutError(f"{name}: the answer was lost")  # answer_lost: the effect landed

        return call


CARDS = st.sampled_from([VISA_OK, VISA_OK, VISA_OK, DECLINED, INSUFFICIENT, PROCESSING_ERROR])
# Short budgets keep hundreds of cases fast; after the pivot and in compensations they still allow a retry or
# two, as the real (much longer) budgets do, so one lost answer there is retried, not an intervention.
FAST = SagaConfig(owner="p", step_timeout_s=1, retry_for_s=0.01, record_retry_for_s=0.15, compensation_retry_for_s=0.15)


@settings(max_examples=500, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    orders=st.lists(st.tuples(CARDS, st.integers(1, 3)), min_size=1, max_size=6),
    capacity=st.integers(1, 6),
    fault_at=st.integers(1, 40),
    fault=st.sampled_from(FAULTS),
    tick=st.sampled_from([0.0, 50.0]),
    como_la_api=st.booleans(),
)
def test_any_fault_ends_every_saga_consistently(
    orders: list[tuple[str, int]], capacity: int, fault_at: int, fault: str, tick: float, como_la_api: bool
) -> None:
    """`tick`: seconds the inventory's clock advances per operation; 50 makes 120 s holds expire mid-saga.
    `como_la_api`: the sagas register every compensation before the pivot at creation, as the API does, so
    nothing is written between hold, authorize and confirm; otherwise the void is registered (and written)
    only before the authorize."""
    asyncio.run(_scenario(orders, capacity, fault_at, fault, FAST, tick, como_la_api))


async def _scenario(
    orders: list[tuple[str, int]],
    capacity: int,
    fault_at: int,
    fault: str,
    config: SagaConfig,
    tick: float,
    como_la_api: bool = True,
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
        if como_la_api:
            saga.registrar_antes_del_pivote()
        else:
            saga.registrar("release")
        await store.create(saga)
        sagas.append(saga)

    faulty = SagaDeps(
        Faulty(inventario, calls, fault_at, fault),  # type: ignore[arg-type]
        Faulty(pagos, calls, fault_at, fault),  # type: ignore[arg-type]
        Faulty(log, calls, fault_at, fault),  # type: ignore[arg-type]
    )
    first = Orquestador(store, faulty, config)  # type: ignore[arg-type]
    results = await asyncio.gather(*(first.start(s) for s in sagas), return_exceptions=True)
    if any(isinstance(r, Crash) for r in results):  # the process died: every other task dies with it
        for task in list(first._tasks.values()):
            task.cancel()
        await asyncio.gather(*first._tasks.values(), return_exceptions=True)

    healthy = SagaDeps(inventario, pagos, log)  # type: ignore[arg-type]
    second = Orquestador(store, healthy, config)  # type: ignore[arg-type]
    await second.resume_all()
    await asyncio.gather(*list(second._tasks.values()))

    archive = ReservationArchive(log)  # type: ignore[arg-type]
    final = [await store.get(s.reserva_id) or await archive.get(s.reserva_id) for s in sagas]
    availability = await inventario.availability("ev")
    assert availability.vendidas + availability.retenidas <= capacity
    sold = 0
    for saga in final:
        assert saga is not None and saga.terminada, saga
        op = pagos.ops.get(f"{saga.reserva_id}:authorize", {})
        state = pagos.estado.get(op["auth"]) if "auth" in op else None
        in_inventory = inventario.sold("ev", saga.reserva_id)
        if saga.estado == Estado.REQUIERE_INTERVENCION:
            assert fault in PERSISTENT, (fault, saga.historial)  # only a port that stays down needs an operator
            continue
        if saga.estado == Estado.CONFIRMADA:
            assert in_inventory and state == "captured"
            assert log.ids(saga.reserva_id) == [f"{saga.reserva_id}:confirmada"]
            sold += saga.cantidad
        else:
            assert saga.estado == Estado.RECHAZADA, saga.estado
            assert not in_inventory and not inventario.held("ev", saga.reserva_id)
            assert state in (None, "voided"), (fault, state, saga.historial)  # never money held for a "no"
            assert log.ids(saga.reserva_id) == [f"{saga.reserva_id}:rechazada"]
    if fault not in PERSISTENT:
        assert sold == availability.vendidas
