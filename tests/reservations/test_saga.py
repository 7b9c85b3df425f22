"""The orchestrator on the real KV store and event log, with in-memory fakes of inventory and payments
(to script declines, lost holds and failures that never end)."""

from __future__ import annotations

import uuid
from dataclasses import replace

import pytest
from nats.js import JetStreamContext

from eventflow.contracts import RESERVA_CONFIRMADA, RESERVA_RECHAZADA
from eventflow.eventstore import EventStore
from eventflow.jetstream import RESERVAS, ensure_bucket
from services.reservations.domain import Estado, Fase, Saga
from services.reservations.inventory import HoldRequest
from services.reservations.payments import CardDetails
from services.reservations.saga import Orquestador, SagaConfig
from services.reservations.saga_store import SagaStore, SagaTomada
from services.reservations.steps import SagaDeps
from tests.reservations.fakes import FakeInventario, FakePagos
from tests.reservations.helpers import DECLINED, INSUFFICIENT, PROCESSING_ERROR, VISA_OK

FAST = {"retry_for_s": 0.3, "compensation_retry_for_s": 0.3, "record_retry_for_s": 0.3, "step_timeout_s": 2.0}


@pytest.fixture
async def store(js: JetStreamContext) -> SagaStore:
    return SagaStore(await ensure_bucket(js, f"SAGAS_T{uuid.uuid4().hex[:10]}"))


class World:
    def __init__(self, js: JetStreamContext, store: SagaStore, owner: str) -> None:
        self.inventario = FakeInventario(ev1=5)
        self.pagos = FakePagos()
        self.store = store
        self.interventions: list[str] = []
        self.reservas = EventStore(js, RESERVAS)
        self.orq = self.orquestador(owner)

    def orquestador(self, owner: str) -> Orquestador:
        async def count(saga: Saga) -> None:
            self.interventions.append(saga.reserva_id)

        deps = SagaDeps(self.inventario, self.pagos, self.reservas, hold_ttl_s=60, limite_por_usuario=None)
        return Orquestador(self.store, deps, SagaConfig(owner=owner, **FAST), on_intervention=count)

    async def saga(self, numero: str = VISA_OK, cantidad: int = 1) -> Saga:
        metodo = await self.pagos.tokenize(CardDetails(numero, "12/34", "123"))
        saga = Saga(
            reserva_id=str(uuid.uuid4()),
            usuario_id="u1",
            evento_id="ev1",
            cantidad=cantidad,
            asientos=[],
            importe_centimos=2100 * cantidad,
            metodo={"token": metodo.token, "marca": metodo.marca, "ultimos4": metodo.ultimos4},
            huella="h",
        )
        saga.registrar("release")
        saga.arrendar(self.orq.config.owner, 30)
        await self.store.create(saga)
        return saga

    async def run(self, saga: Saga) -> Saga:
        await self.orq.start(saga)
        stored = await self.store.get(saga.reserva_id)
        assert stored is not None
        return stored


@pytest.fixture
def world(js: JetStreamContext, store: SagaStore, owner: str) -> World:
    return World(js, store, owner)


def pasos(saga: Saga) -> list[tuple[str, str]]:
    return [(h["paso"], h["resultado"]) for h in saga.historial]


async def test_happy_path_confirms_captures_and_records_once(world: World) -> None:
    saga = await world.run(await world.saga(cantidad=2))
    assert (saga.estado, saga.fase) == (Estado.CONFIRMADA, Fase.TERMINADA)
    assert pasos(saga) == [(p, "ok") for p in ("hold", "authorize", "confirm", "capture", "record")]
    assert world.pagos.estado[saga.datos["autorizacion"]] == "captured"
    assert (await world.inventario.availability("ev1")).vendidas == 2
    events, _ = await world.reservas.load(saga.reserva_id)
    assert [(e.type, e.id) for e in events] == [(RESERVA_CONFIRMADA, f"{saga.reserva_id}:confirmada")]
    assert events[0].data["importe_centimos"] == 4200


@pytest.mark.parametrize(("numero", "motivo"), [(DECLINED, "card_declined"), (INSUFFICIENT, "insufficient_funds")])
async def test_a_decline_releases_the_hold_and_rejects(world: World, numero: str, motivo: str) -> None:
    saga = await world.run(await world.saga(numero))
    assert (saga.estado, saga.motivo) == (Estado.RECHAZADA, motivo)
    assert pasos(saga)[-3:] == [("void", "omitido"), ("release", "compensado"), ("reject", "ok")]
    assert (await world.inventario.availability("ev1")).disponibles == 5
    events, _ = await world.reservas.load(saga.reserva_id)
    assert [e.type for e in events] == [RESERVA_RECHAZADA]
    assert events[0].data["motivo"] == motivo


async def test_processing_error_is_retried_then_rejected(world: World) -> None:
    saga = await world.run(await world.saga(PROCESSING_ERROR))
    assert (saga.estado, saga.motivo) == (Estado.RECHAZADA, "processing_error")
    assert world.pagos.calls["authorize"] > 1, "a retryable error is retried with backoff first"
    assert (await world.inventario.availability("ev1")).disponibles == 5


async def test_sold_out_needs_no_release(world: World) -> None:
    saga = await world.run(await world.saga(cantidad=6))
    assert (saga.estado, saga.motivo) == (Estado.RECHAZADA, "agotado")
    assert ("release", "omitido") in pasos(saga)
    assert world.pagos.calls["authorize"] == 0, "nothing is charged without a hold"


async def test_a_lost_hold_voids_the_authorization(world: World) -> None:
    saga = await world.saga()
    world.inventario.lost.add(saga.reserva_id)
    saga = await world.run(saga)
    assert (saga.estado, saga.motivo) == (Estado.RECHAZADA, "reserva_expirada")
    assert world.pagos.estado[saga.datos["autorizacion"]] == "voided"
    assert pasos(saga)[-3:] == [("void", "compensado"), ("release", "compensado"), ("reject", "ok")]


async def test_a_compensation_that_keeps_failing_needs_intervention(world: World) -> None:
    saga = await world.saga()
    world.inventario.lost.add(saga.reserva_id)
    world.pagos.failing.add("void")
    saga = await world.run(saga)
    assert (saga.estado, saga.fase, saga.motivo) == (Estado.REQUIERE_INTERVENCION, Fase.TERMINADA, "void_fallido")
    assert pasos(saga)[-1] == ("void", "fallo_persistente")
    assert world.orq.metrics["requiere_intervencion"] == 1
    assert world.interventions == [saga.reserva_id]


async def test_a_failed_record_after_the_pivot_needs_intervention_not_a_refund(world: World) -> None:
    saga = await world.saga()
    world.orq.deps.reservas = EventStore(world.reservas.js, replace(RESERVAS, prefix="no-such-stream"))
    saga = await world.run(saga)
    assert saga.estado == Estado.REQUIERE_INTERVENCION
    assert world.pagos.estado[saga.datos["autorizacion"]] == "captured"


async def test_resume_continues_from_the_persisted_step(world: World) -> None:
    """As if the process died right after persisting "authorized, about to confirm"."""
    saga = await world.saga()
    await world.inventario.hold(HoldRequest(saga.reserva_id, "ev1", "u1", 1, (), 60, None))
    auth = await world.pagos.authorize(f"{saga.reserva_id}:authorize", saga.metodo["token"], 2100)
    saga.datos["autorizacion"] = auth.id  # type: ignore[union-attr]
    saga.paso = "confirm"
    saga.registrar("void")
    saga.owner, saga.lease_until = "dead-process", 0.0
    await world.store.save(saga)

    assert await world.orq.resume_all() == 1
    task = world.orq.running(saga.reserva_id)
    assert task is not None
    await task
    done = await world.store.get(saga.reserva_id)
    assert done is not None and done.estado == Estado.CONFIRMADA
    assert world.pagos.calls["authorize"] == 1, "the persisted authorization is reused, not asked again"
    assert await world.orq.resume_all() == 0


async def test_two_drivers_cannot_both_drive_one_saga(world: World) -> None:
    saga = await world.saga()
    saga.owner, saga.lease_until = "dead-process", 0.0
    await world.store.save(saga)
    other = world.orquestador("other-replica")
    copy = await world.store.get(saga.reserva_id)
    assert copy is not None
    first, second = world.orq.start(saga), other.start(copy)
    await first, await second
    done = await world.store.get(saga.reserva_id)
    assert done is not None and done.estado == Estado.CONFIRMADA
    assert world.pagos.calls["capture"] == 1, "the loser of the first compare-and-set stopped driving"
    assert len([h for h in done.historial if h["paso"] == "hold"]) == 1


async def test_save_is_a_compare_and_set(store: SagaStore, world: World) -> None:
    saga = await world.saga()
    stale = await store.get(saga.reserva_id)
    assert stale is not None
    saga.anotar("x", "ok")
    await store.save(saga)
    stale.anotar("y", "ok")
    with pytest.raises(SagaTomada):
        await store.save(stale)
