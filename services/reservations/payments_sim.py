"""A card processor in test mode, with its own durable ledger in the KV bucket PASARELA_SIM.

The ledger is the processor's state, not ours: it survives our process being SIGKILLed, which is what lets the
saga's crash tests check "exactly one capture per confirmed reservation". Every write is an fsync, so a sale
costs it two: tokens are self-contained (signed, never stored), and each payment is ONE record per reference
(the key without its last ':'-part, i.e. the reserva_id), created by the authorize and moved by compare-and-set
through authorized -> captured -> refunded or authorized -> voided, with the keys of the operations applied to
it. Idempotency by key is therefore decided inside one record: a create or a CAS, never two writes.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import hmac
import random
import re
import secrets
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager, suppress
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
SIGNING_KEY = "config.token-key"  # written once per bucket, not per sale
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
_PLAIN_TOKEN = re.compile(r"^[A-Za-z0-9-]+$")
_SUBJECT_TOKEN = re.compile(r"^(?:[A-Za-z0-9-]+|_(?:[0-9a-f]{2})+)$")


def _subject(parts: list[str]) -> str:
    """':'-parts as subject tokens (others hex-encoded), so a reference prefix is a subject filter."""
    return ".".join(p if _PLAIN_TOKEN.match(p) else "_" + p.encode().hex() for p in parts)


def reference_of(key: str) -> list[str]:
    """The ':'-parts that name the payment an operation key belongs to: "<reserva_id>:capture" -> [reserva_id]."""
    parts = key.split(":")
    return parts[:-1] if len(parts) > 1 else parts


def record_key(key: str) -> str:
    """KV key of the payment record an operation key belongs to."""
    return "pay." + _subject(reference_of(key))


def _starts_with(key: str, reference: list[str]) -> bool:
    return key.split(":")[: len(reference)] == reference


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


def _b64(raw: bytes) -> str:
    return base64.urlsafe_b64encode(raw).rstrip(b"=").decode()


def _unb64(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def sign_token(key: bytes, method: dict[str, Any]) -> str:
    """tok_<payload>.<HMAC-SHA256>: the brand, last 4 and test behaviour travel in the token, unforgeable."""
    payload = _b64(orjson.dumps(method))
    return f"tok_{payload}.{_b64(hmac.new(key, payload.encode(), hashlib.sha256).digest())}"


def verify_token(key: bytes, token: str) -> dict[str, Any] | None:
    """The token's payload if this processor signed it, else None."""
    payload, _, mac = token.removeprefix("tok_").partition(".")
    try:
        expected = hmac.new(key, payload.encode(), hashlib.sha256).digest()
        if not token.startswith("tok_") or not hmac.compare_digest(expected, _unb64(mac)):
            return None
        method = orjson.loads(_unb64(payload))
    except (ValueError, orjson.JSONDecodeError):
        return None
    return method if isinstance(method, dict) else None


class SimulatedPaymentGateway:
    def __init__(
        self,
        js: JetStreamContext,
        latency_s: float = 0.0,
        failure_rate: float = 0.0,
        rng: random.Random | None = None,
        *,
        replicas: int = 1,
        signing_key: bytes | None = None,
    ) -> None:
        """`signing_key` signs the tokens; by default one random key stored once in the bucket, so tokens
        stay valid across restarts and between processes sharing the ledger."""
        self.js, self.latency_s, self.failure_rate = js, latency_s, failure_rate
        self.rng = rng or random.Random()
        self.replicas = replicas
        self._signing_key = signing_key
        self._bucket: KeyValue | None = None
        self._bucket_lock = asyncio.Lock()

    async def tokenize(self, card: CardDetails) -> PaymentMethod:
        digits, brand = check_card(card, datetime.now(UTC))
        async with self._call():
            await self._kv()
            assert self._signing_key is not None
            method = {"marca": brand, "ultimos4": digits[-4:], "comportamiento": TEST_CARDS.get(digits, APPROVE)}
            token = sign_token(self._signing_key, {**method, "en": round(time.time(), 3)})
            return PaymentMethod(token, brand, digits[-4:])

    async def authorize(self, key: str, method_token: str, importe_centimos: int) -> Authorization | Declined:
        async with self._call():
            record = await self._authorize(key, method_token, importe_centimos)
        if record["key"] != key:
            raise self._reused(key, record)
        if record["resultado"] == "rechazada":
            return Declined(record["codigo"])
        if record["resultado"] == "anulada":
            return Declined("authorization_voided")
        return Authorization(record["authorization_id"], record["importe_centimos"])

    async def capture(self, key: str, authorization_id: str) -> None:
        async with self._call():
            await self._transition(key, authorization_id, "capture", "authorized", "captured")

    async def void(self, key: str, authorize_key: str) -> None:
        """A technical cancel: by the authorize call's key. With no record yet, ONE create of a voided record
        (resultado "anulada"), so a late authorize with that key finds it and authorizes nothing."""
        where = record_key(authorize_key)
        if record_key(key) != where:
            raise PaymentPermanentError(f"key {key!r} does not belong to the payment of {authorize_key!r}")
        async with self._call():
            while True:
                record = await self._get(where)
                if record is None:
                    if await self._create_voided(where, authorize_key, key):
                        return
                    continue
                if record["resultado"] != "aprobada":
                    return  # declined, or voided before it existed: nothing is held
                await self._transition(key, record["authorization_id"], "void", "authorized", "voided")
                return

    async def refund(self, key: str, authorization_id: str, importe_centimos: int) -> None:
        async with self._call():
            await self._transition(key, authorization_id, "refund", "captured", "refunded", importe_centimos)

    async def payments_for(self, reference: str) -> list[dict[str, Any]]:
        """Every operation whose key starts with the ':'-parts of `reference`, each with its payment's state.

        An audit read: the latency and failure knobs do not apply to it.
        """
        await self._kv()
        parts = reference.split(":")
        found: dict[str, dict[str, Any]] = {}
        for n in range(1, len(parts) + 1):  # the payment of `reference` itself, or of a shorter prefix of it
            if record := await self._get("pay." + _subject(parts[:n])):
                found[record["key"]] = record
        # Walk the stream by subject filter: a KV watcher may report "no more" before delivering everything.
        seq, subject = 1, f"$KV.{BUCKET}.pay.{_subject(parts)}.>"
        while True:
            try:
                msg = await self.js.get_msg(f"KV_{BUCKET}", seq=seq, subject=subject, next=True)
            except NotFoundError:
                break
            if not msg.seq:
                break
            if msg.data:
                record = orjson.loads(msg.data)
                found[record["key"]] = record  # a later revision of the same record replaces an earlier one
            seq = msg.seq + 1
        operations = [op for record in found.values() for op in _operations(record)]
        return sorted((op for op in operations if _starts_with(op["key"], parts)), key=lambda op: op["en"])

    async def _authorize(self, key: str, token: str, importe_centimos: int) -> dict[str, Any]:
        """The payment record of `key`'s reference: the stored one, or one made now with ONE create."""
        kv, where = await self._kv(), record_key(key)
        assert self._signing_key is not None
        method = verify_token(self._signing_key, token)
        problem: Exception | None = None
        if importe_centimos <= 0:
            problem = PaymentPermanentError("the amount must be positive")
        elif method is None or method.get("comportamiento") is None:
            problem = PaymentPermanentError("unknown payment method token")
        elif method["comportamiento"] == PROCESSING_ERROR:
            problem = PaymentRetryableError(PROCESSING_ERROR)
        if problem is not None or method is None:  # not recorded: the stored result, if any, still answers
            if stored := await self._get(where):
                return stored
            raise problem or PaymentPermanentError("unknown payment method token")
        record: dict[str, Any] = {"tipo": "authorize", "key": key, "importe_centimos": importe_centimos}
        if method["comportamiento"] != APPROVE:
            record |= {"resultado": "rechazada", "codigo": method["comportamiento"]}
        else:
            record |= {"resultado": "aprobada", "authorization_id": "au_" + where.removeprefix("pay.")}
            record |= {"estado": "authorized", "marca": method["marca"], "ultimos4": method["ultimos4"], "ops": []}
        record["en"] = time.time()
        try:
            await kv.create(where, orjson.dumps(record))
            return record
        except KeyWrongLastSequenceError:  # a twin call (or an earlier attempt) created it first
            stored = await self._get(where)
            assert stored is not None, "payment records are never deleted"
            return stored

    async def _transition(
        self, key: str, auth_id: str, tipo: str, source: str, target: str, importe: int | None = None
    ) -> None:
        """ONE compare-and-set of the payment record: the new state plus `key` among the applied operations."""
        where = "pay." + auth_id.removeprefix("au_")
        if not (auth_id.startswith("au_") and all(_SUBJECT_TOKEN.match(t) for t in where[4:].split("."))):
            raise PaymentPermanentError(f"unknown authorization {auth_id!r}")
        if record_key(key) != where:
            raise PaymentPermanentError(f"key {key!r} does not belong to authorization {auth_id!r}")
        kv = await self._kv()
        while True:
            entry = await self._entry(where)
            if entry is None or entry[0].get("resultado") != "aprobada":
                raise PaymentPermanentError(f"unknown authorization {auth_id!r}")
            record, revision = entry
            if key == record["key"] or any(op["key"] == key for op in record["ops"]):
                done = next((op for op in record["ops"] if op["key"] == key), record)
                if done["tipo"] != tipo:
                    raise self._reused(key, record)
                return  # applied before (maybe by a call whose answer was lost): nothing moves twice
            if not (record["estado"] == target == "voided"):  # voiding a voided authorization moves nothing
                if record["estado"] != source:
                    raise PaymentPermanentError(f"cannot {tipo} an authorization that is {record['estado']}")
                if importe is not None and not 0 < importe <= record["importe_centimos"]:
                    raise PaymentPermanentError("the refund must be positive and at most the captured amount")
            amount = importe if importe is not None else record["importe_centimos"]
            op = {"tipo": tipo, "key": key, "importe_centimos": amount, "en": time.time()}
            updated = {**record, "estado": target, "ops": [*record["ops"], op]}
            try:
                await kv.update(where, orjson.dumps(updated), last=revision)
                return
            except KeyWrongLastSequenceError:
                continue

    async def _create_voided(self, where: str, authorize_key: str, key: str) -> bool:
        now = time.time()
        record = {
            "tipo": "authorize",
            "key": authorize_key,
            "importe_centimos": 0,
            "resultado": "anulada",
            "estado": "voided",
            "ops": [{"tipo": "void", "key": key, "importe_centimos": 0, "en": now}],
            "en": now,
        }
        try:
            await (await self._kv()).create(where, orjson.dumps(record))
            return True
        except KeyWrongLastSequenceError:  # the authorize (or a twin void) got there first: look again
            return False

    @staticmethod
    def _reused(key: str, record: dict[str, Any]) -> PaymentPermanentError:
        used = next((op["tipo"] for op in [record, *record.get("ops", [])] if op["key"] == key), None)
        if used:
            return PaymentPermanentError(f"key {key!r} was used for a {used}")
        return PaymentPermanentError(f"key {key!r}: its reference already has a payment, by key {record['key']!r}")

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
                    bucket = await ensure_bucket(self.js, BUCKET, replicas=self.replicas)
                    if self._signing_key is None:
                        self._signing_key = await self._load_signing_key(bucket)
                    self._bucket = bucket
        return self._bucket

    @staticmethod
    async def _load_signing_key(bucket: KeyValue) -> bytes:
        """The bucket's token key: created once (the first process wins the create), read by every other."""
        with suppress(KeyWrongLastSequenceError):
            await bucket.create(SIGNING_KEY, secrets.token_bytes(32))
        entry = await bucket.get(SIGNING_KEY)
        assert entry.value, "the token key is never deleted"
        return entry.value

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


def _operations(record: dict[str, Any]) -> list[dict[str, Any]]:
    """A payment record as the operations it holds, in the shape callers of payments_for expect."""
    authorize = {k: v for k, v in record.items() if k not in ("ops", "marca", "ultimos4")}
    shared = {"resultado": "ok", "authorization_id": record.get("authorization_id"), "estado": record.get("estado")}
    return [authorize, *({**shared, **op} for op in record.get("ops", []))]
