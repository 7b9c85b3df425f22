"""The rate limiter: with Redis away it lets requests through (and stops asking Redis for a while after a
failure); the buckets a request is counted against, with tokens of a test identity provider."""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import AsyncIterator
from typing import Any

import orjson
import pytest
from joserfc import jwt
from joserfc.jwk import ECKey
from redis.asyncio import Redis

from eventflow.auth import Principal, StaticKeys, TokenVerifier, TrustedIssuer
from eventflow.config import Settings
from eventflow.runtime import redis_client
from eventflow.servers import free_port
from services.gateway.bootstrap import create_app
from services.gateway.config import GatewaySettings
from services.gateway.ratelimit import FailedTokens, RateLimiter, RateLimits, rate_limits
from tests.gateway.upstreams import HANG, echo_upstreams, http_answer, raw_upstream
from tests.utils.app import api_client


class CountingRedis(Redis):
    """The real client, counting the commands it sends (each one would wait for a hung Redis's timeout)."""

    def __init__(self, url: str) -> None:
        super().__init__(connection_pool=redis_client(url).connection_pool)
        self.commands = 0

    async def execute_command(self, *args: Any, **options: Any) -> Any:
        self.commands += 1
        return await super().execute_command(*args, **options)


async def test_after_a_failure_the_limiter_lets_requests_through_without_asking_redis_until_its_pause_ends() -> None:
    redis = CountingRedis(f"redis://127.0.0.1:{free_port()}/0")  # nothing listens there
    now = [1_000.0]
    limiter = RateLimiter(redis, rate_per_s=5, burst=5, pause_s=5.0, clock=lambda: now[0])
    try:
        assert (await limiter.take("a")).allowed
        assert redis.commands == 1
        now[0] += 4.9
        assert all([(await limiter.take(client)).allowed for client in ("a", "b", "c")])
        assert redis.commands == 1, "asked Redis again during the pause"
        now[0] += 0.2
        assert (await limiter.take("a")).allowed
        assert redis.commands == 2, "the pause is over: Redis is asked again"
    finally:
        await redis.aclose()


ISS, AUD = "https://idp.test", "eventflow"
IDP = ECKey.generate_key("P-256", parameters={"kid": "idp-1", "alg": "ES256"})
FORGER = ECKey.generate_key("P-256", parameters={"kid": "idp-1", "alg": "ES256"})  # the same kid, another key


class CountingVerifier(TokenVerifier):
    """A real verifier, counting the tokens it is asked to verify."""

    asked = 0

    async def verify(self, token: str) -> Principal:
        self.asked += 1
        return await super().verify(token)


def gateway_trusting_idp(settings: Settings, events_url: str, idp_url: str, **overrides: Any) -> GatewaySettings:
    """A gateway in front of one events upstream that verifies tokens of the test identity provider at `idp_url`,
    with a short JWKS timeout (the key servers here may hang) and no address limit unless overridden."""
    values: dict[str, Any] = {
        "redis_url": settings.redis_url,
        "events_url": events_url,
        "gateway_upstreams": "events",
        "oidc_issuer": ISS,
        "oidc_audience": AUD,
        "oidc_jwks_url": f"{idp_url}/jwks",
        "gateway_jwks_timeout": 0.3,
        "rate_limit_per_s": 0,
    }
    return GatewaySettings(**{**values, **overrides})


def trusting_the_idp() -> list[TrustedIssuer]:
    """The test identity provider, its public key given (no key server)."""
    return [TrustedIssuer(ISS, AUD, StaticKeys({"keys": [IDP.as_dict(private=False)]}))]


def claims(sub: str | None = None) -> dict[str, Any]:
    return {"iss": ISS, "aud": AUD, "sub": sub or uuid.uuid4().hex, "exp": int(time.time()) + 300}


def token(key: ECKey, sub: str | None = None) -> str:
    return str(jwt.encode({"alg": "ES256", "kid": "idp-1"}, claims(sub), key))


@pytest.fixture
async def redis_conn(settings: Settings) -> AsyncIterator[Redis]:
    redis = redis_client(settings.redis_url)
    yield redis
    await redis.aclose()


def limits(
    redis: Redis, anonymous: int, signed_in: int, account: int = 100, failed: FailedTokens | None = None
) -> RateLimits:
    """Bursts as given, refilled at a rate too slow to matter within a test; each limiter its own key prefix."""
    prefix = uuid.uuid4().hex
    verifier = CountingVerifier(trusting_the_idp())
    return RateLimits(
        RateLimiter(redis, 0.001, anonymous, prefix=f"{prefix}:ip"),
        RateLimiter(redis, 0.001, account, prefix=f"{prefix}:acct"),
        verifier,
        RateLimiter(redis, 0.001 if signed_in else 0, max(signed_in, 1), prefix=f"{prefix}:ip-signed-in"),
        failed,
    )


async def test_the_gateways_buckets_share_one_pause_so_a_signed_in_call_asks_a_failed_redis_once() -> None:
    """A signed-in call is counted by address, then by account: with Redis hung each would cost the socket
    timeout."""
    redis = CountingRedis(f"redis://127.0.0.1:{free_port()}/0")  # nothing listens there
    verifier = TokenVerifier(trusting_the_idp())
    buckets = rate_limits(redis, GatewaySettings(rate_limit_per_s=5, rate_limit_account_per_s=5), verifier)
    try:
        decision = await buckets.take(token(IDP), "10.0.0.1")
        assert decision.allowed and decision.per == "account"
        assert redis.commands == 1, "the account's bucket asked Redis again after the address's failed"
        assert (await buckets.take(None, "10.0.0.2")).allowed and redis.commands == 1
    finally:
        await redis.aclose()


async def test_signed_in_calls_from_one_address_are_bounded_across_accounts(redis_conn: Redis) -> None:
    """Many accounts behind one address each have their own bucket, but the address has a bound for them all."""
    limiter = limits(redis_conn, anonymous=1, signed_in=4)
    buyers = [token(IDP) for _ in range(5)]
    decisions = [await limiter.take(buyer, "10.0.0.1") for buyer in buyers]
    assert [d.allowed for d in decisions] == [True] * 4 + [False]
    assert (decisions[-1].per, decisions[-1].rate) == ("client", 0.001)
    assert all(d.per == "account" for d in decisions[:4])
    assert (await limiter.take(buyers[-1], "10.0.0.2")).allowed, "another address has its own bound"


async def test_a_signed_in_bound_of_zero_is_off(redis_conn: Redis) -> None:
    limiter = limits(redis_conn, anonymous=1, signed_in=0)
    assert all([(await limiter.take(token(IDP), "10.0.0.1")).allowed for _ in range(20)])


def test_the_signed_in_bound_is_ten_times_the_anonymous_one_and_off_with_it(monkeypatch: pytest.MonkeyPatch) -> None:
    assert GatewaySettings(rate_limit_per_s=5000, rate_limit_burst=10000).signed_in_rate() == (50000, 100000)
    assert GatewaySettings(rate_limit_signed_in_per_s=7, rate_limit_signed_in_burst=9).signed_in_rate() == (7, 9)
    monkeypatch.setenv("EVENTFLOW_RATE_LIMIT_PER_S", "0")  # what bench/reservations.py sets by default
    assert GatewaySettings().signed_in_rate()[0] == 0


async def test_a_flood_of_forged_tokens_from_one_address_is_bounded_before_any_signature_is_checked(
    redis_conn: Redis,
) -> None:
    limiter = limits(redis_conn, anonymous=3, signed_in=5)
    decisions = [await limiter.take(token(FORGER), "10.0.0.9") for _ in range(20)]
    assert [d.allowed for d in decisions] == [True] * 3 + [False] * 17, "forged: counted as anonymous"
    assert isinstance(limiter.verifier, CountingVerifier)
    assert limiter.verifier.asked == 5, "only as many signature checks as the address's signed-in bound"


async def test_a_flood_of_one_forged_token_is_refused_without_checking_its_signature_again(redis_conn: Redis) -> None:
    limiter = limits(redis_conn, anonymous=3, signed_in=1000)
    forged = token(FORGER)
    decisions = [await limiter.take(forged, "10.0.0.10") for _ in range(50)]
    assert [d.allowed for d in decisions] == [True] * 3 + [False] * 47
    assert isinstance(limiter.verifier, CountingVerifier)
    assert limiter.verifier.asked == 1


async def test_a_token_signed_with_a_key_id_not_known_yet_is_not_remembered_as_failed(redis_conn: Redis) -> None:
    """After a key rotation the first genuine tokens name a key the gateway has not fetched yet: they must be
    verified again once it has, not counted as anonymous for a minute."""
    limiter = limits(redis_conn, anonymous=1000, signed_in=0)
    assert isinstance(limiter.verifier, CountingVerifier)
    ahead = str(jwt.encode({"alg": "ES256", "kid": "idp-2"}, claims(), FORGER))
    for _ in range(3):
        assert (await limiter.take(ahead, "10.0.0.12")).per == "client"
    assert limiter.verifier.asked == 3 and len(limiter.failed) == 0
    await limiter.take(token(FORGER), "10.0.0.12")  # a known key id whose signature fails: remembered
    assert len(limiter.failed) == 1


async def test_the_failed_tokens_are_bounded_least_recently_seen_out_first(redis_conn: Redis) -> None:
    limiter = limits(redis_conn, anonymous=1000, signed_in=0, failed=FailedTokens(size=8))
    assert isinstance(limiter.verifier, CountingVerifier)
    forged = [token(FORGER) for _ in range(20)]
    for each in forged:
        await limiter.take(each, "10.0.0.11")
    assert len(limiter.failed) == 8
    asked = limiter.verifier.asked
    await limiter.take(forged[-1], "10.0.0.11")
    assert limiter.verifier.asked == asked, "a recent one is still remembered"
    await limiter.take(forged[0], "10.0.0.11")
    assert limiter.verifier.asked == asked + 1, "the oldest was let go: checked again"
    assert len(limiter.failed) == 8


def test_a_failed_token_is_checked_again_after_a_minute() -> None:
    now = [100.0]
    failed = FailedTokens(ttl_s=60, clock=lambda: now[0])
    failed.add("a.b.c")
    now[0] += 59.9
    assert "a.b.c" in failed
    now[0] += 0.2
    assert "a.b.c" not in failed and len(failed) == 0


async def test_a_hung_key_server_costs_a_new_key_id_the_jwks_timeout_and_the_last_keys_stay(settings: Settings) -> None:
    """The gateway verifies tokens to pick their bucket; an issuer whose JWKS endpoint hangs must not hold a request
    for the gateway's 30 s upstream timeout, nor make it forget the keys it had."""
    jwks = orjson.dumps({"keys": [IDP.as_dict(private=False)]})
    async with raw_upstream(lambda n: http_answer(jwks) if n == 0 else HANG) as idp, echo_upstreams("events") as up:
        conf = gateway_trusting_idp(
            settings,
            up["events"],
            idp.url,
            rate_limit_signed_in_per_s=0,
            rate_limit_account_per_s=0.001,
            rate_limit_account_burst=1,
        )
        app = create_app(conf)
        async with api_client(app) as client:

            async def status(bearer: str) -> int:
                call = client.get("/api/eventos", headers={"authorization": f"Bearer {bearer}"})
                return (await asyncio.wait_for(call, timeout=5)).status_code

            first = token(IDP)
            assert [await status(first), await status(first)] == [200, 429], "verified: limited per account"
            app.state.gateway.limits.verifier.issuers[ISS].keys.keys.min_refresh_s = 0  # ask again at the next new kid
            rotated = ECKey.generate_key("P-256", parameters={"kid": "idp-2", "alg": "ES256"})
            new_kid = jwt.encode({"alg": "ES256", "kid": "idp-2"}, claims(), rotated)
            assert await status(new_kid) == 200, "not verified (the keys could not be fetched): anonymous"
            assert len(idp.seen) == 2, "the JWKS was asked again, and hung"
            second = token(IDP)
            assert [await status(second), await status(second)] == [200, 429], "the keys fetched before still verify"
