"""The orchestrator: drives each reservation's saga from its durable state, forward or backward.

Purchase: hold -> authorize -> confirm -> capture (the pivot) -> record. Each step's compensation is registered
(and persisted) before the step runs; a failure before the pivot unwinds the registered compensations in
reverse, then marks the reservation rechazada. From the pivot on the saga only goes forward: a capture the
processor refuses took no money (unwind), but a capture or record whose outcome stays unknown after its retries
ends in requiere_intervencion, never in an automatic refund of a buyer who may hold tickets.

The state is written when the saga is created, before a step whose compensation is not registered yet, before
the pivot, and at every decision to unwind (one CAS write each). Between those writes a restarted process
re-runs the steps since the last one: every step and compensation is idempotent by reserva_id, so each answers
as it did the first time (a purchase thus costs 3 writes of its own state, not 6: docs/performance.md).
While a step runs its lease is renewed, so no second driver starts it. Whatever a step raises, the saga
ends: a business "no" unwinds, a retryable error is retried by time, anything else unwinds before the pivot and
needs an operator after it; a saga resumed too many times (a crash loop) needs an operator too. A finished
saga's key is purged once its outcome event is stored (saga_store.py).
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
import orjson
from nats.js.errors import APIError, InvalidBucketNameError, InvalidKeyError
from prometheus_client import Histogram

from eventflow.errors import DomainError, Unavailable
from eventflow.retry import retry_by_time
from services.reservations.domain import (
    COMPENSACION_DE,
    MAX_REANUDACIONES,
    PASOS_CANCELACION,
    PASOS_COMPRA,
    PERSISTIR_ANTES,
    Estado,
    Fase,
    PasoFallido,
    Saga,
)
from services.reservations.payments import PaymentRetryableError
from services.reservations.saga_store import ReservationArchive, SagaStore, SagaTomada
from services.reservations.steps import SagaDeps, compensacion_necesaria, run_step

log = logging.getLogger(__name__)
T = TypeVar("T")

# From the pivot on, a purchase never compensates on an unknown outcome.
DESPUES_DEL_PIVOTE = ("capture", "record")


def retryable(err: BaseException) -> bool:
    """Transient: the same call may succeed later (timeouts, a leader election, a provider hiccup)."""
    if isinstance(err, PaymentRetryableError | Unavailable | TimeoutError | ConnectionError | OSError):
        return True
    if isinstance(err, InvalidKeyError | InvalidBucketNameError):
        return False
    if isinstance(err, APIError):
        return err.code is None or err.code >= 500
    return isinstance(err, nats.errors.Error)


@dataclass(frozen=True)
class SagaConfig:
    owner: str  # this process; restarting with the same owner resumes its sagas at once
    step_timeout_s: float = 10.0
    retry_for_s: float = 15.0  # forward steps before the pivot: then compensate (processing_error)
    record_retry_for_s: float = 60.0  # the pivot and after: then requiere_intervencion
    compensation_retry_for_s: float = 30.0
    lease_s: float = 30.0


class Agotado(Exception):
    """A step gave up: its retries ran out, or it raised something no retry can fix (`permanente`)."""

    def __init__(self, paso: str, causa: BaseException) -> None:
        super().__init__(f"{paso}: {type(causa).__name__}: {causa}")
        self.paso = paso
        self.causa = causa
        self.permanente = not retryable(causa)

    @property
    def motivo(self) -> str:
        """Why the buyer's reservation was rejected, in the words of the API's `motivo`."""
        if not self.permanente and (self.paso == "authorize" or isinstance(self.causa, PaymentRetryableError)):
            return "processing_error"  # the processor did not answer in time, or answered "try again"
        if not self.permanente:
            return "no_disponible"
        if isinstance(self.causa, DomainError):
            return self.causa.slug.replace("-", "_")
        return "error_interno"


class Orquestador:
    def __init__(
        self,
        store: SagaStore,
        deps: SagaDeps,
        config: SagaConfig,
        on_intervention: Callable[[Saga], Awaitable[None]] | None = None,
        archivo: ReservationArchive | None = None,
    ) -> None:
        self.store = store
        self.deps = deps
        self.config = config
        self.on_intervention = on_intervention
        self.archivo = archivo or ReservationArchive(deps.reservas)
        self.metrics: Counter[str] = Counter()
        # Unregistered: eventflow.metrics exports it with the process's other saga figures.
        self.step_seconds = Histogram(
            "eventflow_saga_step_duration_seconds", "One saga step, retries included.", ["paso"], registry=None
        )
        self._tasks: dict[tuple[str, bool], asyncio.Task[Saga]] = {}  # (reserva_id, is a cancellation)

    # -- running sagas ---------------------------------------------------------------------------
    def start(self, saga: Saga, resumed: bool = False) -> asyncio.Task[Saga]:
        """One task per reservation and phase: a cancellation started while the purchase's task is still
        finishing (its purge retrying) is a task of its own."""
        key = (saga.reserva_id, saga.fase == Fase.CANCELANDO)
        task = self._tasks.get(key)
        if task is None:
            task = asyncio.create_task(self._drive(saga, resumed), name=f"saga:{saga.reserva_id}")
            self._tasks[key] = task
            task.add_done_callback(lambda done: self._tasks.pop(key, None) if self._tasks.get(key) is done else None)
        return task

    @property
    def activas(self) -> int:
        return len(self._tasks)

    def running(self, reserva_id: str, cancelacion: bool = False) -> asyncio.Task[Saga] | None:
        return self._tasks.get((reserva_id, cancelacion))

    async def resume_all(self, only_stale: bool = False) -> int:
        """Start every unfinished saga that is ours or whose driver's lease ran out; CAS settles races."""
        resumed = 0
        now = time.time()
        for saga in await self.store.unfinished():
            if (saga.reserva_id, saga.fase == Fase.CANCELANDO) in self._tasks:
                continue
            mine = saga.owner == self.config.owner and not only_stale
            if mine or saga.lease_until < now:
                self.start(saga, resumed=True)
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

    async def _drive(self, saga: Saga, resumed: bool) -> Saga:
        """Returns the saga as it is durably known: a write that failed leaves the state last persisted."""
        try:
            if resumed and (done := await self._already_finished(saga)) is not None:
                await self._settle(done)  # it may have died between its outcome event and the settle
                await self.store.finish(saga)
                return done
            if resumed:
                saga.reanudaciones += 1
            if resumed or saga.owner != self.config.owner or saga.lease_until < time.time():
                await self._save(saga)  # take the lease; a CAS loss means another replica has it
            if saga.reanudaciones > MAX_REANUDACIONES and not saga.terminada:
                await self._crash_loop(saga)
            while not saga.terminada:
                if saga.fase == Fase.ADELANTE:
                    await self._adelante(saga)
                elif saga.fase == Fase.COMPENSANDO:
                    await self._compensar(saga)
                else:
                    await self._cancelar(saga)
        except SagaTomada:
            log.info("saga taken over by another driver", extra={"reserva_id": saga.reserva_id})
            return await self.store.get(saga.reserva_id) or await self.archivo.get(saga.reserva_id) or saga
        except Exception:
            self.metrics["fallos_del_conductor"] += 1
            log.exception("saga driver failed; the supervisor resumes it", extra={"reserva_id": saga.reserva_id})
            return saga if _outcome_recorded(saga) else _as_persisted(saga)
        return saga

    async def _save(self, saga: Saga) -> None:
        saga.arrendar(self.config.owner, self.config.lease_s)
        await self.store.save(saga)

    async def _already_finished(self, saga: Saga) -> Saga | None:
        """A resumed saga whose outcome is already stored must not run again: a twin request (same
        Idempotency-Key) or a second cancellation that re-created the key after the first one had finished
        (and died before its own check), or a saga that died between its outcome event and its purge."""
        archived = await self.archivo.get(saga.reserva_id)
        if archived is None:
            return None
        if saga.fase == Fase.CANCELANDO and archived.estado != Estado.CANCELADA:
            return None  # the purchase's outcome: this cancellation has yet to run
        return archived

    async def _crash_loop(self, saga: Saga) -> None:
        """Resumed too often without progress: before the pivot unwind (nothing is lost), after it stop."""
        err = Agotado(saga.paso or "reanudar", RuntimeError(f"resumed {saga.reanudaciones} times without progress"))
        if saga.fase == Fase.ADELANTE and saga.paso not in DESPUES_DEL_PIVOTE:
            saga.reanudaciones = 0
            await self._unwind(saga, saga.paso or PASOS_COMPRA[0], "error_interno", str(err))
        else:
            await self._intervencion(saga, err)

    async def _settle(self, saga: Saga) -> None:
        """Housekeeping once the outcome is stored: the inventory forgets the sale's entry. It cannot change the
        outcome, so when it keeps failing the saga still ends; the entry stays, logged and counted."""
        try:
            await retry_by_time(
                lambda: self.deps.inventario.settle(saga.evento_id, saga.reserva_id),
                self.config.record_retry_for_s,
                retry_if=retryable,
                max_delay=2.0,
            )
        except Exception:
            self.metrics["sin_liquidar"] += 1
            log.exception("could not settle a recorded sale in the inventory", extra={"reserva_id": saga.reserva_id})

    async def _finish(self, saga: Saga, counter: str) -> None:
        """The outcome event is stored: count it, then purge the saga's key (a failed purge is resumed)."""
        await self.store.finish(saga)
        self.metrics[counter] += 1

    # -- the three phases ------------------------------------------------------------------------
    async def _adelante(self, saga: Saga) -> None:
        paso = saga.paso or PASOS_COMPRA[0]
        forward_only = paso in DESPUES_DEL_PIVOTE
        retry_for = self.config.record_retry_for_s if forward_only else self.config.retry_for_s
        if time.time() > saga.lease_until - self.config.lease_s / 3:
            # Steps since the last write ran long: write (a CAS, which renews the lease) before the next one, so
            # a driver whose lease another replica took stops here (SagaTomada) instead of holding and
            # confirming a sale the other driver also settles. The fast path never gets here.
            await self._save(saga)
        try:
            detalle = await self._attempt(paso, saga, retry_for, retry_all=forward_only)
        except PasoFallido as fallo:
            await self._unwind(saga, paso, fallo.motivo, fallo.motivo)
            return
        except Agotado as err:
            if forward_only:
                await self._intervencion(saga, err)
            else:
                await self._unwind(saga, paso, err.motivo, str(err))
            return
        saga.anotar(paso, "ok", detalle)
        saga.reanudaciones = 0
        following = PASOS_COMPRA.index(paso) + 1
        if following == len(PASOS_COMPRA):
            saga.estado, saga.fase, saga.paso = Estado.CONFIRMADA, Fase.TERMINADA, None
            await self._settle(saga)
            await self._finish(saga, "confirmadas")
            return
        saga.paso = PASOS_COMPRA[following]
        compensacion = COMPENSACION_DE[saga.paso]
        nueva = compensacion is not None and compensacion not in saga.compensaciones
        saga.registrar(compensacion)
        if nueva or saga.paso in PERSISTIR_ANTES:
            await self._save(saga)

    async def _unwind(self, saga: Saga, paso: str, motivo: str, detalle: str) -> None:
        """The decision to unwind, persisted before any of its effects: a restart must not go forward."""
        saga.anotar(paso, "fallo", detalle)
        saga.motivo, saga.fase, saga.paso = motivo, Fase.COMPENSANDO, None
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
                await self._attempt(comp, saga, self.config.compensation_retry_for_s, retry_all=True)
            except (Agotado, PasoFallido) as err:
                await self._intervencion(saga, _gave_up(comp, err))
                return
            saga.compensadas.append(comp)
            saga.anotar(comp, "compensado")
            saga.reanudaciones = 0
        try:
            await self._attempt("reject", saga, self.config.compensation_retry_for_s, retry_all=True)
        except (Agotado, PasoFallido) as err:
            await self._intervencion(saga, _gave_up("reject", err))
            return
        saga.anotar("reject", "ok", saga.motivo)
        saga.estado, saga.fase = Estado.RECHAZADA, Fase.TERMINADA
        await self._finish(saga, "rechazadas")

    async def _cancelar(self, saga: Saga) -> None:
        paso = saga.paso or PASOS_CANCELACION[0]
        try:
            detalle = await self._attempt(paso, saga, self.config.compensation_retry_for_s, retry_all=True)
        except (Agotado, PasoFallido) as err:
            await self._intervencion(saga, _gave_up(paso, err))
            return
        saga.anotar(paso, "ok", detalle)
        saga.reanudaciones = 0
        following = PASOS_CANCELACION.index(paso) + 1
        if following == len(PASOS_CANCELACION):
            saga.estado, saga.fase, saga.paso = Estado.CANCELADA, Fase.TERMINADA, None
            await self._settle(saga)
            await self._finish(saga, "canceladas")
            return
        saga.paso = PASOS_CANCELACION[following]
        await self._save(saga)

    async def _intervencion(self, saga: Saga, err: Agotado) -> None:
        saga.anotar(err.paso, "fallo_persistente", str(err))
        saga.estado, saga.fase, saga.motivo = Estado.REQUIERE_INTERVENCION, Fase.TERMINADA, f"{err.paso}_fallido"
        self.metrics["requiere_intervencion"] += 1
        log.error(
            "saga needs manual intervention",
            extra={"reserva_id": saga.reserva_id, "paso": err.paso, "error": str(err)},
        )
        await self._save(saga)  # kept in the bucket, terminal, for an operator
        if self.on_intervention is not None:
            try:
                await self.on_intervention(saga)
            except Exception:
                log.exception("could not count an intervention", extra={"reserva_id": saga.reserva_id})

    # -- one step: retries, timeouts, and the lease kept while it runs ----------------------------
    async def _attempt(self, paso: str, saga: Saga, retry_for: float, *, retry_all: bool) -> str | None:
        """Run step `paso` until it answers; raises PasoFallido (its business no) or Agotado.

        `retry_all`: also retry errors not known to be transient (compensations and steps after the pivot
        have no better option than trying again); otherwise such an error gives up at once.
        """
        step = self._with_retries(paso, lambda: run_step(paso, saga, self.deps), retry_for, retry_all)
        work = asyncio.ensure_future(step)
        started = time.perf_counter()
        work.add_done_callback(lambda _: self.step_seconds.labels(paso).observe(time.perf_counter() - started))
        try:
            while True:
                done, _ = await asyncio.wait({work}, timeout=self.config.lease_s / 3)
                if done:
                    return work.result()
                try:
                    await self.store.renew_lease(saga, self.config.owner, self.config.lease_s)
                except SagaTomada:
                    raise  # another driver has it: stop ours (the step is cancelled below)
                except Exception as err:  # NATS hiccup: the lease may lapse, and the CAS still protects
                    log.warning("could not renew a saga's lease", extra={"error": type(err).__name__})
        finally:
            if not work.done():
                work.cancel()
                await asyncio.gather(work, return_exceptions=True)

    async def _with_retries(self, paso: str, call: Callable[[], Awaitable[T]], retry_for: float, retry_all: bool) -> T:
        """Timeout per attempt, exponential backoff with jitter, bounded by time (not by attempts)."""

        def worth_retrying(err: Exception) -> bool:
            if isinstance(err, PasoFallido):
                return False
            if retryable(err):
                return True
            refused = isinstance(err, DomainError) and err.status < 500  # e.g. VentaInconsistente: never passes
            return retry_all and not refused

        def contar(err: Exception) -> None:
            log.warning("saga step failed; retrying", extra={"paso": paso, "error": type(err).__name__})
            self.metrics["reintentos"] += 1

        try:
            return await retry_by_time(
                lambda: asyncio.wait_for(call(), self.config.step_timeout_s),
                retry_for,
                retry_if=worth_retrying,
                on_retry=contar,
                max_delay=2.0,
            )
        except PasoFallido:
            raise
        except Exception as err:
            if not retryable(err):
                log.exception("saga step raised an error no retry can fix", extra={"paso": paso})
            raise Agotado(paso, err) from err


def _gave_up(paso: str, err: Agotado | PasoFallido) -> Agotado:
    """A compensation has no business "no": whatever stops it needs an operator."""
    return err if isinstance(err, Agotado) else Agotado(paso, err)


def _outcome_recorded(saga: Saga) -> bool:
    """Terminal states other than requiere_intervencion are reached only once their outcome event is stored."""
    return saga.terminada and saga.estado != Estado.REQUIERE_INTERVENCION


def _as_persisted(saga: Saga) -> Saga:
    if not saga.persistido:
        return saga
    persisted = Saga.from_doc(orjson.loads(saga.persistido), saga.revision)
    persisted.persistido = saga.persistido
    return persisted
