"""Saga state in the JetStream KV bucket SAGAS: one key per reserva_id, every write a compare-and-set.

`create` is the idempotency claim (create-if-absent on a key derived from user + Idempotency-Key); `save`
passes the revision it read, so two processes can never both drive one saga past the same point.
"""

from __future__ import annotations

import orjson
from nats.js.errors import KeyNotFoundError, KeyWrongLastSequenceError
from nats.js.kv import KeyValue

from eventflow.retry import retry_by_time
from services.reservations.domain import Saga

BUCKET = "SAGAS"
# Retry by time, not count: a leader change pauses writes for seconds (measured-here.md).
WRITE_RETRY_FOR_S = 20.0


class SagaYaExiste(Exception):
    """The key was already created: same Idempotency-Key (or a race with a duplicate)."""


class SagaTomada(Exception):
    """The revision moved: someone else (another replica) wrote this saga; stop driving it."""


def _not_cas(err: Exception) -> bool:
    """A write that timed out may or may not have landed: retrying a CAS is safe (it fails if it had)."""
    return not isinstance(err, KeyWrongLastSequenceError)


class SagaStore:
    def __init__(self, kv: KeyValue) -> None:
        self.kv = kv

    async def create(self, saga: Saga) -> None:
        value = orjson.dumps(saga.to_doc())
        try:
            saga.revision = await retry_by_time(
                lambda: self.kv.create(saga.reserva_id, value), WRITE_RETRY_FOR_S, retry_if=_not_cas
            )
        except KeyWrongLastSequenceError:
            saga.revision = await self._ours_after_ambiguous_write(saga.reserva_id, value, SagaYaExiste)

    async def save(self, saga: Saga) -> None:
        value = orjson.dumps(saga.to_doc())
        try:
            saga.revision = await retry_by_time(
                lambda: self.kv.update(saga.reserva_id, value, last=saga.revision), WRITE_RETRY_FOR_S, retry_if=_not_cas
            )
        except KeyWrongLastSequenceError:
            saga.revision = await self._ours_after_ambiguous_write(saga.reserva_id, value, SagaTomada)

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
        try:
            entry = await self.kv.get(reserva_id)
        except KeyNotFoundError:
            return None
        if not entry.value:
            return None
        return Saga.from_doc(orjson.loads(entry.value), int(entry.revision or 0))

    async def unfinished(self) -> list[Saga]:
        """Every saga not yet terminada: one pass over the bucket's latest values."""
        found: list[Saga] = []
        watcher = await self.kv.watchall(include_history=False)
        try:
            async for entry in watcher:
                if entry is None:
                    break
                if entry.operation is None and entry.value:
                    saga = Saga.from_doc(orjson.loads(entry.value), int(entry.revision or 0))
                    if not saga.terminada:
                        found.append(saga)
        finally:
            await watcher.stop()
        return found
