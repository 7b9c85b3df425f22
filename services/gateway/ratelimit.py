"""Token buckets in Redis (one EVALSHA per bucket, shared by every gateway replica): per account for signed-in
callers, per client address for anonymous ones, and a larger per-address bound on signed-in calls.

Many buyers share one address (a campus, a carrier's CGNAT, an office): keyed by address alone, one busy NAT
would be refused as if it were one greedy client. So a request whose bearer token verifies (signature, issuer,
audience, expiry: eventflow.auth, with its cache of verified tokens) is counted against its account (`sub`),
and only a request without a valid token against its address, with a bound large enough for a crowd's
anonymous browsing. A token that does not verify counts as anonymous, so inventing a new `sub` per request
buys no fresh bucket. Every call that carries a token is also counted against its address, before the token is
verified, with a bound 10x the anonymous one (config.py): cycling tokens or accounts from one address is bounded,
and so are the signature checks a flood of forged tokens costs. The gateway decides only the buckets here:
every service still verifies the token itself.
"""

from __future__ import annotations

import hashlib
import logging
import math
import time
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass

from redis.asyncio import Redis
from redis.exceptions import RedisError

from eventflow.auth import ClaveDesconocida, NoAutenticado, TokenVerifier
from eventflow.breaker import Breaker
from services.gateway.config import GatewaySettings

log = logging.getLogger(__name__)
PAUSE_AFTER_FAILURE_S = 5.0
FAILED_TOKENS = 4096  # ~200 bytes each (digest, expiry, the OrderedDict's node): under a MiB
FAILED_TOKEN_TTL_S = 60.0

# Refill by elapsed server time (TIME: every replica shares one clock), take one token if there is one.
# Returns {allowed, milliseconds until a token is available}.
TOKEN_BUCKET = """
local rate = tonumber(ARGV[1])
local burst = tonumber(ARGV[2])
local now_parts = redis.call('TIME')
local now = tonumber(now_parts[1]) + tonumber(now_parts[2]) / 1000000
local state = redis.call('HMGET', KEYS[1], 'tokens', 'ts')
local tokens = tonumber(state[1]) or burst
local ts = tonumber(state[2]) or now
tokens = math.min(burst, tokens + math.max(0, now - ts) * rate)
local allowed = 0
local wait_ms = 0
if tokens >= 1 then
  tokens = tokens - 1
  allowed = 1
else
  wait_ms = math.ceil((1 - tokens) / rate * 1000)
end
redis.call('HSET', KEYS[1], 'tokens', tostring(tokens), 'ts', tostring(now))
redis.call('PEXPIRE', KEYS[1], math.ceil(burst / rate * 1000) + 1000)
return {allowed, wait_ms}
"""


@dataclass(frozen=True)
class Decision:
    allowed: bool
    retry_after_s: int = 0
    per: str = "client"  # what the bucket was: "account" or "client" (address)
    rate: float = 0.0


class RateLimiter:
    """One kind of bucket. Fails open: Redis is the AP side, and losing it must not take the whole API down.

    After a failure it lets requests through without asking Redis for `pause_s`, then asks again: a hung Redis
    costs the client's socket timeout once per pause, not on every request (reservations included). Limiters on
    the same Redis share one `breaker` (then `pause_s` is the breaker's), so a signed-in request (address, then
    account) pays it once, not twice; a failure of one bucket's command lets every bucket through for the pause.
    """

    def __init__(
        self,
        redis: Redis,
        rate_per_s: float,
        burst: int,
        prefix: str = "ratelimit",
        pause_s: float = PAUSE_AFTER_FAILURE_S,
        clock: Callable[[], float] = time.monotonic,
        breaker: Breaker | None = None,
    ) -> None:
        self.rate = rate_per_s
        self.burst = burst
        self.prefix = prefix
        self.clock = clock
        self.breaker = breaker if breaker is not None else Breaker(pause_s, clock)
        self._script = redis.register_script(TOKEN_BUCKET)
        self._last_warning = 0.0

    @property
    def enabled(self) -> bool:
        return self.rate > 0

    async def take(self, client: str) -> Decision:
        if not self.enabled or self.breaker.open:
            return Decision(True)
        try:
            allowed, wait_ms = await self._script(keys=[f"{self.prefix}:{client}"], args=[self.rate, self.burst])
        except RedisError as err:
            self.breaker.failed()
            self._warn(err)
            return Decision(True)
        if int(allowed):
            return Decision(True)
        return Decision(False, max(1, math.ceil(int(wait_ms) / 1000)))

    def _warn(self, err: Exception) -> None:
        now = self.clock()
        if now - self._last_warning > 10:
            self._last_warning = now
            log.warning("rate limiter unavailable; letting requests through", extra={"error": type(err).__name__})


class FailedTokens:
    """The tokens that recently did not verify (their SHA-256: a token may be kilobytes), so a flood of one forged
    token is counted as anonymous without checking its signature again. Bounded, least recently seen out first;
    and short-lived, since a token refused while its issuer's keys could not be fetched may verify later."""

    def __init__(
        self, size: int = FAILED_TOKENS, ttl_s: float = FAILED_TOKEN_TTL_S, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self.size, self.ttl_s, self.clock = size, ttl_s, clock
        self._until: OrderedDict[bytes, float] = OrderedDict()

    def __len__(self) -> int:
        return len(self._until)

    def __contains__(self, token: str) -> bool:
        digest = hashlib.sha256(token.encode()).digest()
        until = self._until.get(digest)
        if until is None:
            return False
        if until <= self.clock():
            del self._until[digest]
            return False
        self._until.move_to_end(digest)
        return True

    def add(self, token: str) -> None:
        digest = hashlib.sha256(token.encode()).digest()
        self._until[digest] = self.clock() + self.ttl_s
        self._until.move_to_end(digest)
        while len(self._until) > self.size:
            self._until.popitem(last=False)


class RateLimits:
    """Picks the buckets of a request: its client address, and its account when its token verifies."""

    def __init__(
        self,
        anonymous: RateLimiter,
        account: RateLimiter,
        verifier: TokenVerifier | None,
        signed_in: RateLimiter | None = None,
        failed: FailedTokens | None = None,
    ) -> None:
        self.anonymous, self.account, self.verifier, self.signed_in = anonymous, account, verifier, signed_in
        self.failed = failed if failed is not None else FailedTokens()

    async def take(self, token: str | None, client: str) -> Decision:
        if token is None or self.verifier is None or token in self.failed:
            return await _take(self.anonymous, client, "client")
        if self.signed_in is not None:
            # Before the signature is checked: a flood of tokens, forged or not, costs verifications only up
            # to this address's bound.
            decision = await _take(self.signed_in, client, "client")
            if not decision.allowed:
                return decision
        try:
            caller = await self.verifier.verify(token)
        except NoAutenticado as err:
            # Counted by address, like any anonymous call; the service answers the 401. A key id not known
            # yet may be a genuine token ahead of our keys: not remembered (checking it costs no signature).
            if not isinstance(err, ClaveDesconocida):
                self.failed.add(token)
            return await _take(self.anonymous, client, "client")
        return await _take(self.account, f"{caller.issuer}|{caller.sub}", "account")


def rate_limits(redis: Redis, settings: GatewaySettings, verifier: TokenVerifier | None) -> RateLimits:
    """The gateway's buckets, sharing one breaker: they are on one Redis, and a request asks up to two of them."""
    redis_failed = Breaker(PAUSE_AFTER_FAILURE_S)
    return RateLimits(
        RateLimiter(redis, settings.rate_limit_per_s, settings.rate_limit_burst, "ratelimit:ip", breaker=redis_failed),
        RateLimiter(
            redis,
            settings.rate_limit_account_per_s,
            settings.rate_limit_account_burst,
            "ratelimit:acct",
            breaker=redis_failed,
        ),
        verifier,
        RateLimiter(redis, *settings.signed_in_rate(), "ratelimit:ip-signed-in", breaker=redis_failed),
    )


async def _take(limiter: RateLimiter, key: str, per: str) -> Decision:
    decision = await limiter.take(key)
    return Decision(decision.allowed, decision.retry_after_s, per, limiter.rate)
