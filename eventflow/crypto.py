"""Personal data protection: envelope encryption and keyed pseudonyms.

- Every data subject gets its own data key (DEK, AES-256). Fields are sealed with AES-256-GCM under the
  DEK, with the subject id and field name as associated data, so a ciphertext cannot be moved to
  another user or field.
- The DEK is stored only wrapped by the master key (AES-256-GCM, tagged with the master key id, so the
  master key can be rotated by re-wrapping). Deleting a subject's wrapped DEK makes every copy of their
  data, including the immutable event log, unreadable (crypto-shredding).
- Lookups and uniqueness use HMAC-SHA256 pseudonyms of normalized values: stable, not reversible
  without the pseudonym key.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import os
import unicodedata
import uuid

from cryptography.hazmat.primitives.ciphers.aead import AESGCM

NONCE_BYTES = 12


def _b64(raw: bytes) -> str:
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def _unb64(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


class KeyRing:
    """Wraps and unwraps data keys with the master key(s); the current key id wraps new ones."""

    def __init__(self, keys: dict[str, bytes], current: str) -> None:
        if current not in keys:
            raise ValueError("the current master key id has no key")
        self._keys = {kid: AESGCM(key) for kid, key in keys.items()}
        self.current = current
        self.key_ids = frozenset(keys)

    def new_data_key(self) -> tuple[bytes, str]:
        dek = AESGCM.generate_key(bit_length=256)
        return dek, self.wrap(dek)

    def wrap(self, dek: bytes) -> str:
        nonce = os.urandom(NONCE_BYTES)
        sealed = self._keys[self.current].encrypt(nonce, dek, b"eventflow-dek")
        return f"{self.current}:{_b64(nonce + sealed)}"

    @staticmethod
    def key_id_of(wrapped: str) -> str:
        return wrapped.partition(":")[0]

    def rewrap(self, wrapped: str) -> str:
        """The same data key wrapped by the current master key (rotation); the data sealed with it is untouched."""
        return wrapped if self.key_id_of(wrapped) == self.current else self.wrap(self.unwrap(wrapped))

    def unwrap(self, wrapped: str) -> bytes:
        kid, _, body = wrapped.partition(":")
        raw = _unb64(body)
        return self._keys[kid].decrypt(raw[:NONCE_BYTES], raw[NONCE_BYTES:], b"eventflow-dek")


class FieldCipher:
    """Seals one subject's fields under its data key."""

    def __init__(self, dek: bytes, subject_id: str) -> None:
        self._aead = AESGCM(dek)
        self._subject = subject_id

    def seal(self, field: str, plaintext: str) -> str:
        nonce = os.urandom(NONCE_BYTES)
        aad = f"{self._subject}:{field}".encode()
        return _b64(nonce + self._aead.encrypt(nonce, plaintext.encode(), aad))

    def open(self, field: str, token: str) -> str:
        raw = _unb64(token)
        aad = f"{self._subject}:{field}".encode()
        return self._aead.decrypt(raw[:NONCE_BYTES], raw[NONCE_BYTES:], aad).decode()


def normalize(value: str) -> str:
    return unicodedata.normalize("NFKC", value).strip().casefold()


class Pseudonymizer:
    """Keyed, deterministic pseudonyms: equal inputs give equal tokens, nothing gives the input back."""

    def __init__(self, key: bytes) -> None:
        self._key = key

    def pseudonym(self, kind: str, value: str) -> str:
        digest = hmac.new(self._key, f"{kind}\x00{normalize(value)}".encode(), hashlib.sha256).hexdigest()
        return f"{kind}.{digest}"

    def id_for(self, kind: str, value: str) -> str:
        """A UUID derived from `value` with the key (HMAC): the same value gives the same id (so an
        Idempotency-Key retry finds its resource), and nobody without the key can compute it. Exact bytes,
        no normalization: two keys that differ only in case are two requests."""
        digest = hmac.new(self._key, f"id\x00{kind}\x00{value}".encode(), hashlib.sha256).digest()
        return str(uuid.UUID(bytes=digest[:16], version=4))
