"""Composition root: the only place that knows which adapters the events service runs on."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from fastapi import FastAPI

from eventflow.breaker import Breaker
from eventflow.config import Settings
from eventflow.eventstore import EventStore
from eventflow.generations import Generation, ReadModelRedis
from eventflow.http import client_session
from eventflow.jetstream import EVENTOS, RESERVAS, StreamSpec
from eventflow.projections import Projection, ProjectionRunner
from eventflow.runtime import Infrastructure
from eventflow.web import any_of
from eventflow.web import create_app as create_base_app
from services.events import keys
from services.events.api import router
from services.events.deps import Deps
from services.events.handlers import WriteDeps
from services.events.log_fallback import LogFallback
from services.events.projections import (
    CatalogProjection,
    DashboardProjection,
    OrganizerProjection,
    SalesProjection,
)

SERVICE = "events"
CACHE_MAX_AGE_S = 5


def read_models() -> list[tuple[StreamSpec, Projection]]:
    """(stream, projection) pairs this service keeps in Redis; the rebuild CLI replays them."""
    return [
        (EVENTOS, CatalogProjection()),
        (RESERVAS, SalesProjection()),
        (EVENTOS, OrganizerProjection()),
        (RESERVAS, DashboardProjection()),
    ]


@dataclass(frozen=True)
class AllOf:
    """Read-your-writes over several read models of one stream: the write is visible once all applied it."""

    runners: tuple[ProjectionRunner, ...]

    async def wait_for(self, seq: int, timeout: float) -> bool:
        results = await asyncio.gather(*(runner.wait_for(seq, timeout) for runner in self.runners))
        return all(results)


def _now() -> datetime:
    return datetime.now(UTC)


def create_app(settings: Settings | None = None, **overrides: Any) -> FastAPI:
    """Overrides (for tests): `clock` (() -> aware datetime), `cache_max_age` (seconds), `read_model_breaker`."""
    settings = settings or Settings()
    clock: Callable[[], datetime] = overrides.pop("clock", _now)
    cache_max_age: int = overrides.pop("cache_max_age", CACHE_MAX_AGE_S)
    breaker: Breaker = overrides.pop("read_model_breaker", None) or Breaker()
    if overrides:
        raise TypeError(f"unknown overrides: {sorted(overrides)}")
    holder: dict[str, Infrastructure] = {}

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        # RESERVAS is owned by the reservations service; declaring it here (same shared spec) only lets
        # the sales projection subscribe before that service has ever started.
        infra = await Infrastructure.connect(settings, SERVICE, (EVENTOS, RESERVAS))
        holder["infra"] = infra
        # Reads and projections follow the family's current generation, so `make rebuild` can run beside them.
        generation = Generation(infra.redis, keys.FAMILY)
        await generation.start()
        runners = [ProjectionRunner(infra.js, infra.redis, s, p, generation) for s, p in read_models()]
        infra.runners.extend(runners)
        session = client_session()  # an external OIDC issuer's JWKS, when one is configured
        app.state.verifier = await infra.token_verifier(session)
        # A new event is answered once it is in the catalog and in its organizer's list (both from EVENTOS).
        visible = AllOf((runners[0], runners[2]))
        events = EventStore(infra.js, EVENTOS)
        write = WriteDeps(events, visible, clock, settings.read_your_writes_timeout, infra.pseudonymizer())
        read_model = ReadModelRedis(infra.redis, generation)
        app.state.deps = Deps(write, read_model, cache_max_age, LogFallback(events), breaker)
        app.state.runners = runners
        app.state.generation = generation
        infra.start_projections()
        try:
            yield
        finally:
            await generation.stop()
            await session.close()
            await infra.close()
            holder.clear()

    async def nats() -> None:
        await holder["infra"].ready_checks()["nats"]()

    async def redis() -> None:
        await holder["infra"].ready_checks()["redis"]()

    async def projections() -> None:
        stalled = [r.checkpoint_key for r in holder["infra"].runners if r.stalled]
        if stalled:
            raise RuntimeError(f"stalled: {stalled}")

    # Ready while it can serve either side: reads from Redis with NATS down, writes to NATS with Redis down.
    checks = {"store": any_of({"nats": nats, "redis": redis}), "nats": nats, "redis": redis, "projections": projections}
    app = create_base_app("EventFlow events", lifespan, checks, required=("store",))
    app.include_router(router)
    return app
