"""Uniqueness claims in a JetStream KV bucket: create-if-absent is the only way to take a name.

A claim is decided on the CP side, never by reading Redis first. Keys should be pseudonyms
(see `eventflow.crypto.Pseudonymizer`), so the bucket holds no personal data.
"""

from __future__ import annotations

import contextlib
import time
from dataclasses import dataclass

import orjson
from nats.js.errors import KeyNotFoundError, KeyWrongLastSequenceError
from nats.js.kv import KeyValue


@dataclass(frozen=True)
class Claim:
    key: str
    owner: str
    revision: int
    claimed_at: float


class UniquenessClaims:
    def __init__(self, kv: KeyValue) -> None:
        self.kv = kv

    async def claim(self, key: str, owner: str) -> Claim:
        """Take `key` for `owner`; returns whoever holds it afterwards (compare `.owner`)."""
        value = orjson.dumps({"owner": owner, "at": time.time()})
        try:
            revision = await self.kv.create(key, value)
            return Claim(key, owner, revision, time.time())
        except KeyWrongLastSequenceError:
            current = await self.get(key)
            if current is None:  # released between our create and our read: try once more
                return await self.claim(key, owner)
            return current

    async def get(self, key: str) -> Claim | None:
        try:
            entry = await self.kv.get(key)
        except KeyNotFoundError:
            return None
        doc = orjson.loads(entry.value or b"{}")
        return Claim(key, doc["owner"], int(entry.revision or 0), float(doc.get("at", 0)))

    async def take_over(self, stale: Claim, owner: str) -> bool:
        """Replace a claim whose owner never came to exist; CAS on its revision so only one wins."""
        value = orjson.dumps({"owner": owner, "at": time.time()})
        try:
            await self.kv.update(stale.key, value, last=stale.revision)
            return True
        except KeyWrongLastSequenceError:
            return False

    async def release(self, claim: Claim) -> None:
        """Give back a claim we hold (compensation when a later step of the same write failed)."""
        with contextlib.suppress(KeyWrongLastSequenceError, KeyNotFoundError):
            await self.kv.delete(claim.key, last=claim.revision)
