"""Uniqueness claims in a JetStream KV bucket: create-if-absent is the only way to take a name.

A claim is decided on the CP side, never by reading Redis first. Keys should be pseudonyms
(see `eventflow.crypto.Pseudonymizer`), so the bucket holds no personal data. Reads go to the bucket's
stream leader (`leader_reads`): who holds a claim decides whether it is taken over or released.
"""

from __future__ import annotations

import contextlib
import time
from dataclasses import dataclass

import orjson
from nats.js.errors import KeyNotFoundError, KeyWrongLastSequenceError
from nats.js.kv import KeyValue

from eventflow.jetstream import require_connection


def leader_reads(kv: KeyValue) -> KeyValue:
    """The same bucket, with `get` answered by its stream leader (`STREAM.MSG.GET`).

    nats-py's `KeyValue.get` uses `DIRECT.GET` when the bucket's stream allows direct reads (nats-py's own
    buckets do not, but one made by another client may), and any replica, a lagging one too, answers that.
    Code that decides on a read (take over, release, delete) must see the latest value, so it uses this view.
    nats-py has no public way to ask, hence its private fields (pinned by tests/users/test_leader_reads.py).
    """
    if not kv._direct:
        return kv
    return KeyValue(name=kv._name, stream=kv._stream, pre=kv._pre, js=kv._js, direct=False)


@dataclass(frozen=True)
class Claim:
    key: str
    owner: str
    revision: int
    claimed_at: float


class UniquenessClaims:
    def __init__(self, kv: KeyValue) -> None:
        self.kv = leader_reads(kv)

    async def claim(self, key: str, owner: str) -> Claim:
        """Take `key` for `owner`; returns whoever holds it afterwards (compare `.owner`)."""
        value = orjson.dumps({"owner": owner, "at": time.time()})
        await require_connection(self.kv._js)  # refused now, not created later from the reconnect buffer
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
        await require_connection(self.kv._js)
        try:
            await self.kv.update(stale.key, value, last=stale.revision)
            return True
        except KeyWrongLastSequenceError:
            return False

    async def release(self, claim: Claim) -> None:
        """Give back a claim we hold (compensation when a later step of the same write failed)."""
        with contextlib.suppress(KeyWrongLastSequenceError, KeyNotFoundError):
            await self.kv.delete(claim.key, last=claim.revision)
