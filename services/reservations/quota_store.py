"""Per-user quotas in their own KV bucket (CUPOS): one small key per (event, user), changed by compare-and-set.

A bucket of its own is a stream of its own, so its fsyncs run beside the inventory's instead of queueing behind
them (measured-here.md: separate streams fsync in parallel). A user rarely has two requests in flight, so a
plain CAS loop is enough here; the hot key is the event's inventory, which group-commits.
"""

from __future__ import annotations

import asyncio
import hashlib
import re
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, TypeVar

import nats.errors
from nats.js import JetStreamContext
from nats.js.errors import APIError, KeyWrongLastSequenceError, NotFoundError
from nats.js.kv import KeyValue

from eventflow.jetstream import ensure_bucket
from eventflow.retry import retry_by_time
from services.reservations.inventory import InventarioNoDisponible, LimitExceeded
from services.reservations.quota import UserQuota

BUCKET = "CUPOS"
# Retry by time, not count: an R3 leader election pauses writes for up to ~10 s (measured-here.md).
RETRY_FOR_S = 20.0
_PLAIN_ID = re.compile(r"^[-_a-zA-Z0-9]{1,64}$")
T = TypeVar("T")


def quota_key(evento_id: str, usuario_id: str) -> str:
    """Plain ids as they are; anything else (dots, long ids) hashed behind "=", which no plain id contains."""
    plain = _PLAIN_ID.match(usuario_id)
    token = usuario_id if plain else "=" + hashlib.sha256(usuario_id.encode("utf-8", "surrogatepass")).hexdigest()
    return f"{evento_id}.{token}"


def is_transient(err: Exception) -> bool:
    """May succeed if tried again (timeouts, no responders during an election, reconnects)."""
    if isinstance(err, APIError):
        return (err.code or 500) >= 500
    if isinstance(err, nats.errors.ConnectionClosedError | nats.errors.MaxPayloadError):
        return False
    return isinstance(err, nats.errors.Error | asyncio.TimeoutError | OSError)


async def read_latest(js: JetStreamContext, bucket: str, key: str) -> tuple[bytes, int] | None:
    """The key's value and revision from the stream leader (a direct get may be answered by a lagging
    replica): what a compare-and-set must start from. None if absent or deleted."""
    try:
        msg = await js.get_msg(f"KV_{bucket}", subject=f"$KV.{bucket}.{key}", direct=False)
    except NotFoundError:
        return None
    if (msg.headers or {}).get("KV-Operation") in ("DEL", "PURGE") or not msg.data or not msg.seq:
        return None
    return msg.data, int(msg.seq)


@dataclass
class QuotaStats:
    writes: int = 0
    conflicts: int = 0


class JetStreamQuotaStore:
    def __init__(self, js: JetStreamContext, kv: KeyValue, *, retry_for_s: float = RETRY_FOR_S) -> None:
        self.js, self.kv, self.retry_for_s = js, kv, retry_for_s
        self.stats = QuotaStats()

    @classmethod
    async def create(cls, js: JetStreamContext, *, replicas: int = 1, **options: Any) -> JetStreamQuotaStore:
        return cls(js, await ensure_bucket(js, BUCKET, replicas=replicas), **options)

    async def take(
        self, evento_id: str, usuario_id: str, reserva_id: str, cantidad: int, limite: int
    ) -> LimitExceeded | None:
        def take(quota: UserQuota) -> tuple[LimitExceeded | None, bool]:
            before = reserva_id in quota.reservas
            refused = quota.take(reserva_id, cantidad, limite)
            return refused, refused is None and not before

        return await self._change(quota_key(evento_id, usuario_id), take)

    async def give_back(self, evento_id: str, usuario_id: str, reserva_id: str) -> None:
        await self._change(quota_key(evento_id, usuario_id), lambda quota: (None, quota.give_back(reserva_id)))

    async def total(self, evento_id: str, usuario_id: str) -> int:
        found = await read_latest(self.js, BUCKET, quota_key(evento_id, usuario_id))
        return UserQuota.from_json(found[0]).total if found else 0

    async def _change(self, key: str, change: Callable[[UserQuota], tuple[T, bool]]) -> T:
        """Read, decide, write with CAS; on a conflict start over. An ambiguous timeout is retried by time:
        the re-read shows whether the write landed, and a replayed op changes nothing more."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self.retry_for_s

        async def attempt() -> T:
            while True:
                found = await read_latest(self.js, BUCKET, key)
                quota = UserQuota.from_json(found[0]) if found else UserQuota()
                result, changed = change(quota)
                if not changed:
                    return result
                try:
                    if found:
                        await self.kv.update(key, quota.to_json(), last=found[1])
                    else:
                        await self.kv.create(key, quota.to_json())
                except KeyWrongLastSequenceError:
                    self.stats.conflicts += 1
                    if loop.time() > deadline:
                        raise InventarioNoDisponible("too much contention on this user's quota; retry") from None
                    continue
                self.stats.writes += 1
                return result

        try:
            return await retry_by_time(attempt, self.retry_for_s, retry_if=is_transient)
        except Exception as err:
            if is_transient(err):
                raise InventarioNoDisponible("the quota store is not answering; retry") from err
            raise
