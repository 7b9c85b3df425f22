"""Saga state in the JetStream KV bucket SAGAS (one key per reserva_id, every write a compare-and-set) and the
archive of finished reservations (their last outcome event in the RESERVAS stream).

`create` is the idempotency claim (create-if-absent on a key derived from user + Idempotency-Key); `save`
passes the revision it read, so two processes can never both drive one saga past the same point.

The bucket holds only sagas in flight (and the few that need an operator): a finished saga's outcome event,
appended by its last step, carries everything a reader needs (`Saga.resultado`), so `finish` purges the key,
again by compare-and-set, leaving a purge marker that expires by itself (MARKER_TTL_S). Recovery therefore
reads only what is unfinished, whatever the history; the RESERVAS stream (never deleted) is the retention.
"""

from __future__ import annotations

import nats.errors
import orjson
from nats.js import JetStreamContext
from nats.js.errors import KeyNotFoundError, KeyWrongLastSequenceError
from nats.js.kv import KeyValue

from eventflow.contracts import RESERVA_CANCELADA, RESERVA_CONFIRMADA, RESERVA_RECHAZADA
from eventflow.errors import Unavailable
from eventflow.eventstore import WRONG_LAST_SEQUENCE, EventStore, OutcomeUnknown
from eventflow.jetstream import NatsUnreachable, ensure_bucket, require_connection
from eventflow.retry import retry_by_time
from services.reservations.domain import Estado, Saga

BUCKET = "SAGAS"
# Retry by time, not count: a leader change pauses writes for seconds (measured-here.md).
WRITE_RETRY_FOR_S = 20.0
# A purge marker only has to outlive the purge itself; expiring it keeps the bucket's scan to sagas in flight.
MARKER_TTL_S = 5
READ_RETRY_FOR_S = 8.0  # a read during a leader election: within a client's timeout, then 503 + Retry-After
OUTCOMES = {
    RESERVA_CONFIRMADA: Estado.CONFIRMADA,
    RESERVA_RECHAZADA: Estado.RECHAZADA,
    RESERVA_CANCELADA: Estado.CANCELADA,
}


class SagaYaExiste(Exception):
    """The key was already created: same Idempotency-Key (or a race with a duplicate)."""


class SagaTomada(Exception):
    """The revision moved: someone else (another replica) wrote this saga; stop driving it."""


def _not_cas(err: Exception) -> bool:
    """A write that timed out may or may not have landed: retrying a CAS is safe (it fails if it had)."""
    return not isinstance(err, KeyWrongLastSequenceError) and getattr(err, "err_code", None) not in WRONG_LAST_SEQUENCE


class SagaStore:
    def __init__(self, js: JetStreamContext, kv: KeyValue, bucket: str = BUCKET) -> None:
        self.js, self.kv, self.bucket = js, kv, bucket

    @classmethod
    async def open(cls, js: JetStreamContext, bucket: str = BUCKET, replicas: int = 1) -> SagaStore:
        return cls(js, await ensure_bucket(js, bucket, replicas), bucket)

    async def create(self, saga: Saga) -> None:
        """NatsUnreachable when no attempt went out (nothing can start later: no reconnect buffer holds it);
        OutcomeUnknown when one did and no answer came (it may land, and its supervisor would then run it)."""
        value = orjson.dumps(saga.to_doc())
        sent = False

        async def create_while_connected() -> int:
            nonlocal sent
            await require_connection(self.js)  # connected: returns without yielding, so this is the hand-over
            sent = True
            return await self.kv.create(saga.reserva_id, value)

        try:
            saga.revision = await retry_by_time(
                create_while_connected,
                WRITE_RETRY_FOR_S,
                retry_if=lambda err: _not_cas(err) and not isinstance(err, NatsUnreachable),
            )
        except KeyWrongLastSequenceError:
            saga.revision = await self._ours_after_ambiguous_write(saga.reserva_id, value, SagaYaExiste)
        except Exception as err:
            if sent and _not_cas(err):
                raise OutcomeUnknown(saga.reserva_id) from err
            raise
        saga.persistido = value

    async def save(self, saga: Saga) -> None:
        value = orjson.dumps(saga.to_doc())
        try:
            saga.revision = await retry_by_time(
                lambda: self.kv.update(saga.reserva_id, value, last=saga.revision), WRITE_RETRY_FOR_S, retry_if=_not_cas
            )
        except KeyWrongLastSequenceError:
            saga.revision = await self._ours_after_ambiguous_write(saga.reserva_id, value, SagaTomada)
        saga.persistido = value

    async def renew_lease(self, saga: Saga, owner: str, lease_s: float) -> None:
        """Extend the lease of a saga whose step is still running: the document as last written, with only
        its lease moved (the step's results are not decided yet)."""
        doc = orjson.loads(saga.persistido) if saga.persistido else saga.to_doc()
        renewed = Saga.from_doc(doc, saga.revision)
        renewed.arrendar(owner, lease_s)
        await self.save(renewed)
        saga.revision, saga.persistido = renewed.revision, renewed.persistido
        saga.owner, saga.lease_until = renewed.owner, renewed.lease_until

    async def finish(self, saga: Saga) -> None:
        """Purge a finished saga's key if nobody wrote it since we did (its outcome event is the record now)."""
        headers = {
            "KV-Operation": "PURGE",
            "Nats-Rollup": "sub",
            "Nats-Expected-Last-Subject-Sequence": str(saga.revision),
        }
        subject = f"$KV.{self.bucket}.{saga.reserva_id}"
        try:
            await retry_by_time(
                lambda: self.js.publish(subject, b"", headers=headers, msg_ttl=MARKER_TTL_S),
                WRITE_RETRY_FOR_S,
                retry_if=_not_cas,
            )
        except Exception as err:
            if _not_cas(err):
                raise
            if await self.get(saga.reserva_id) is not None:  # absent: our purge had landed the first time
                raise SagaTomada(saga.reserva_id) from None

    async def _ours_after_ambiguous_write(self, key: str, value: bytes, error: type[Exception]) -> int:
        """A retried write that finds its own bytes there had landed the first time: that is success."""
        try:
            entry = await self.kv.get(key)
        except KeyNotFoundError:
            raise error(key) from None
        if entry.value == value:
            return int(entry.revision or 0)
        raise error(key)

    async def get(self, reserva_id: str) -> Saga | None:
        """The saga in flight (or waiting for an operator); None once finished (see ReservationArchive)."""
        await require_connection(self.js)  # NATS away: a 503 now, not after the request's whole timeout
        try:
            entry = await self.kv.get(reserva_id)
        except KeyNotFoundError:
            return None
        if not entry.value:
            return None
        saga = Saga.from_doc(orjson.loads(entry.value), int(entry.revision or 0))
        saga.persistido = entry.value
        return saga

    async def unfinished(self) -> list[Saga]:
        """Every saga not yet terminada: one pass over the bucket, which holds only what is in flight."""
        found: list[Saga] = []
        watcher = await self.kv.watchall(include_history=False)
        try:
            async for entry in watcher:
                if entry is None:
                    break
                if entry.operation is None and entry.value:
                    saga = Saga.from_doc(orjson.loads(entry.value), int(entry.revision or 0))
                    saga.persistido = entry.value
                    if not saga.terminada:
                        found.append(saga)
        finally:
            await watcher.stop()
        return found


def _timed_out(err: Exception) -> bool:
    return isinstance(err, TimeoutError | nats.errors.TimeoutError)


class ReservationArchive:
    """Finished reservations, read from their last outcome event on the RESERVAS stream (kept forever)."""

    def __init__(self, reservas: EventStore) -> None:
        self.reservas = reservas

    async def get(self, reserva_id: str, *, direct: bool = False) -> Saga | None:
        """The reservation as its last outcome event left it (every event of a reservation is an outcome).
        `direct`: any replica may answer, for looks whose "absent" is checked again on the leader later."""
        try:  # a leader change times reads out for seconds: bounded retry, then a 503 rather than a 500
            last = await retry_by_time(
                lambda: self.reservas.last(reserva_id, direct=direct), READ_RETRY_FOR_S, retry_if=_timed_out
            )
        except (TimeoutError, nats.errors.TimeoutError):
            raise Unavailable("the reservation log did not answer in time", retry_after_s=2) from None
        if last is None or last.type not in OUTCOMES:
            return None
        return Saga.desde_resultado({**last.data, "estado": OUTCOMES[last.type].value}, last.occurred_at)
