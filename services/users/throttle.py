"""Sign-in throttling: failed sign-ins counted per account, per client address and per (account, address).

- (account, address): 5 failures in 15 minutes lock that pair out for 1 minute, doubling per further failure up
  to 15 minutes: guessing one account's password from one place is slow.
- address alone: 50 failures in 15 minutes: one place spraying many accounts is stopped.
- account alone: 50 failures in 15 minutes lock the account for 1 minute at most, whatever the addresses: a
  distributed guess is slowed, but nobody can keep a victim locked out for long (and the victim's own address
  has its own, untouched (account, address) budget).
A success clears its (account, address) counter. Counters live in Redis (shared by every replica, expiring by
themselves); if Redis is down, an in-process copy keeps counting, so an outage never opens the door wide.
"""

from __future__ import annotations

import contextlib
import logging
import math
import time
from collections import defaultdict
from collections.abc import Callable
from dataclasses import dataclass

from redis.asyncio import Redis
from redis.exceptions import RedisError

log = logging.getLogger(__name__)
WINDOW_S = 900


@dataclass(frozen=True)
class Rule:
    prefix: str
    limit: int
    lockout_s: float
    max_lockout_s: float


PAIR = Rule("pair", 5, 60.0, 900.0)
ADDRESS = Rule("ip", 50, 60.0, 900.0)
ACCOUNT = Rule("account", 50, 60.0, 60.0)

# Count, and return the failures in the window and the seconds since the last one.
_RECORD = """
local n = redis.call('INCR', KEYS[1])
if n == 1 then redis.call('EXPIRE', KEYS[1], ARGV[1]) end
local t = redis.call('TIME')
redis.call('SET', KEYS[2], t[1], 'EX', ARGV[1])
return n
"""
_READ = """
local n = tonumber(redis.call('GET', KEYS[1]) or '0')
local last = tonumber(redis.call('GET', KEYS[2]) or '0')
local t = redis.call('TIME')
return {n, tonumber(t[1]) - last}
"""


def lockout_s(rule: Rule, failures: int) -> float:
    """How long a key stays locked after `failures` in the window (0: not locked)."""
    if failures < rule.limit:
        return 0.0
    return min(rule.max_lockout_s, rule.lockout_s * 2 ** min(failures - rule.limit, 32))


class SignInThrottle:
    def __init__(self, redis: Redis, clock: Callable[[], float] = time.time) -> None:
        self.redis = redis
        self.clock = clock
        self._record = redis.register_script(_RECORD)
        self._read = redis.register_script(_READ)
        self._local: defaultdict[str, list[float]] = defaultdict(list)  # used while Redis is unreachable

    def _keys(self, account: str, address: str) -> list[tuple[Rule, str]]:
        return [(PAIR, f"{account}|{address}"), (ADDRESS, address), (ACCOUNT, account)]

    async def retry_after(self, account: str, address: str) -> int:
        """Seconds until this sign-in may be tried (0: now)."""
        wait = 0.0
        for rule, subject in self._keys(account, address):
            failures, since_last = await self._state(rule, subject)
            wait = max(wait, lockout_s(rule, failures) - since_last)
        return math.ceil(wait) if wait > 0 else 0

    async def failed(self, account: str, address: str) -> None:
        for rule, subject in self._keys(account, address):
            key = f"signin:{rule.prefix}:{subject}"
            try:
                await self._record(keys=[key, f"{key}:last"], args=[WINDOW_S])
            except RedisError as err:
                log.warning("sign-in throttle counting in process (Redis unreachable)", extra={"error": str(err)})
                self._local[key].append(self.clock())

    async def succeeded(self, account: str, address: str) -> None:
        key = f"signin:{PAIR.prefix}:{account}|{address}"
        self._local.pop(key, None)
        with contextlib.suppress(RedisError):  # the counter expires by itself; the local copy is cleared
            await self.redis.delete(key, f"{key}:last")

    async def _state(self, rule: Rule, subject: str) -> tuple[int, float]:
        key = f"signin:{rule.prefix}:{subject}"
        now = self.clock()
        local = [t for t in self._local.get(key, []) if now - t < WINDOW_S]
        try:
            failures, since_last = await self._read(keys=[key, f"{key}:last"], args=[])
            failures, since_last = int(failures), float(since_last)
        except RedisError:
            failures, since_last = 0, float("inf")
        if local:
            failures = max(failures, len(local))
            since_last = min(since_last, now - local[-1])
        return failures, since_last
