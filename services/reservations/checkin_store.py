"""Who entered: KV bucket CHECKIN, one key per ticket (`<evento_id>.<ticket_id>`), taken by create-if-absent.

The create is the decision (CP side): two doors scanning one ticket at the same moment race on one create, the
server accepts exactly one, the other reads who won and when. A create whose answer was lost is retried; if the
retry finds a value, it is ours when its bytes are ours (each attempt's value carries a nonce).

Keys are grouped by event, so the count of an event's check-ins is the number of messages on its subjects in
the bucket's stream: one consumer-info request, whatever the event's size (no key listing).

A cancellation takes the same key first (`anular`: a void, not an entry), so a scan and a cancellation racing on
one ticket get exactly one winner: a ticket already used cannot be refunded, a voided one lets no one in. Each
void also writes a marker under `_anuladas.<evento_id>.`, which the count of entries subtracts.
"""

from __future__ import annotations

import contextlib
import secrets
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime

import orjson
from nats.js import JetStreamContext
from nats.js.api import AckPolicy, ConsumerConfig, DeliverPolicy
from nats.js.errors import KeyNotFoundError, KeyWrongLastSequenceError
from nats.js.kv import KeyValue

from eventflow.claims import leader_reads
from eventflow.jetstream import ensure_bucket
from eventflow.retry import retry_by_time
from services.reservations.quota_store import is_transient

BUCKET = "CHECKIN"
RETRY_FOR_S = 20.0


def _transient(err: Exception) -> bool:
    """A refused create is an answer, not a failure: never retried."""
    return not isinstance(err, KeyWrongLastSequenceError) and is_transient(err)


VOIDS = "_anuladas"


@dataclass(frozen=True)
class Entrada:
    """The first entry with a ticket: when, and by which door account."""

    primera: bool  # True: this scan is the one that let the ticket in
    en: str
    por: str
    anulada: bool = False  # the ticket's reservation was cancelled first: no entry


class CheckinStore:
    def __init__(self, js: JetStreamContext, kv: KeyValue) -> None:
        self.js = js
        self.kv = leader_reads(kv)

    @classmethod
    async def open(cls, js: JetStreamContext, replicas: int = 1) -> CheckinStore:
        return cls(js, await ensure_bucket(js, BUCKET, replicas))

    async def registrar(self, evento_id: str, ticket_id: str, por: str, escaneo: str | None = None) -> Entrada:
        """`escaneo`: the door's id for this scan (its Idempotency-Key). A door that resends a scan whose answer
        it lost (the offline queue does) gets the first answer again, not "already used" for the entry it made."""
        key = f"{evento_id}.{ticket_id}"
        en = datetime.now(UTC).isoformat()
        value = orjson.dumps({"en": en, "por": por, "n": secrets.token_hex(8), "escaneo": escaneo})
        try:
            await retry_by_time(lambda: self.kv.create(key, value), RETRY_FOR_S, retry_if=_transient)
            return Entrada(True, en, por)
        except KeyWrongLastSequenceError:
            pass
        stored = await retry_by_time(lambda: self.kv.get(key), RETRY_FOR_S, retry_if=_transient)
        if stored.value == value:  # our first attempt had landed; its answer was lost
            return Entrada(True, en, por)
        doc = orjson.loads(stored.value or b"{}")
        first_en, first_por = str(doc.get("en", "")), str(doc.get("por", ""))
        if escaneo is not None and doc.get("escaneo") == escaneo and first_por == por:
            return Entrada(True, first_en, first_por)  # the same scan again: the entry it made
        return Entrada(False, first_en, first_por, anulada=bool(doc.get("anulada")))

    async def anular(self, evento_id: str, ticket_id: str) -> str | None:
        """Void the ticket before its reservation is cancelled: None when voided (now or before), or the time of
        the entry that already used it (then the reservation must not be cancelled)."""
        key = f"{evento_id}.{ticket_id}"
        value = orjson.dumps({"anulada": True, "en": datetime.now(UTC).isoformat(), "n": secrets.token_hex(8)})
        try:
            await retry_by_time(lambda: self.kv.create(key, value), RETRY_FOR_S, retry_if=_transient)
        except KeyWrongLastSequenceError:
            stored = await retry_by_time(lambda: self.kv.get(key), RETRY_FOR_S, retry_if=_transient)
            doc = orjson.loads(stored.value or b"{}")
            if not doc.get("anulada"):
                return str(doc.get("en", ""))
            if stored.value != value:
                return None  # voided by an earlier cancellation attempt: its marker was written then
        marker = f"{VOIDS}.{evento_id}.{ticket_id}"
        with contextlib.suppress(KeyWrongLastSequenceError):  # a retry of ours, or a crash between the two
            await retry_by_time(lambda: self.kv.create(marker, b"1"), RETRY_FOR_S, retry_if=_transient)
        return None

    async def primera(self, evento_id: str, ticket_id: str) -> str | None:
        """When the ticket was first used (None: never, or voided)."""
        try:
            entry = await self.kv.get(f"{evento_id}.{ticket_id}")
        except KeyNotFoundError:
            return None
        doc = orjson.loads(entry.value or b"{}") if entry.value else {}
        return None if not doc or doc.get("anulada") else str(doc.get("en"))

    async def contar(self, evento_id: str) -> int:
        """Check-ins of an event: the messages on its subjects (each key is written once, by its create), less
        the voided tickets (each has a marker)."""
        return await self._messages(f"{evento_id}.>") - await self._messages(f"{VOIDS}.{evento_id}.>")

    async def _messages(self, keys: str) -> int:
        stream = f"KV_{BUCKET}"
        name = f"cuenta-{uuid.uuid4().hex[:12]}"
        config = ConsumerConfig(
            name=name,
            filter_subject=f"$KV.{BUCKET}.{keys}",
            deliver_policy=DeliverPolicy.ALL,
            ack_policy=AckPolicy.NONE,
            inactive_threshold=5.0,
            mem_storage=True,
            num_replicas=1,
        )
        info = await self.js.add_consumer(stream, config)
        try:
            return int(info.num_pending or 0)
        finally:
            with contextlib.suppress(Exception):  # else it expires by itself (inactive_threshold)
                await self.js.delete_consumer(stream, name)
