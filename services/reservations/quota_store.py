"""Per-user quotas in their own KV bucket (CUPOS): one small key per (event, user), changed by compare-and-set.

A bucket of its own is a stream of its own, so its fsyncs run beside the inventory's instead of queueing behind
them (measured-here.md: separate streams fsync in parallel). A user rarely has two requests in flight, so a
plain CAS loop is enough here; the hot key is the event's inventory, which group-commits.
"""

from __future__ import annotations

import asyncio
import hashlib
import re
from collections import OrderedDict
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
    """Remembers, per key, the state and revision this process last read or wrote: the next change starts its
    compare-and-set from there (no read when nobody else wrote since; a conflict reloads from the leader), and a
    key never seen is first tried as a create. So a user's first purchase in an event costs one write, no read."""

    def __init__(
        self, js: JetStreamContext, kv: KeyValue, *, retry_for_s: float = RETRY_FOR_S, cache_size: int = 10_000
    ) -> None:
        self.js, self.kv, self.retry_for_s, self.cache_size = js, kv, retry_for_s, cache_size
        self.stats = QuotaStats()
        self._known: OrderedDict[str, tuple[bytes, int] | None] = OrderedDict()

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

    async def total(self, evento_id: str, usuario_id: str, *, reciente: bool = False) -> int:
        """The user's tickets in the event; `reciente`: as this process last knew it (a pre-check, no read)."""
        key = quota_key(evento_id, usuario_id)
        found = self._known.get(key) if reciente else await read_latest(self.js, BUCKET, key)
        return UserQuota.from_json(found[0]).total if found else 0

    async def _change(self, key: str, change: Callable[[UserQuota], tuple[T, bool]]) -> T:
        """Read, decide, write with CAS; on a conflict start over. An ambiguous timeout is retried by time:
        the re-read shows whether the write landed, and a replayed op changes nothing more."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self.retry_for_s

        async def attempt() -> T:
            found, verified = self._known.get(key), False  # a guess: a CAS write checks it, nothing else does
            while True:
                quota = UserQuota.from_json(found[0]) if found else UserQuota()
                result, changed = change(quota)
                if not changed and verified:
                    return result
                if not changed:  # "nothing to do" decided on a guess: make sure, from the leader
                    found, verified = await read_latest(self.js, BUCKET, key), True
                    self._remember(key, found)
                    continue
                value = quota.to_json()
                try:
                    if found:
                        revision = await self.kv.update(key, value, last=found[1])
                    else:
                        revision = await self.kv.create(key, value)
                except KeyWrongLastSequenceError:
                    self.stats.conflicts += 1
                    if loop.time() > deadline:
                        raise InventarioNoDisponible("too much contention on this user's quota; retry") from None
                    found, verified = await read_latest(self.js, BUCKET, key), True
                    self._remember(key, found)
                    continue
                except BaseException:
                    self._known.pop(key, None)  # an ambiguous write: what is stored is unknown now
                    raise
                self.stats.writes += 1
                self._remember(key, (value, revision))
                return result

        try:
            return await retry_by_time(attempt, self.retry_for_s, retry_if=is_transient)
        except Exception as err:
            if is_transient(err):
                raise InventarioNoDisponible("the quota store is not answering; retry") from err
            raise

    def _remember(self, key: str, found: tuple[bytes, int] | None) -> None:
        self._known[key] = found
        self._known.move_to_end(key)
        while len(self._known) > self.cache_size:
            self._known.popitem(last=False)
