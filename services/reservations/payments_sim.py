"""A card processor in test mode, with its own durable ledger in the KV bucket PASARELA_SIM.

The ledger is the processor's state, not ours: it survives our process being SIGKILLed, which is what lets the
saga's crash tests check "exactly one capture per confirmed reservation". It holds tokens (brand, last 4 and
the test behaviour; never the number or the CVC), authorizations with their state
(authorized -> captured -> refunded, authorized -> voided) and one record per operation key. An operation
record is made with a KV create, so two concurrent calls with one key produce one operation.
"""

from __future__ import annotations

import asyncio
import random
import re
import time
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from datetime import UTC, datetime
from typing import Any

import nats.errors
import orjson
from nats.js import JetStreamContext
from nats.js.errors import KeyNotFoundError, KeyWrongLastSequenceError, NotFoundError
from nats.js.kv import KeyValue

from eventflow.jetstream import ensure_bucket
from services.reservations.payments import (
    Authorization,
    CardDetails,
    Declined,
    InvalidCard,
    PaymentMethod,
    PaymentPermanentError,
    PaymentRetryableError,
)

BUCKET = "PASARELA_SIM"
APPROVE = "approve"
PROCESSING_ERROR = "processing_error"
# Numbers as in a card processor's test mode; any other valid number approves.
TEST_CARDS = {
    "4000000000000002": "card_declined",
    "4000000000009995": "insufficient_funds",
    "4000000000000069": "expired_card",
    "4000000000000127": "incorrect_cvc",
    "4000000000000119": PROCESSING_ERROR,
}
_NAMESPACE = uuid.UUID("5b0f3e52-7d0c-4f43-9a35-0c1c6e0a7c11")
_PLAIN_TOKEN = re.compile(r"^[A-Za-z0-9-]+$")
_ID = re.compile(r"^[A-Za-z0-9_-]+$")


def op_key(key: str) -> str:
    """KV key of an operation: ':'-separated parts become subject tokens, so a reference prefix is a filter."""
    return "op." + ".".join(p if _PLAIN_TOKEN.match(p) else "_" + p.encode().hex() for p in key.split(":"))


def luhn_ok(digits: str) -> bool:
    total = 0
    for i, ch in enumerate(reversed(digits)):
        d = int(ch) * (2 if i % 2 else 1)
        total += d - 9 if d > 9 else d
    return total % 10 == 0


def card_brand(digits: str) -> str | None:
    if digits.startswith("4"):
        return "visa"
    if 51 <= int(digits[:2]) <= 55 or 2221 <= int(digits[:4]) <= 2720:
        return "mastercard"
    if digits[:2] in ("34", "37"):
        return "amex"
    return None


def check_card(card: CardDetails, today: datetime) -> tuple[str, str]:
    """(digits, brand) of a card that can be tokenized, else InvalidCard with a processor-style code."""
    digits = card.numero.replace(" ", "").replace("-", "")
    if not (digits.isascii() and digits.isdigit() and 12 <= len(digits) <= 19 and luhn_ok(digits)):
        raise InvalidCard("incorrect_number")
    brand = card_brand(digits)
    if brand is None:
        raise InvalidCard("card_not_supported")
    expiry = re.fullmatch(r"(\d{2})/(\d{2})", card.vencimiento.strip())
    if not expiry or not 1 <= int(expiry[1]) <= 12:
        raise InvalidCard("invalid_expiry")
    if (2000 + int(expiry[2]), int(expiry[1])) < (today.year, today.month):
        raise InvalidCard("expired_card")
    if not (card.cvc.isascii() and card.cvc.isdigit() and 3 <= len(card.cvc) <= 4):
        raise InvalidCard("invalid_cvc")
    return digits, brand


class SimulatedPaymentGateway:
    def __init__(
        self,
        js: JetStreamContext,
        latency_s: float = 0.0,
        failure_rate: float = 0.0,
        rng: random.Random | None = None,
        *,
        replicas: int = 1,
    ) -> None:
        self.js, self.latency_s, self.failure_rate = js, latency_s, failure_rate
        self.rng = rng or random.Random()
        self.replicas = replicas
        self._bucket: KeyValue | None = None
        self._bucket_lock = asyncio.Lock()

    async def tokenize(self, card: CardDetails) -> PaymentMethod:
        digits, brand = check_card(card, datetime.now(UTC))
        async with self._call():
            token = f"tok_{uuid.uuid4().hex}"
            doc = {"marca": brand, "ultimos4": digits[-4:], "comportamiento": TEST_CARDS.get(digits, APPROVE)}
            await (await self._kv()).create(f"tok.{token}", orjson.dumps({**doc, "en": time.time()}))
            return PaymentMethod(token, brand, digits[-4:])

    async def authorize(self, key: str, method_token: str, importe_centimos: int) -> Authorization | Declined:
        async with self._call():
            record = await self._get(op_key(key)) or await self._authorize(key, method_token, importe_centimos)
        if record["tipo"] != "authorize":
            raise PaymentPermanentError(f"key {key!r} was used for a {record['tipo']}")
        if record["resultado"] == "rechazada":
            return Declined(record["codigo"])
        return Authorization(record["authorization_id"], record["importe_centimos"])

    async def capture(self, key: str, authorization_id: str) -> None:
        async with self._call():
            await self._transition(key, authorization_id, "capture", "authorized", "captured")

    async def void(self, key: str, authorization_id: str) -> None:
        """Only an uncaptured authorization can be voided; after a capture the saga must refund."""
        async with self._call():
            await self._transition(key, authorization_id, "void", "authorized", "voided")

    async def refund(self, key: str, authorization_id: str, importe_centimos: int) -> None:
        async with self._call():
            await self._transition(key, authorization_id, "refund", "captured", "refunded", importe_centimos)

    async def payments_for(self, reference: str) -> list[dict[str, Any]]:
        """Every operation whose key starts with the ':'-part `reference`, authorizations with their state.

        An audit read: the latency and failure knobs do not apply to it.
        """
        await self._kv()
        prefix = op_key(reference)
        records = [r for r in [await self._get(prefix)] if r]
        # Walk the stream by subject filter: a KV watcher may report "no more" before delivering everything.
        seq = 1
        while True:
            try:
                msg = await self.js.get_msg(f"KV_{BUCKET}", seq=seq, subject=f"$KV.{BUCKET}.{prefix}.>", next=True)
            except NotFoundError:
                break
            if not msg.seq:
                break
            if msg.data:
                records.append(orjson.loads(msg.data))
            seq = msg.seq + 1
        for record in records:
            if record.get("authorization_id") and (auth := await self._get(f"auth.{record['authorization_id']}")):
                record["estado"] = auth["estado"]
        return sorted(records, key=lambda r: r["en"])

    async def _authorize(self, key: str, token: str, importe_centimos: int) -> dict[str, Any]:
        if importe_centimos <= 0:
            raise PaymentPermanentError("the amount must be positive")
        method = await self._get(f"tok.{token}") if _ID.match(token) else None
        if method is None:
            raise PaymentPermanentError("unknown payment method token")
        behaviour = method["comportamiento"]
        if behaviour == PROCESSING_ERROR:
            raise PaymentRetryableError(PROCESSING_ERROR)
        record: dict[str, Any] = {"tipo": "authorize", "key": key, "importe_centimos": importe_centimos}
        if behaviour != APPROVE:
            return await self._record(key, {**record, "resultado": "rechazada", "codigo": behaviour})
        auth_id = f"au_{uuid.uuid5(_NAMESPACE, key).hex}"
        auth = {**record, "estado": "authorized", "marca": method["marca"], "ultimos4": method["ultimos4"], "por": {}}
        await self._create(f"auth.{auth_id}", auth)  # deterministic id: a concurrent twin creates the same one
        return await self._record(key, {**record, "resultado": "aprobada", "authorization_id": auth_id})

    async def _transition(
        self, key: str, auth_id: str, tipo: str, source: str, target: str, importe: int | None = None
    ) -> dict[str, Any]:
        if done := await self._get(op_key(key)):
            if done["tipo"] != tipo:
                raise PaymentPermanentError(f"key {key!r} was used for a {done['tipo']}")
            return done
        kv = await self._kv()
        while True:
            entry = await self._entry(f"auth.{auth_id}") if _ID.match(auth_id) else None
            if entry is None:
                raise PaymentPermanentError(f"unknown authorization {auth_id!r}")
            auth, revision = entry
            if auth["estado"] == target and (auth["por"].get(target) == key or tipo == "void"):
                break  # done before a crash without its operation record (or voided already: nothing to move)
            if auth["estado"] != source:
                raise PaymentPermanentError(f"cannot {tipo} an authorization that is {auth['estado']}")
            if importe is not None and not 0 < importe <= auth["importe_centimos"]:
                raise PaymentPermanentError("the refund must be positive and at most the captured amount")
            auth = {**auth, "estado": target, "por": {**auth["por"], target: key}}
            if importe is not None:
                auth["reembolsado_centimos"] = importe
            try:
                await kv.update(f"auth.{auth_id}", orjson.dumps(auth), last=revision)
                break
            except KeyWrongLastSequenceError:
                continue
        amount = importe if importe is not None else auth["importe_centimos"]
        return await self._record(
            key, {"tipo": tipo, "key": key, "resultado": "ok", "authorization_id": auth_id, "importe_centimos": amount}
        )

    async def _record(self, key: str, record: dict[str, Any]) -> dict[str, Any]:
        """Store the operation's result unless a twin call stored one first; return whichever is stored."""
        record["en"] = time.time()
        if await self._create(op_key(key), record):
            return record
        stored = await self._get(op_key(key))
        assert stored is not None, "operation records are never deleted"
        return stored

    async def _create(self, kv_key: str, doc: dict[str, Any]) -> bool:
        try:
            await (await self._kv()).create(kv_key, orjson.dumps(doc))
            return True
        except KeyWrongLastSequenceError:
            return False

    async def _get(self, kv_key: str) -> dict[str, Any] | None:
        entry = await self._entry(kv_key)
        return entry[0] if entry else None

    async def _entry(self, kv_key: str) -> tuple[dict[str, Any], int] | None:
        try:
            entry = await (await self._kv()).get(kv_key)
        except KeyNotFoundError:
            return None
        return orjson.loads(entry.value or b"{}"), int(entry.revision or 0)

    async def _kv(self) -> KeyValue:
        if self._bucket is None:
            async with self._bucket_lock:
                if self._bucket is None:
                    self._bucket = await ensure_bucket(self.js, BUCKET, replicas=self.replicas)
        return self._bucket

    @asynccontextmanager
    async def _call(self) -> AsyncIterator[None]:
        """Latency, then maybe a transient failure: before the operation, or after it (an ambiguous timeout)."""
        if self.latency_s:
            await asyncio.sleep(self.latency_s)
        fails = self.rng.random() < self.failure_rate
        if fails and self.rng.random() < 0.5:
            raise PaymentRetryableError("simulated transient failure")
        try:
            yield
        except nats.errors.Error as err:
            raise PaymentRetryableError("the payment provider did not answer") from err
        if fails:
            raise PaymentRetryableError("simulated timeout (the operation was done)")
