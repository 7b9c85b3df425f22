"""Master key rotation: a key ring with the current key and the previous ones, and the re-wrap of stored data keys.

The current master key is `EVENTFLOW_MASTER_KEY` / `EVENTFLOW_MASTER_KEY_ID`; previous ones, still able to
unwrap while data keys wrapped by them remain, are `EVENTFLOW_MASTER_KEYS_PREVIOUS` ("k1:<base64>,k0:<base64>").
Re-wrapping changes only the wrapping of each data key (compare-and-set on the entry's revision, so a concurrent
create, erasure or rotation is never overwritten); the data sealed under the data keys, in the log and the read
models, stays as it is. A previous key may be removed once `key_ids_in_use` no longer lists it.
"""

from __future__ import annotations

import base64
import os
from collections import Counter
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field

import orjson
from nats.js.errors import KeyNotFoundError, KeyWrongLastSequenceError
from nats.js.kv import KeyValue

from eventflow.config import Settings
from eventflow.crypto import KeyRing

PREVIOUS_ENV = "EVENTFLOW_MASTER_KEYS_PREVIOUS"
ATTEMPTS = 5


def previous_keys(text: str | None = None) -> dict[str, bytes]:
    text = os.environ.get(PREVIOUS_ENV, "") if text is None else text
    keys: dict[str, bytes] = {}
    for item in filter(None, (part.strip() for part in text.split(","))):
        kid, sep, encoded = item.partition(":")
        key = base64.b64decode(encoded) if sep else b""
        if not kid or len(key) != 32:
            raise ValueError(f"{PREVIOUS_ENV}: each item is <key id>:<base64 of 32 bytes>")
        keys[kid] = key
    return keys


def key_ring(settings: Settings, previous: str | None = None) -> KeyRing:
    """The current master key wraps; every key (current and previous) unwraps."""
    keys = {**previous_keys(previous), settings.master_key_id: settings.master_key_bytes}
    return KeyRing(keys, settings.master_key_id)


@dataclass(frozen=True)
class Wrapped:
    """Where a bucket keeps a wrapped data key: the whole value, or one field of a JSON document."""

    field: str | None = None

    def read(self, value: bytes) -> str | None:
        if self.field is None:
            return value.decode()
        wrapped = orjson.loads(value).get(self.field)
        return wrapped if isinstance(wrapped, str) else None

    def write(self, value: bytes, wrapped: str) -> bytes:
        if self.field is None:
            return wrapped.encode()
        return orjson.dumps({**orjson.loads(value), self.field: wrapped})


@dataclass
class Report:
    rewrapped: int = 0
    gone: int = 0  # deleted (erased) while the rotation ran
    in_use: Counter[str] = field(default_factory=Counter)


async def rewrap_bucket(
    kv: KeyValue, ring: KeyRing, where: Wrapped = Wrapped(), on_rewrap: Callable[[str], Awaitable[object]] | None = None
) -> Report:
    """Re-wrap every data key in `kv` whose master key is not the current one."""
    report = Report()
    try:
        names = await kv.keys()
    except Exception as err:  # nats-py raises NoKeysError for an empty bucket
        if type(err).__name__ != "NoKeysError":
            raise
        names = []
    for name in names:
        for _ in range(ATTEMPTS):
            try:
                entry = await kv.get(name)
            except KeyNotFoundError:
                report.gone += 1
                break
            wrapped = where.read(entry.value) if entry.value else None
            if wrapped is None or KeyRing.key_id_of(wrapped) == ring.current:
                break
            try:
                await kv.update(name, where.write(entry.value or b"", ring.rewrap(wrapped)), last=entry.revision)
            except KeyWrongLastSequenceError:
                continue  # changed meanwhile (re-created, erased, rotated elsewhere): read it again
            report.rewrapped += 1
            if on_rewrap is not None:
                await on_rewrap(name)
            break
    report.in_use = await key_ids_in_use(kv, where)
    return report


async def key_ids_in_use(kv: KeyValue, where: Wrapped = Wrapped()) -> Counter[str]:
    """How many data keys each master key id wraps now."""
    counts: Counter[str] = Counter()
    try:
        names = await kv.keys()
    except Exception as err:
        if type(err).__name__ != "NoKeysError":
            raise
        return counts
    for name in names:
        try:
            entry = await kv.get(name)
        except KeyNotFoundError:
            continue
        wrapped = where.read(entry.value) if entry.value else None
        if wrapped is not None:
            counts[KeyRing.key_id_of(wrapped)] += 1
    return counts
