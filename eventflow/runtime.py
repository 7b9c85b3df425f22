"""A service's connections to the CP side (NATS JetStream) and the AP side (Redis), opened once at start."""

from __future__ import annotations

from dataclasses import dataclass, field

from nats.aio.client import Client as NATS
from nats.js import JetStreamContext
from redis.asyncio import Redis

from eventflow.config import Settings
from eventflow.crypto import KeyRing, Pseudonymizer
from eventflow.jetstream import StreamSpec, connect, ensure_stream, wait_for_jetstream
from eventflow.projections import Projection, ProjectionRunner
from eventflow.web import ReadyCheck


@dataclass
class Infrastructure:
    settings: Settings
    nc: NATS
    js: JetStreamContext
    redis: Redis
    runners: list[ProjectionRunner] = field(default_factory=list)

    @classmethod
    async def connect(cls, settings: Settings, name: str, streams: tuple[StreamSpec, ...] = ()) -> Infrastructure:
        nc = await connect(settings.nats_url, name)
        js = nc.jetstream(timeout=5.0)
        await wait_for_jetstream(js)
        for spec in streams:
            await ensure_stream(js, spec, settings.replicas)
        redis = Redis.from_url(
            settings.redis_url,
            decode_responses=True,
            health_check_interval=10,
            socket_keepalive=True,
            max_connections=256,
        )
        return cls(settings, nc, js, redis)

    def key_ring(self) -> KeyRing:
        return KeyRing({self.settings.master_key_id: self.settings.master_key_bytes}, self.settings.master_key_id)

    def pseudonymizer(self) -> Pseudonymizer:
        return Pseudonymizer(self.settings.pseudonym_key_bytes)

    def project(self, stream: StreamSpec, projection: Projection) -> ProjectionRunner:
        runner = ProjectionRunner(self.js, self.redis, stream, projection)
        self.runners.append(runner)
        return runner

    def start_projections(self) -> None:
        for runner in self.runners:
            runner.start()

    async def close(self) -> None:
        for runner in self.runners:
            await runner.stop()
        await self.redis.aclose()
        await self.nc.drain()

    def ready_checks(self) -> dict[str, ReadyCheck]:
        async def nats_ready() -> None:
            if not self.nc.is_connected:
                raise ConnectionError("NATS disconnected")
            await self.js.account_info()

        async def redis_ready() -> None:
            await self.redis.ping()

        return {"nats": nats_ready, "redis": redis_ready}
