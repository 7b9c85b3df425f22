"""The orchestrator: drives each reservation's saga from its durable state, forward or backward.

Purchase: hold -> authorize -> confirm -> capture (pivot) -> record. Each step's compensation is registered
(and persisted) before the step runs; a failure unwinds the registered compensations in reverse, then marks
the reservation rechazada. The state is written before each step and after each result, one CAS write
carrying both ("after step N" is "before step N+1"), so a restarted process resumes exactly where the last
one stopped: every step and compensation is idempotent by reserva_id, so re-running the one in flight is safe.
A compensation that keeps failing ends in requiere_intervencion: written, logged at error level, counted.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import Counter
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import TypeVar

import nats.errors

from eventflow.errors import Unavailable
from eventflow.retry import retry_by_time
from services.reservations.domain import (
    COMPENSACION_DE,
    PASOS_CANCELACION,
    PASOS_COMPRA,
    Estado,
    Fase,
    PasoFallido,
    Saga,
)
from services.reservations.inventory import InventarioNoDisponible
from services.reservations.payments import PaymentRetryableError
from services.reservations.saga_store import SagaStore, SagaTomada
from services.reservations.steps import SagaDeps, compensacion_necesaria, run_paso

log = logging.getLogger(__name__)
T = TypeVar("T")

RETRYABLE: tuple[type[BaseException], ...] = (
    PaymentRetryableError,
    InventarioNoDisponible,
    Unavailable,
    TimeoutError,
    ConnectionError,
    OSError,
    nats.errors.Error,
)


@dataclass(frozen=True)
class SagaConfig:
    owner: str  # this process; restarting with the same owner resumes its sagas at once
    step_timeout_s: float = 10.0
    retry_for_s: float = 15.0  # forward steps before the pivot: then compensate (processing_error)
    record_retry_for_s: float = 60.0  # after the pivot: then requiere_intervencion
    compensation_retry_for_s: float = 30.0
    lease_s: float = 30.0


class Agotado(Exception):
    def __init__(self, paso: str, causa: BaseException) -> None:
        super().__init__(f"{paso}: {type(causa).__name__}: {causa}")
        self.paso = paso
        self.causa = causa


class Orquestador:
    def __init__(
        self,
        store: SagaStore,
        deps: SagaDeps,
        config: SagaConfig,
        on_intervention: Callable[[Saga], Awaitable[None]] | None = None,
    ) -> None:
        self.store = store
        self.deps = deps
        self.config = config
        self.on_intervention = on_intervention
        self.metrics: Counter[str] = Counter()
        self._tasks: dict[str, asyncio.Task[Saga]] = {}

    # -- running sagas ---------------------------------------------------------------------------
    def start(self, saga: Saga) -> asyncio.Task[Saga]:
        task = self._tasks.get(saga.reserva_id)
        if task is None:
            task = asyncio.create_task(self._drive(saga), name=f"saga:{saga.reserva_id}")
            self._tasks[saga.reserva_id] = task
            task.add_done_callback(lambda _: self._tasks.pop(saga.reserva_id, None))
        return task

    @property
    def activas(self) -> int:
        return len(self._tasks)

    def running(self, reserva_id: str) -> asyncio.Task[Saga] | None:
        return self._tasks.get(reserva_id)

    async def resume_all(self, only_stale: bool = False) -> int:
        """Start every unfinished saga that is ours or whose driver's lease ran out; CAS settles races."""
        resumed = 0
        now = time.time()
        for saga in await self.store.unfinished():
            if saga.reserva_id in self._tasks:
                continue
            mine = saga.owner == self.config.owner and not only_stale
            if mine or saga.lease_until < now:
                self.start(saga)
                resumed += 1
        self.metrics["reanudadas"] += resumed
        return resumed

    async def supervise(self) -> None:
        """Picks up sagas another replica (or a crashed earlier run) stopped driving."""
        while True:
            await asyncio.sleep(self.config.lease_s)
            try:
                await self.resume_all(only_stale=True)
            except Exception:
                log.exception("resuming stale sagas failed; will try again")

    async def shutdown(self, grace_s: float = 5.0) -> None:
        tasks = list(self._tasks.values())
        if tasks:
            _, pending = await asyncio.wait(tasks, timeout=grace_s)
            for task in pending:
                task.cancel()
            await asyncio.gather(*pending, return_exceptions=True)

    async def _drive(self, saga: Saga) -> Saga:
        try:
            if saga.owner != self.config.owner or saga.lease_until < time.time():
                await self._save(saga)  # take the lease; a CAS loss means another replica has it
            while not saga.terminada:
                if saga.fase == Fase.ADELANTE:
                    await self._adelante(saga)
                elif saga.fase == Fase.COMPENSANDO:
                    await self._compensar(saga)
                else:
                    await self._cancelar(saga)
        except SagaTomada:
            log.info("saga taken over by another driver", extra={"reserva_id": saga.reserva_id})
            return await self.store.get(saga.reserva_id) or saga
        except Exception:
            log.exception("saga driver failed; the supervisor resumes it", extra={"reserva_id": saga.reserva_id})
        return saga

    async def _save(self, saga: Saga) -> None:
        saga.arrendar(self.config.owner, self.config.lease_s)
        await self.store.save(saga)

    # -- the three phases ------------------------------------------------------------------------
    async def _adelante(self, saga: Saga) -> None:
        paso = saga.paso or PASOS_COMPRA[0]
        retry_for = self.config.record_retry_for_s if paso == "record" else self.config.retry_for_s
        try:
            detalle = await self._con_reintentos(paso, lambda: run_paso(paso, saga, self.deps), retry_for)
        except PasoFallido as fallo:
            saga.anotar(paso, "fallo", fallo.motivo)
            saga.motivo, saga.fase, saga.paso = fallo.motivo, Fase.COMPENSANDO, None
            await self._save(saga)  # the decision, before any of its effects: a restart must not go forward
            return
        except Agotado as err:
            if paso == "record":
                await self._intervencion(saga, err)
                return
            motivo = "processing_error" if isinstance(err.causa, PaymentRetryableError) else "no_disponible"
            saga.anotar(paso, "fallo", str(err))
            saga.motivo, saga.fase, saga.paso = motivo, Fase.COMPENSANDO, None
            await self._save(saga)
            return
        saga.anotar(paso, "ok", detalle)
        following = PASOS_COMPRA.index(paso) + 1
        if following == len(PASOS_COMPRA):
            saga.estado, saga.fase, saga.paso = Estado.CONFIRMADA, Fase.TERMINADA, None
            self.metrics["confirmadas"] += 1
        else:
            saga.paso = PASOS_COMPRA[following]
            saga.registrar(COMPENSACION_DE[saga.paso])
        await self._save(saga)

    async def _compensar(self, saga: Saga) -> None:
        """Entered with the decision to unwind already persisted; writes "compensation N done" merged with
        "before N+1" (a compensation with nothing to undo is skipped without a write)."""
        persisted = True
        for comp in saga.pendientes_de_compensar():
            if not compensacion_necesaria(comp, saga):
                saga.compensadas.append(comp)
                saga.anotar(comp, "omitido")
                continue
            if not persisted:
                await self._save(saga)
            persisted = False
            try:
                await self._con_reintentos(comp, lambda c=comp: run_paso(c, saga, self.deps), self._comp_retry)  # type: ignore[misc]
            except Agotado as err:
                await self._intervencion(saga, err)
                return
            saga.compensadas.append(comp)
            saga.anotar(comp, "compensado")
        try:
            await self._con_reintentos("reject", lambda: run_paso("reject", saga, self.deps), self._comp_retry)
        except Agotado as err:
            await self._intervencion(saga, err)
            return
        saga.anotar("reject", "ok", saga.motivo)
        saga.estado, saga.fase = Estado.RECHAZADA, Fase.TERMINADA
        self.metrics["rechazadas"] += 1
        await self._save(saga)

    async def _cancelar(self, saga: Saga) -> None:
        paso = saga.paso or PASOS_CANCELACION[0]
        try:
            detalle = await self._con_reintentos(paso, lambda: run_paso(paso, saga, self.deps), self._comp_retry)
        except Agotado as err:
            await self._intervencion(saga, err)
            return
        saga.anotar(paso, "ok", detalle)
        following = PASOS_CANCELACION.index(paso) + 1
        if following == len(PASOS_CANCELACION):
            saga.estado, saga.fase, saga.paso = Estado.CANCELADA, Fase.TERMINADA, None
            self.metrics["canceladas"] += 1
        else:
            saga.paso = PASOS_CANCELACION[following]
        await self._save(saga)

    @property
    def _comp_retry(self) -> float:
        return self.config.compensation_retry_for_s

    async def _intervencion(self, saga: Saga, err: Agotado) -> None:
        saga.anotar(err.paso, "fallo_persistente", str(err))
        saga.estado, saga.fase, saga.motivo = Estado.REQUIERE_INTERVENCION, Fase.TERMINADA, f"{err.paso}_fallido"
        self.metrics["requiere_intervencion"] += 1
        log.error(
            "saga needs manual intervention",
            extra={"reserva_id": saga.reserva_id, "paso": err.paso, "error": str(err)},
        )
        await self._save(saga)
        if self.on_intervention is not None:
            try:
                await self.on_intervention(saga)
            except Exception:
                log.exception("could not count an intervention", extra={"reserva_id": saga.reserva_id})

    async def _con_reintentos(self, paso: str, call: Callable[[], Awaitable[T]], retry_for: float) -> T:
        """Timeout per attempt, exponential backoff with jitter, bounded by time (not by attempts)."""

        def contar(err: Exception) -> None:
            log.warning("saga step failed; retrying", extra={"paso": paso, "error": type(err).__name__})
            self.metrics["reintentos"] += 1

        try:
            return await retry_by_time(
                lambda: asyncio.wait_for(call(), self.config.step_timeout_s),
                retry_for,
                retry_if=lambda err: isinstance(err, RETRYABLE),
                on_retry=contar,
                max_delay=2.0,
            )
        except RETRYABLE as err:
            raise Agotado(paso, err) from err
