"""Token verification (eventflow.auth) against keys signed, rotated and published on a real nats-server
(eventflow.signing_keys): what verifies, and every way a token is refused."""

from __future__ import annotations

import base64
import time
import uuid
from collections.abc import AsyncIterator
from typing import Any

import orjson
import pytest
from joserfc import jwt
from joserfc.jwk import ECKey, OKPKey

from eventflow.auth import ADMIN, COMPRADOR, NoAutenticado, StaticKeys, TokenVerifier, TrustedIssuer
from eventflow.config import Settings
from eventflow.crypto import KeyRing
from eventflow.jetstream import connect, ensure_bucket
from eventflow.signing_keys import PublishedKeys, SigningKeys

ISS, AUD = "https://eventflow.test", "eventflow"


class Clock:
    def __init__(self) -> None:
        self.now = time.time()

    def __call__(self) -> float:
        return self.now


@pytest.fixture
async def keys(settings: Settings) -> AsyncIterator[tuple[SigningKeys, PublishedKeys, Clock]]:
    nc = await connect(settings.nats_url, "auth-tests")
    js = nc.jetstream(timeout=10)
    tag = uuid.uuid4().hex[:8]
    private_kv = await ensure_bucket(js, f"AUTH_SIGNING_{tag}")
    jwks_kv = await ensure_bucket(js, f"AUTH_JWKS_{tag}")
    clock = Clock()
    ring = KeyRing({"k1": base64.b64decode(settings.master_key)}, "k1")
    signing = SigningKeys(private_kv, jwks_kv, ring, rotate_after_s=3600, token_ttl_s=900, clock=clock)
    published = PublishedKeys(jwks_kv, min_refresh_s=0)
    yield signing, published, clock
    await nc.drain()


def claims(clock: Clock, **overrides: Any) -> dict[str, Any]:
    base = {
        "iss": ISS,
        "aud": AUD,
        "sub": str(uuid.uuid4()),
        "roles": [ADMIN],
        "iat": int(clock.now),
        "exp": int(clock.now) + 900,
        "jti": uuid.uuid4().hex,
    }
    return {**base, **overrides}


def verifier(published: PublishedKeys, clock: Clock) -> TokenVerifier:
    return TokenVerifier([TrustedIssuer(ISS, AUD, published)], clock=clock)


async def test_a_token_signed_with_the_current_key_verifies(keys: Any) -> None:
    signing, published, clock = keys
    token = await signing.sign(claims(clock, sub="u-1"))
    caller = await verifier(published, clock).verify(token)  # the kid is unknown: refreshed on demand
    assert caller.sub == "u-1" and caller.roles == {ADMIN, COMPRADOR}


async def test_a_key_published_just_after_a_reload_still_verifies(keys: Any) -> None:
    """A service that read the keys a moment before the issuer published its first one (at start) must not
    refuse that key's tokens until the next rate-limit window: the on-demand reload waits for the window."""
    signing, published, clock = keys
    throttled = PublishedKeys(published.jwks_kv, min_refresh_s=2.0)
    await throttled.refresh(force=True)
    assert throttled.jwks()["keys"] == []
    token = await signing.sign(claims(clock, sub="u-2"))  # publishes the first key
    assert (await verifier(throttled, clock).verify(token)).sub == "u-2"


async def test_rotation_keeps_the_old_key_until_its_tokens_expire(keys: Any) -> None:
    signing, published, clock = keys
    old_token = await signing.sign(claims(clock))
    old_kid = (await signing.current()).kid
    check = verifier(published, clock)
    await check.verify(old_token)
    clock.now += 3600  # due: the next signature rotates
    new_token = await signing.sign(claims(clock, exp=int(clock.now) + 900))
    assert (await signing.current()).kid != old_kid
    await check.verify(new_token)
    await published.refresh(force=True)
    assert {k["kid"] for k in published.jwks()["keys"]} >= {old_kid}, "the old key is still published"
    clock.now += 900 + 61
    assert await signing.prune() == 1
    await published.refresh(force=True)
    assert old_kid not in {k["kid"] for k in published.jwks()["keys"]}


async def test_two_replicas_rotating_at_once_agree_on_one_key(keys: Any, settings: Settings) -> None:
    signing, _, clock = keys
    twin = SigningKeys(signing.private_kv, signing.jwks_kv, signing.ring, rotate_after_s=3600, clock=clock)
    first, second = await signing.current(), await twin.current()
    assert first.kid == second.kid


def unsigned(header: dict[str, Any], body: dict[str, Any], signature: str = "") -> str:
    def part(doc: dict[str, Any]) -> str:
        return base64.urlsafe_b64encode(orjson.dumps(doc)).rstrip(b"=").decode()

    return f"{part(header)}.{part(body)}.{signature}"


async def test_every_bad_token_is_refused(keys: Any) -> None:
    signing, published, clock = keys
    check = verifier(published, clock)
    good = await signing.sign(claims(clock))
    header, body, signature = good.split(".")
    forger = ECKey.generate_key("P-256", parameters={"kid": (await signing.current()).kid})
    tampered_body = orjson.loads(base64.urlsafe_b64decode(body + "=="))
    tampered_body["roles"] = ["admin", "organizador"]
    bad = {
        "forged (right kid, wrong key)": jwt.encode({"alg": "ES256", "kid": forger.kid}, claims(clock), forger),
        "alg none": unsigned({"alg": "none"}, claims(clock)),
        "HS256 with the public key": unsigned({"alg": "HS256", "kid": forger.kid}, claims(clock), signature),
        "EdDSA": jwt.encode({"alg": "EdDSA"}, claims(clock), OKPKey.generate_key("Ed25519"), algorithms=["EdDSA"]),
        "tampered payload": f"{header}.{unsigned({}, tampered_body).split('.')[1]}.{signature}",
        "expired": await signing.sign(claims(clock, exp=int(clock.now) - 120)),
        "another audience": await signing.sign(claims(clock, aud="someone-else")),
        "another issuer": await signing.sign(claims(clock, iss="https://evil.test")),
        "no subject": await signing.sign({k: v for k, v in claims(clock).items() if k != "sub"}),
        "issued in the future": await signing.sign(claims(clock, iat=int(clock.now) + 3600)),
        "not a jwt": "hello",
    }
    for name, token in bad.items():
        with pytest.raises(NoAutenticado):
            await check.verify(token)
            pytest.fail(f"{name} verified")


async def test_an_external_issuers_roles_are_mapped(keys: Any) -> None:
    _, _, clock = keys
    idp = ECKey.generate_key("P-256", parameters={"kid": "idp-1", "alg": "ES256"})
    keycloak = TrustedIssuer(
        "https://idp.test/realms/eventflow",
        "eventflow-api",
        StaticKeys({"keys": [idp.as_dict(private=False)]}),
        roles_claim="realm_access.roles",
        role_map={"ticket-organizer": "organizador", "door": "control"},
    )
    token = jwt.encode(
        {"alg": "ES256", "kid": "idp-1"},
        {
            "iss": keycloak.issuer,
            "aud": "eventflow-api",
            "sub": "kc-user",
            "exp": int(clock.now) + 300,
            "realm_access": {"roles": ["ticket-organizer", "offline_access"]},
        },
        idp,
    )
    caller = await TokenVerifier([keycloak], clock=clock).verify(token)
    assert caller.roles == {"organizador", COMPRADOR} and caller.issuer == keycloak.issuer


async def test_a_replica_signs_with_the_key_another_replica_rotated_in(keys: Any) -> None:
    """A replica used to keep signing with its cached key after another one rotated, until that key was pruned
    and its tokens failed everywhere."""
    signing, _, clock = keys
    twin = SigningKeys(signing.private_kv, signing.jwks_kv, signing.ring, rotate_after_s=3600, clock=clock)
    assert (await twin.current()).kid == (await signing.current()).kid
    new_kid = await signing.rotate()
    clock.now += 31  # past RECHECK_S: well inside the old key's remaining validity
    assert (await twin.current()).kid == new_kid


class CountingVerifier(TokenVerifier):
    """Counts the signature verifications actually done (the cache's misses)."""

    verified = 0

    async def _verify(self, token: str, issuer: TrustedIssuer) -> Any:
        self.verified += 1
        return await super()._verify(token, issuer)


async def test_a_token_verified_once_is_not_verified_again(keys: Any) -> None:
    signing, published, clock = keys
    check = CountingVerifier([TrustedIssuer(ISS, AUD, published)], clock=clock)
    token = await signing.sign(claims(clock, sub="u-cache"))
    first = await check.verify(token)
    assert await check.verify(token) == first
    assert check.verified == 1


async def test_a_cached_token_is_refused_once_it_expires(keys: Any) -> None:
    signing, published, clock = keys
    check = verifier(published, clock)
    token = await signing.sign(claims(clock, exp=int(clock.now) + 60))
    await check.verify(token)
    clock.now += 60 + 31  # past exp and the leeway
    with pytest.raises(NoAutenticado):
        await check.verify(token)


async def test_a_cached_token_is_refused_once_its_key_is_dropped(keys: Any) -> None:
    """A key withdrawn from the published set (a compromised key, say) stops its tokens at the next reload,
    cached or not."""
    signing, published, clock = keys
    check = verifier(published, clock)
    token = await signing.sign(claims(clock))
    await check.verify(token)
    await published.jwks_kv.purge((await signing.current()).kid)
    await published.refresh(force=True)
    with pytest.raises(NoAutenticado):
        await check.verify(token)
