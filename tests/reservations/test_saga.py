"""The orchestrator on the real KV store and event log, with in-memory fakes of inventory and payments
(to script declines, lost holds and failures that never end)."""

from __future__ import annotations

import asyncio
import subprocess
import sys
import time
import uuid
from dataclasses import replace
from typing import Any

import pytest
from nats.js import JetStreamContext
from nats.js.errors import InvalidKeyError, NoKeysError

from eventflow.auth import Principal, Prohibido
from eventflow.contracts import RESERVA_CONFIRMADA, RESERVA_RECHAZADA
from eventflow.crypto import Pseudonymizer
from eventflow.eventstore import EventStore
from eventflow.jetstream import RESERVAS
from services.reservations import handlers
from services.reservations.domain import (
    MAX_REANUDACIONES,
    CancelarReserva,
    Estado,
    Fase,
    ReservaNoEncontrada,
    Saga,
)
from services.reservations.handlers import Deps
from services.reservations.inventory import EventoSinInventario, HoldRequest
from services.reservations.payments import CardDetails, PaymentPermanentError
from services.reservations.saga import Orquestador, SagaConfig
from services.reservations.saga_store import ReservationArchive, SagaStore, SagaTomada
from services.reservations.steps import SagaDeps, compensacion_necesaria
from tests.reservations.fakes import FakeCatalogo, FakeInventario, FakePagos, evento_info
from tests.reservations.helpers import DECLINED, INSUFFICIENT, PROCESSING_ERROR, VISA_OK, eventually

FAST = {"retry_for_s": 0.3, "compensation_retry_for_s": 0.3, "record_retry_for_s": 0.3, "step_timeout_s": 2.0}


@pytest.fixture
async def store(js: JetStreamContext) -> SagaStore:
    return await SagaStore.open(js, f"SAGAS_T{uuid.uuid4().hex[:10]}")


class World:
    def __init__(self, js: JetStreamContext, store: SagaStore, owner: str) -> None:
        self.inventario = FakeInventario(ev1=5)
        self.pagos = FakePagos()
        self.store = store
        self.interventions: list[str] = []
        self.reservas = EventStore(js, RESERVAS)
        self.archivo = ReservationArchive(self.reservas)
        self.orq = self.orquestador(owner)

    def orquestador(self, owner: str, **config: float) -> Orquestador:
        async def count(saga: Saga) -> None:
            self.interventions.append(saga.reserva_id)

        deps = SagaDeps(self.inventario, self.pagos, self.reservas, hold_ttl_s=60, limite_por_usuario=None)
        return Orquestador(self.store, deps, SagaConfig(owner=owner, **{**FAST, **config}), on_intervention=count)

    async def saga(self, numero: str = VISA_OK, cantidad: int = 1, *, como_la_api: bool = False) -> Saga:
        """`como_la_api`: every compensation before the pivot registered at creation, as handlers.nueva_saga does
        (then nothing is written between hold, authorize and confirm); otherwise only the hold's."""
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
        if como_la_api:
            saga.registrar_antes_del_pivote()
        else:
            saga.registrar("release")
        saga.arrendar(self.orq.config.owner, 30)
        await self.store.create(saga)
        return saga

    def capacidad(self, aforo: int) -> None:
        self.inventario = FakeInventario(ev1=aforo)
        self.orq = self.orquestador(self.orq.config.owner)

    async def run(self, saga: Saga) -> Saga:
        await self.orq.start(saga)
        return await self.reserva(saga.reserva_id)

    async def reserva(self, reserva_id: str) -> Saga:
        """As the API reads it: the saga in flight, else the finished reservation from its outcome event."""
        stored = await self.store.get(reserva_id) or await self.archivo.get(reserva_id)
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
    done = await world.reserva(saga.reserva_id)
    assert done.estado == Estado.CONFIRMADA
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
    done = await world.reserva(saga.reserva_id)
    assert done.estado == Estado.CONFIRMADA
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


class Raising:
    """Wraps a fake port: the named operations raise `error` (after doing their work when `after`)."""

    def __init__(self, inner: Any, error: BaseException, *names: str, after: bool = False) -> None:
        self.inner, self.error, self.names, self.after = inner, error, names, after
        self.calls = 0

    def __getattr__(self, name: str) -> Any:
        attr = getattr(self.inner, name)
        if name not in self.names:
            return attr

        async def call(*args: Any, **kwargs: Any) -> Any:
            self.calls += 1
            if self.after:
                await attr(*args, **kwargs)
            raise self.error

        return call


async def finished(world: World, saga: Saga) -> Saga:
    """Runs the saga to its end: the orchestrator's task must return, whatever the adapters raised."""
    task = world.orq.start(saga)
    await asyncio.wait_for(task, 30)
    return await world.reserva(saga.reserva_id)


@pytest.mark.parametrize(
    ("port", "error", "operation", "motivo"),
    [
        ("pagos", PaymentPermanentError("unknown payment method token"), "authorize", "pago_no_procesable"),
        ("inventario", EventoSinInventario("ev1"), "confirm", "evento_sin_inventario"),
        ("inventario", InvalidKeyError(), "hold", "error_interno"),
        ("inventario", ValueError("a bug in an adapter"), "confirm", "error_interno"),
    ],
)
async def test_an_error_that_is_neither_a_no_nor_retryable_still_ends_the_saga(
    world: World, port: str, error: Exception, operation: str, motivo: str
) -> None:
    """Issue 6 defect 2: the driver used to die on these, and the saga was resumed forever, never terminal."""
    setattr(world.orq.deps, port, Raising(getattr(world.orq.deps, port), error, operation))
    saga = await finished(world, await world.saga())
    assert (saga.estado, saga.motivo) == (Estado.RECHAZADA, motivo)
    assert (await world.inventario.availability("ev1")).disponibles == 5, "the hold was released"
    assert all(state != "authorized" for state in world.pagos.estado.values()), "no money stays held"


async def test_a_compensation_raising_a_non_retryable_error_ends_in_intervention(world: World) -> None:
    saga = await world.saga()
    world.inventario.lost.add(saga.reserva_id)
    world.orq.deps.inventario = Raising(world.inventario, InvalidKeyError(), "release")  # type: ignore[assignment]
    saga = await finished(world, saga)
    assert (saga.estado, saga.motivo) == (Estado.REQUIERE_INTERVENCION, "release_fallido")
    assert world.interventions == [saga.reserva_id]


async def resumed(world: World, saga: Saga) -> Saga:
    """As the supervisor does with a saga whose driver died: resume it, wait for it, read the outcome."""
    saga.owner, saga.lease_until = "dead-process", 0.0
    await world.store.save(saga) if saga.revision else await world.store.create(saga)
    assert await world.orq.resume_all() == 1
    task = world.orq.running(saga.reserva_id, cancelacion=saga.fase == Fase.CANCELANDO)
    if task is not None:
        await asyncio.wait_for(task, 30)
    return await world.reserva(saga.reserva_id)


async def test_a_crash_loop_before_the_pivot_unwinds(world: World) -> None:
    """A driver dying at the same point every time: after MAX_REANUDACIONES resumes without progress the saga
    is unwound (nothing was taken for good yet), not left looping nor parked with tickets and money held."""
    saga = await world.saga()
    saga.reanudaciones = MAX_REANUDACIONES
    done = await resumed(world, saga)
    assert (done.estado, done.motivo) == (Estado.RECHAZADA, "error_interno")
    assert (await world.inventario.availability("ev1")).disponibles == 5


async def test_a_crash_loop_after_the_pivot_needs_intervention(world: World) -> None:
    saga = await world.saga()
    await world.inventario.hold(HoldRequest(saga.reserva_id, "ev1", "u1", 1, (), 60, None))
    auth = await world.pagos.authorize(f"{saga.reserva_id}:authorize", saga.metodo["token"], 2100)
    saga.datos["autorizacion"] = auth.id  # type: ignore[union-attr]
    await world.inventario.confirm("ev1", saga.reserva_id)
    saga.paso, saga.reanudaciones = "capture", MAX_REANUDACIONES
    saga.registrar("void")
    done = await resumed(world, saga)
    assert (done.estado, done.reanudaciones) == (Estado.REQUIERE_INTERVENCION, MAX_REANUDACIONES + 1)


async def test_progress_resets_the_resume_count(world: World) -> None:
    saga = await world.saga()
    saga.reanudaciones = MAX_REANUDACIONES - 1
    done = await resumed(world, saga)
    assert done.estado == Estado.CONFIRMADA


def same_request(saga: Saga) -> Saga:
    """A new saga for the same reservation id: what a twin request (same Idempotency-Key) creates."""
    twin = Saga(
        saga.reserva_id,
        saga.usuario_id,
        saga.evento_id,
        saga.cantidad,
        list(saga.asientos),
        saga.importe_centimos,
        dict(saga.metodo),
        saga.huella,
    )
    twin.registrar("release")
    return twin


async def test_a_twin_that_re_created_a_finished_reservations_key_never_runs_again(world: World) -> None:
    """Review H2: a twin request re-created the key after the purge and died before its own check; resumed,
    it used to hold (and sell) the tickets again. Now it sees the stored outcome and only purges."""
    first = await world.run(await world.saga(cantidad=2))
    assert first.estado == Estado.CONFIRMADA
    done = await resumed(world, same_request(first))
    assert done.estado == Estado.CONFIRMADA
    assert (await world.inventario.availability("ev1")).vendidas == 2
    assert world.pagos.calls["authorize"] == 1
    assert await world.store.get(first.reserva_id) is None


def deps_for(world: World) -> Deps:
    return Deps(
        world.store,
        world.archivo,
        world.orq,
        cadena=None,  # type: ignore[arg-type]
        owner=world.orq.config.owner,
        lease_s=30,
        eventos=FakeCatalogo(evento_info()),
        ids=Pseudonymizer(b"k" * 32),
    )


async def test_a_second_cancellation_after_the_first_finished_never_returns_the_tickets_twice(world: World) -> None:
    """Review H1: C2 re-created the key after C1 had finished and died before its check; resumed, its
    return_sale used to un-sell the tickets a second time (an oversell)."""
    confirmed = await world.run(await world.saga(cantidad=2))
    deps = deps_for(world)
    first = await handlers.cancelar(CancelarReserva(confirmed.reserva_id), deps)
    task = world.orq.running(first.reserva_id, cancelacion=True)
    assert task is not None
    assert (await task).estado == Estado.CANCELADA
    second = await world.archivo.get(confirmed.reserva_id)
    assert second is not None
    second.estado, second.fase, second.paso = Estado.CONFIRMADA, Fase.CANCELANDO, "refund"  # C2's stale view
    done = await resumed(world, second)
    assert done.estado == Estado.CANCELADA
    assert world.pagos.calls["refund"] == 1
    assert (await world.inventario.availability("ev1")).vendidas == 0
    assert not world.inventario.sold("ev1", confirmed.reserva_id)


async def test_a_reservation_being_cancelled_reads_as_being_cancelled(world: World) -> None:
    """Review H3: during record_cancel the reservation read as confirmada (its last stored outcome), and a
    repeated cancel answered 409."""
    confirmed = await world.run(await world.saga())
    cancelling = await world.archivo.get(confirmed.reserva_id)
    assert cancelling is not None
    cancelling.fase, cancelling.paso = Fase.CANCELANDO, "record_cancel"
    cancelling.owner, cancelling.lease_until = "busy-driver", time.time() + 60
    await world.store.create(cancelling)
    deps = deps_for(world)
    seen = await handlers.consultar(confirmed.reserva_id, deps)
    assert (seen.fase, seen.terminada) == (Fase.CANCELANDO, False)
    again = await handlers.cancelar(CancelarReserva(confirmed.reserva_id), deps)
    assert again.fase == Fase.CANCELANDO


async def test_a_cancellation_does_not_wait_for_a_stored_purchase_to_be_purged(world: World) -> None:
    """Review M3: the purchase's outcome is stored, its key not purged yet (its driver died after record):
    the cancellation purges it by CAS and goes on, instead of 409 after a few tries."""
    confirmed = await world.run(await world.saga())
    unpurged = same_request(confirmed)
    unpurged.paso, unpurged.owner, unpurged.lease_until = "record", "dead-process", time.time() + 60
    await world.store.create(unpurged)
    started = await handlers.cancelar(CancelarReserva(confirmed.reserva_id), deps_for(world))
    task = world.orq.running(started.reserva_id, cancelacion=True)
    assert task is not None
    assert (await asyncio.wait_for(task, 30)).estado == Estado.CANCELADA


async def test_capture_is_the_pivot_an_unknown_capture_outcome_is_not_refunded(world: World) -> None:
    """Issue 6 defect 7: exhausted capture retries used to compensate: charge, refund, and tell rejected."""
    world.pagos.failing.add("capture")
    saga = await finished(world, await world.saga())
    assert (saga.estado, saga.motivo) == (Estado.REQUIERE_INTERVENCION, "capture_fallido")
    assert world.pagos.calls["refund"] == world.pagos.calls["void"] == 0
    assert world.pagos.estado[saga.datos["autorizacion"]] == "authorized", "left for the operator to capture"
    assert world.inventario.sold("ev1", saga.reserva_id), "the buyer's tickets are kept"


async def test_a_capture_the_processor_refuses_took_no_money_and_unwinds(world: World) -> None:
    saga = await world.saga()
    world.orq.deps.pagos = Raising(world.pagos, PaymentPermanentError("expired authorization"), "capture")  # type: ignore[assignment]
    saga = await finished(world, saga)
    assert (saga.estado, saga.motivo) == (Estado.RECHAZADA, "captura_rechazada")
    assert world.pagos.estado[saga.datos["autorizacion"]] == "voided"
    assert not world.inventario.sold("ev1", saga.reserva_id)


class Gate:
    """A fake port operation that blocks until the test opens it."""

    def __init__(self, inner: Any, name: str) -> None:
        self.inner, self.name = inner, name
        self.entered, self.release = asyncio.Event(), asyncio.Event()
        self.calls = 0

    def __getattr__(self, name: str) -> Any:
        attr = getattr(self.inner, name)
        if name != self.name:
            return attr

        async def call(*args: Any, **kwargs: Any) -> Any:
            self.calls += 1
            self.entered.set()
            await self.release.wait()
            return await attr(*args, **kwargs)

        return call


async def test_the_lease_is_renewed_while_a_long_step_runs(js: JetStreamContext, store: SagaStore, owner: str) -> None:
    """Issue 6 defect 7: the lease moved only when the saga was saved, so a step longer than it (the record
    retries for 60 s against a 30 s lease) could be started again by a second driver."""
    world = World(js, store, owner)
    world.orq = world.orquestador(owner, lease_s=6, step_timeout_s=60, retry_for_s=60)
    gate = Gate(world.pagos, "authorize")
    world.orq.deps.pagos = gate  # type: ignore[assignment]
    saga = await world.saga()
    task = world.orq.start(saga)
    await gate.entered.wait()
    first = (await world.store.get(saga.reserva_id)).revision  # type: ignore[union-attr]

    async def renewed_twice() -> bool:
        current = await world.store.get(saga.reserva_id)
        return current is not None and current.revision >= first + 2

    await eventually(renewed_twice, timeout=30)
    other = world.orquestador("another-replica", lease_s=6)
    assert await other.resume_all(only_stale=True) == 0, "the lease is current: nobody else starts the step"
    gate.release.set()
    await asyncio.wait_for(task, 30)
    assert gate.calls == 1
    assert (await world.reserva(saga.reserva_id)).estado == Estado.CONFIRMADA


async def test_finished_sagas_leave_the_bucket_and_stay_readable(world: World) -> None:
    """Issue 6 defect 5: recovery read every saga ever written; now the bucket holds only what is unfinished."""
    world.capacidad(50)
    sagas = [await world.saga() for _ in range(12)]
    await asyncio.gather(*(world.orq.start(s) for s in sagas))
    assert await world.store.unfinished() == []
    with pytest.raises(NoKeysError):
        await world.store.kv.keys()
    for saga in sagas:
        assert await world.store.get(saga.reserva_id) is None
        archived = await world.reserva(saga.reserva_id)
        assert archived.estado == Estado.CONFIRMADA and archived.datos["autorizacion"].startswith("au_")
        assert pasos(archived) == [(p, "ok") for p in ("hold", "authorize", "confirm", "capture", "record")]


async def test_an_unfinished_saga_is_found_among_many_finished_ones(world: World) -> None:
    world.capacidad(50)
    done = [await world.saga() for _ in range(10)]
    await asyncio.gather(*(world.orq.start(s) for s in done))
    waiting = await world.saga()
    waiting.owner, waiting.lease_until = "dead-process", 0.0
    await world.store.save(waiting)
    assert [s.reserva_id for s in await world.store.unfinished()] == [waiting.reserva_id]


async def test_a_failed_save_answers_the_state_last_persisted(world: World) -> None:
    """Issue 6 defect 7: the driver returned its in-memory state, so the POST could answer an outcome that
    was never written. Here every save after the hold fails: the answer is the state before that."""
    saga = await world.saga()
    saves = {"n": 0}
    real_save = world.store.save

    async def failing_save(s: Saga) -> None:
        saves["n"] += 1
        if saves["n"] > 1:
            raise TimeoutError("NATS did not answer")
        await real_save(s)

    world.store.save = failing_save  # type: ignore[method-assign]
    answered = await asyncio.wait_for(world.orq.start(saga), 30)
    stored = await world.store.get(saga.reserva_id)
    assert stored is not None
    assert (answered.estado, answered.paso, answered.revision) == (stored.estado, stored.paso, stored.revision)
    assert answered.paso == "authorize" and not answered.terminada


async def test_finish_is_a_compare_and_set(store: SagaStore, world: World) -> None:
    """A cancellation that took the saga after our last write must not be purged by us."""
    saga = await world.saga()
    stale = await store.get(saga.reserva_id)
    assert stale is not None
    saga.anotar("cancelacion", "solicitada")
    await store.save(saga)
    with pytest.raises(SagaTomada):
        await store.finish(stale)
    assert await store.get(saga.reserva_id) is not None
    await store.finish(saga)
    assert await store.get(saga.reserva_id) is None
    await store.finish(saga)  # a retried purge that had landed is success


def test_two_workers_on_one_host_get_distinct_saga_owners() -> None:
    """Issue 6 defect 7: the default owner was the hostname, shared by every worker on the host."""
    code = "from services.reservations.bootstrap import ReservasSettings; print(ReservasSettings().instancia)"
    owners = {
        subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout for _ in "ab"
    }
    assert len(owners) == 2


async def test_who_may_see_and_cancel_a_reservation(world: World) -> None:
    """The access rules of handlers.ver / autorizar_cancelacion, on one finished reservation of u1 for ev1."""
    confirmed = await world.run(await world.saga())
    deps = deps_for(world)
    deps.eventos = FakeCatalogo(evento_info(organizador_id="org1"))

    def who(sub: str, *roles: str) -> Principal:
        return Principal(sub, frozenset({"comprador", *roles}), "https://eventflow.local")

    buyer, admin, organizer = who("u1"), who("x", "admin"), who("org1", "organizador")
    others = [who("u2"), who("org2", "organizador"), who("org1"), who("d1", "control")]  # org1 without the role
    for caller in (buyer, admin, organizer):
        assert (await handlers.ver(confirmed.reserva_id, caller, deps)).reserva_id == confirmed.reserva_id
    for caller in others:
        with pytest.raises(ReservaNoEncontrada):
            await handlers.ver(confirmed.reserva_id, caller, deps)
        with pytest.raises(ReservaNoEncontrada):
            await handlers.autorizar_cancelacion(confirmed.reserva_id, caller, deps)
    with pytest.raises(Prohibido):
        await handlers.autorizar_cancelacion(confirmed.reserva_id, organizer, deps)
    for caller in (buyer, admin):
        await handlers.autorizar_cancelacion(confirmed.reserva_id, caller, deps)


class Crash(BaseException):
    """The process dies here: nothing after it runs (not even `except Exception`)."""


class DiesAfter:
    """A port whose `method` takes effect and then the process dies, before the answer is seen."""

    def __init__(self, inner: Any, method: str) -> None:
        self.inner, self.method = inner, method

    def __getattr__(self, name: str) -> Any:
        attr = getattr(self.inner, name)
        if name != self.method:
            return attr

        async def call(*args: Any, **kwargs: Any) -> Any:
            await attr(*args, **kwargs)
            raise Crash

        return call


async def crash_after(world: World, saga: Saga, port: str, method: str) -> None:
    """Drive `saga` with `port`'s `method` killing the process right after its effect; then a restarted
    orchestrator (same owner, healthy ports) resumes every unfinished saga to its end."""
    deps = world.orq.deps
    dying = replace(deps, **{port: DiesAfter(getattr(deps, port), method)})
    first = Orquestador(world.store, dying, world.orq.config)
    with pytest.raises(Crash):
        await first.start(saga)
    restarted = world.orquestador(world.orq.config.owner)
    assert await restarted.resume_all() == 1
    await asyncio.gather(*restarted._tasks.values())


async def saga_writes(js: JetStreamContext, store: SagaStore) -> int:
    """Writes to the saga bucket so far (each one an fsync'd JetStream message)."""
    return int((await js.stream_info(f"KV_{store.bucket}")).state.last_seq)


async def test_a_purchase_writes_its_saga_state_three_times(js: JetStreamContext, world: World) -> None:
    """Created, before the pivot, purged: hold, authorize and confirm need no write between them."""
    saga = await world.saga(como_la_api=True)
    done = await world.run(saga)
    assert done.estado == Estado.CONFIRMADA
    assert await saga_writes(js, world.store) == 3


@pytest.mark.parametrize(
    ("port", "method"),
    [("inventario", "hold"), ("pagos", "authorize"), ("inventario", "confirm"), ("pagos", "capture")],
)
async def test_a_crash_right_after_an_unwritten_step_resumes_to_one_sale(world: World, port: str, method: str) -> None:
    """The state is not written after hold, authorize, confirm or capture: a restart re-runs from the last write,
    and each step answers as the first time: one hold, one authorization, one capture, one outcome event."""
    saga = await world.saga(como_la_api=True)
    await crash_after(world, saga, port, method)
    done = await world.reserva(saga.reserva_id)
    assert done.estado == Estado.CONFIRMADA, pasos(done)
    auth = done.datos["autorizacion"]
    assert world.pagos.estado == {auth: "captured"}, "one authorization, captured once"
    assert world.inventario.sold("ev1", saga.reserva_id)
    assert (await world.inventario.availability("ev1")).vendidas == 1
    events, _ = await world.reservas.load(saga.reserva_id)
    assert [e.type for e in events] == [RESERVA_CONFIRMADA]


async def test_a_crash_after_authorize_then_a_lost_hold_voids_the_unwritten_authorization(world: World) -> None:
    """The authorization the dead run got was never written down: the void registered at creation (by the
    authorize key) still finds it when the resumed saga unwinds (here its hold expired and the event sold out)."""
    clock = {"now": time.time()}
    world.inventario = FakeInventario(lambda: clock["now"], ev1=1)
    world.orq = world.orquestador(world.orq.config.owner)
    saga = await world.saga(como_la_api=True)
    deps = world.orq.deps
    first = Orquestador(world.store, replace(deps, pagos=DiesAfter(deps.pagos, "authorize")), world.orq.config)
    with pytest.raises(Crash):
        await first.start(saga)
    assert list(world.pagos.estado.values()) == ["authorized"]
    clock["now"] += 3600  # the hold expired ...
    rival = HoldRequest("rival", "ev1", "u2", 1, (), 60, None)
    await world.inventario.hold(rival)  # ... and someone else took the last ticket
    await world.inventario.confirm("ev1", "rival")
    restarted = world.orquestador(world.orq.config.owner)
    assert await restarted.resume_all() == 1
    await asyncio.gather(*restarted._tasks.values())
    done = await world.reserva(saga.reserva_id)
    assert done.estado == Estado.RECHAZADA and done.motivo == "agotado", pasos(done)
    assert list(world.pagos.estado.values()) == ["voided"], "no money held for a rejected reservation"


async def test_a_hold_refused_at_once_sends_no_void(world: World) -> None:
    """The void registered at creation is skipped when this very process knows it never sent the authorize."""
    world.capacidad(0)
    saga = await world.saga(como_la_api=True)
    done = await world.run(saga)
    assert done.estado == Estado.RECHAZADA
    assert world.pagos.calls["void"] == 0 and not world.pagos.ops


def test_a_reservation_rebuilt_from_its_outcome_does_not_claim_its_authorize_was_never_sent() -> None:
    """Read back from the log, nobody knows whether an authorize went out: a void must not be skipped."""
    outcome = {"reserva_id": "r1", "usuario_id": "u1", "evento_id": "e1", "cantidad": 2, "importe_centimos": 5000}
    saga = Saga.desde_resultado({**outcome, "estado": "confirmada"}, "2026-12-03T00:00:00+00:00")

    assert saga.pago_enviado is None
    assert compensacion_necesaria("void", saga)
