"""A service's connections to the CP side (NATS JetStream) and the AP side (Redis), opened once at start.

Redis is the AP side: when it is slow or gone, a request must learn it fast and answer without it (a 503, a
cached copy), never wait for it. So every command has a socket timeout (REDIS_TIMEOUT_S), a connection attempt
too, and only a broken connection is retried, once and at once (a pooled connection Redis closed by restarting);
a timeout is not retried: redis-py's default would retry three times with backoff, seconds per command.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from dataclasses import dataclass, field

import aiohttp
from nats.aio.client import Client as NATS
from nats.js import JetStreamContext
from redis.asyncio import Redis
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff
from redis.exceptions import ConnectionError as RedisConnectionError

from eventflow import keys
from eventflow.auth import HttpJwks, TokenVerifier, TrustedIssuer
from eventflow.config import Settings
from eventflow.crypto import KeyRing, Pseudonymizer
from eventflow.jetstream import StreamSpec, connect, ensure_bucket, ensure_stream, wait_for_jetstream
from eventflow.projections import Projection, ProjectionRunner
from eventflow.signing_keys import JWKS_BUCKET, PublishedKeys
from eventflow.web import ReadyCheck

log = logging.getLogger(__name__)

REDIS_TIMEOUT_S = 0.5  # a Redis command takes well under a millisecond here: 500x that is a hung or lost server
REDIS_CONNECT_TIMEOUT_S = 0.5


def redis_client(url: str, max_connections: int = 256) -> Redis:
    """The Redis client every process uses (the services, the gateway, the rebuild): fails fast, see above."""
    return Redis.from_url(
        url,
        decode_responses=True,
        socket_timeout=REDIS_TIMEOUT_S,
        socket_connect_timeout=REDIS_CONNECT_TIMEOUT_S,
        retry=Retry(NoBackoff(), 1, supported_errors=(RedisConnectionError,)),
        health_check_interval=10,
        socket_keepalive=True,
        max_connections=max_connections,
    )


@dataclass
class Infrastructure:
    settings: Settings
    nc: NATS
    js: JetStreamContext
    redis: Redis
    runners: list[ProjectionRunner] = field(default_factory=list)
    background: list[asyncio.Task[None]] = field(default_factory=list)
    published_keys: PublishedKeys | None = None

    @classmethod
    async def connect(cls, settings: Settings, name: str, streams: tuple[StreamSpec, ...] = ()) -> Infrastructure:
        nc = await connect(settings.nats_url, name)
        js = nc.jetstream(timeout=5.0)
        await wait_for_jetstream(js)
        for spec in streams:
            await ensure_stream(js, spec, settings.replicas)
        return cls(settings, nc, js, redis_client(settings.redis_url))

    def key_ring(self) -> KeyRing:
        """The current master key wraps; previous ones (EVENTFLOW_MASTER_KEYS_PREVIOUS) still unwrap, so a service
        keeps working between a master-key change and `rotar_claves` finishing (eventflow.keys)."""
        return keys.key_ring(self.settings)

    def pseudonymizer(self) -> Pseudonymizer:
        return Pseudonymizer(self.settings.pseudonym_key_bytes)

    def project(self, stream: StreamSpec, projection: Projection) -> ProjectionRunner:
        runner = ProjectionRunner(self.js, self.redis, stream, projection)
        self.runners.append(runner)
        return runner

    def start_projections(self) -> None:
        for runner in self.runners:
            runner.start()

    async def token_verifier(self, session: aiohttp.ClientSession | None = None) -> TokenVerifier:
        """Who may call this service: our issuer's tokens (keys read from AUTH_JWKS, kept fresh in the
        background) and, when configured, an external OpenID Connect provider's (its JWKS over HTTP)."""
        settings = self.settings
        self.published_keys = PublishedKeys(await ensure_bucket(self.js, JWKS_BUCKET, settings.replicas))
        await self.published_keys.refresh(force=True)
        self.background.append(asyncio.create_task(self.published_keys.run(), name="auth:jwks"))
        issuers = [TrustedIssuer(settings.auth_issuer, settings.auth_audience, self.published_keys, local=True)]
        if settings.oidc_issuer:
            if session is None:
                raise ValueError("an external OIDC issuer needs an HTTP session for its JWKS")
            external = TrustedIssuer(
                settings.oidc_issuer,
                settings.oidc_audience or settings.auth_audience,
                HttpJwks(session, settings.oidc_jwks_url, issuer=settings.oidc_issuer),
                roles_claim=settings.oidc_roles_claim,
            )
            if settings.oidc_roles():
                external.role_map = settings.oidc_roles()
            issuers.append(external)
        return TokenVerifier(issuers)

    async def close(self) -> None:
        for task in self.background:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
        for runner in self.runners:
            await runner.stop()
        await self.redis.aclose()
        await self.close_nats()

    async def close_nats(self) -> None:
        """Drain when connected (in-flight replies are delivered); during an outage just close: draining a
        reconnecting client raises, and a service stopping while NATS is down must still stop cleanly."""
        if self.nc.is_connected:
            try:
                await self.nc.drain()
                return
            except Exception:  # NATS went away meanwhile
                log.warning("NATS drain failed at shutdown; closing", exc_info=True)
        try:
            await self.nc.close()
        except ConnectionError:  # the socket went away under the close (NATS restarting): closed all the same
            log.warning("NATS connection lost while closing", exc_info=True)

    def ready_checks(self) -> dict[str, ReadyCheck]:
        """One check per dependency, each bounded in time by /health/ready (eventflow.web). Which of them the
        service cannot work without (its readiness) is the service's choice: see `web.create_app(required=...)`."""

        async def nats_ready() -> None:
            if not self.nc.is_connected:
                raise ConnectionError("NATS disconnected")
            await self.js.account_info()

        async def redis_ready() -> None:
            await self.redis.ping()

        return {"nats": nats_ready, "redis": redis_ready}
