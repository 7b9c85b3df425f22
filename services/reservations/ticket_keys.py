"""Each event's ticket-signing key pair (Ed25519), kept on the CP side: KV bucket TICKET_KEYS, one key per event.

The private key is sealed under the master key (envelope: a fresh data key per event, wrapped by the master
key, as eventflow/signing_keys.py seals the token issuer's key), so neither the bucket nor a backup holds it in
clear; the public key is stored beside it in clear and published (`GET /api/checkin/claves/{evento_id}`), so a
scanner verifies codes offline. A pair is made the first time an event needs one (create-if-absent: replicas
racing make one, the losers use the winner's), and never changes: a printed ticket stays valid.

Per event rather than one key for everything: a door only ever trusts the key of the event it checks, a leaked
key forges tickets for one event only, and a key can be dropped with its event.
"""

from __future__ import annotations

import base64
from collections import OrderedDict
from typing import Any

import orjson
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey
from cryptography.hazmat.primitives.serialization import Encoding, NoEncryption, PrivateFormat, PublicFormat
from nats.js import JetStreamContext
from nats.js.errors import KeyNotFoundError, KeyWrongLastSequenceError
from nats.js.kv import KeyValue

from eventflow.claims import leader_reads
from eventflow.crypto import FieldCipher, KeyRing
from eventflow.jetstream import ensure_bucket
from eventflow.retry import retry_by_time
from services.reservations.quota_store import is_transient

BUCKET = "TICKET_KEYS"
RETRY_FOR_S = 20.0
CACHE_SIZE = 1024


def _b64(raw: bytes) -> str:
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def _unb64(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def _transient(err: Exception) -> bool:
    """A refused create is an answer, not a failure: never retried."""
    return not isinstance(err, KeyWrongLastSequenceError) and is_transient(err)


class TicketKeys:
    def __init__(self, kv: KeyValue, ring: KeyRing) -> None:
        self.kv = leader_reads(kv)
        self.ring = ring
        self._private: OrderedDict[str, Ed25519PrivateKey] = OrderedDict()
        self._public: OrderedDict[str, Ed25519PublicKey] = OrderedDict()

    @classmethod
    async def open(cls, js: JetStreamContext, ring: KeyRing, replicas: int = 1) -> TicketKeys:
        return cls(await ensure_bucket(js, BUCKET, replicas), ring)

    async def firmante(self, evento_id: str) -> Ed25519PrivateKey:
        """The event's private key, made now if it has none yet."""
        if (cached := self._private.get(evento_id)) is not None:
            return cached
        doc = await self._stored(evento_id) or await self._create(evento_id)
        dek = self.ring.unwrap(str(doc["dek"]))
        raw = _unb64(FieldCipher(dek, evento_id).open("ed25519", str(doc["privada"])))
        key = Ed25519PrivateKey.from_private_bytes(raw)
        self._remember(self._private, evento_id, key)
        return key

    async def publica(self, evento_id: str, *, crear: bool = False) -> Ed25519PublicKey | None:
        """The event's public key; None if it has none (and `crear` is False)."""
        if (cached := self._public.get(evento_id)) is not None:
            return cached
        doc = await self._stored(evento_id)
        if doc is None:
            if not crear:
                return None
            doc = await self._create(evento_id)
        key = Ed25519PublicKey.from_public_bytes(_unb64(str(doc["publica"])))
        self._remember(self._public, evento_id, key)
        return key

    async def verifica(self, evento_id: str, firmado: bytes, firma: bytes) -> bool:
        key = await self.publica(evento_id)
        if key is None:
            return False  # no ticket of this event was ever issued
        try:
            key.verify(firma, firmado)
        except InvalidSignature:
            return False
        return True

    async def _create(self, evento_id: str) -> dict[str, Any]:
        private = Ed25519PrivateKey.generate()
        raw = private.private_bytes(Encoding.Raw, PrivateFormat.Raw, NoEncryption())
        public = private.public_key().public_bytes(Encoding.Raw, PublicFormat.Raw)
        dek, wrapped = self.ring.new_data_key()
        doc = {
            "alg": "Ed25519",
            "publica": _b64(public),
            "dek": wrapped,
            "privada": FieldCipher(dek, evento_id).seal("ed25519", _b64(raw)),
        }
        value = orjson.dumps(doc)
        try:
            await retry_by_time(lambda: self.kv.create(evento_id, value), RETRY_FOR_S, retry_if=_transient)
        except KeyWrongLastSequenceError:  # another replica made it first (or our retry found our own)
            stored = await self._stored(evento_id)
            assert stored is not None, "a create was refused, so the key exists"
            return stored
        return doc

    async def _stored(self, evento_id: str) -> dict[str, Any] | None:
        async def get() -> dict[str, Any] | None:
            try:
                entry = await self.kv.get(evento_id)
            except KeyNotFoundError:
                return None
            return orjson.loads(entry.value) if entry.value else None

        return await retry_by_time(get, RETRY_FOR_S, retry_if=_transient)

    @staticmethod
    def _remember(cache: OrderedDict[str, Any], evento_id: str, key: Any) -> None:
        cache[evento_id] = key
        while len(cache) > CACHE_SIZE:
            cache.popitem(last=False)


def jwk(evento_id: str, key: Ed25519PublicKey) -> dict[str, str]:
    """The public key as a JWK (RFC 8037): what a scanner (or WebCrypto's importKey) takes."""
    raw = key.public_bytes(Encoding.Raw, PublicFormat.Raw)
    return {"kty": "OKP", "crv": "Ed25519", "x": _b64(raw), "kid": evento_id, "use": "sig", "alg": "EdDSA"}
