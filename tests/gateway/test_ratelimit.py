"""The rate limiter with Redis away: it lets requests through, and stops asking Redis for a while after a failure."""

from __future__ import annotations

from typing import Any

from redis.asyncio import Redis

from eventflow.runtime import redis_client
from eventflow.servers import free_port
from services.gateway.ratelimit import RateLimiter


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
