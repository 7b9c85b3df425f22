from __future__ import annotations

import asyncio
import os
import uuid

import pytest
from cryptography.exceptions import InvalidTag

from eventflow.claims import UniquenessClaims
from eventflow.crypto import FieldCipher, KeyRing, Pseudonymizer
from eventflow.jetstream import connect, ensure_bucket


@pytest.fixture
async def claims(settings):
    nc = await connect(settings.nats_url, "test")
    kv = await ensure_bucket(nc.jetstream(), "TEST_CLAIMS")
    yield UniquenessClaims(kv)
    await nc.drain()


async def test_twelve_owners_racing_for_one_key_leave_exactly_one_holder(claims):
    key = f"email.{uuid.uuid4().hex}"
    results = await asyncio.gather(*(claims.claim(key, f"owner{i}") for i in range(12)))
    winners = {r.owner for r in results}
    assert len(winners) == 1
    assert sum(r.owner == f"owner{i}" for i, r in enumerate(results)) == 1
    assert (await claims.get(key)).owner in winners


async def test_claiming_again_for_the_same_owner_is_idempotent(claims):
    key = f"email.{uuid.uuid4().hex}"
    assert (await claims.claim(key, "me")).owner == "me"
    assert (await claims.claim(key, "me")).owner == "me"


async def test_release_frees_the_key_and_take_over_is_compare_and_set(claims):
    key = f"doc.{uuid.uuid4().hex}"
    held = await claims.claim(key, "ghost")
    assert await claims.take_over(held, "a") is True
    assert await claims.take_over(held, "b") is False  # revision moved on: only one takes over
    current = await claims.get(key)
    assert current.owner == "a"
    await claims.release(current)
    assert await claims.get(key) is None
    assert (await claims.claim(key, "c")).owner == "c"


def test_field_cipher_round_trips_and_binds_ciphertext_to_subject_and_field():
    ring = KeyRing({"k1": os.urandom(32)}, "k1")
    dek, wrapped = ring.new_data_key()
    assert ring.unwrap(wrapped) == dek and wrapped.startswith("k1:")
    cipher = FieldCipher(dek, "user-1")
    token = cipher.seal("email", "ana@example.com")
    assert "ana" not in token
    assert cipher.open("email", token) == "ana@example.com"
    with pytest.raises(InvalidTag):
        cipher.open("nombre", token)
    with pytest.raises(InvalidTag):
        FieldCipher(dek, "user-2").open("email", token)


def test_a_data_key_wrapped_by_another_master_key_cannot_be_unwrapped():
    _, wrapped = KeyRing({"k1": os.urandom(32)}, "k1").new_data_key()
    with pytest.raises(InvalidTag):
        KeyRing({"k1": os.urandom(32)}, "k1").unwrap(wrapped)


def test_pseudonyms_are_stable_normalized_keyed_and_hide_the_value():
    p = Pseudonymizer(os.urandom(32))
    assert p.pseudonym("email", "Ana@Example.com ") == p.pseudonym("email", "ana@example.com")
    assert p.pseudonym("email", "ana@example.com") != p.pseudonym("doc", "ana@example.com")
    assert p.pseudonym("email", "x@y.z") != Pseudonymizer(os.urandom(32)).pseudonym("email", "x@y.z")
    assert "ana" not in p.pseudonym("email", "ana@example.com")
