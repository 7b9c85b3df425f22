"""Composition root of the users service: real adapters by default, overridable by tests."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

from fastapi import FastAPI

from eventflow.claims import UniquenessClaims
from eventflow.config import Settings
from eventflow.eventstore import EventStore
from eventflow.generations import Generation, ReadModelRedis
from eventflow.jetstream import RESERVAS, USUARIOS, StreamSpec, ensure_bucket
from eventflow.projections import Projection, ProjectionRunner
from eventflow.runtime import Infrastructure
from eventflow.web import ReadyCheck
from eventflow.web import create_app as create_web_app
from services.users import api, handlers
from services.users.privacy import KEYS_BUCKET, DataKeys
from services.users.projections import FAMILY, HistorialProjection, UsuariosProjection
from services.users.reconcile import Reconciler
from services.users.unicidad import STALE_AFTER_S, Unicidad

CLAIMS_BUCKET = "USER_CLAIMS"


def read_models() -> list[tuple[StreamSpec, Projection]]:
    return [(USUARIOS, UsuariosProjection()), (RESERVAS, HistorialProjection())]


def create_app(settings: Settings | None = None, **overrides: Any) -> FastAPI:
    """Overrides: `claim_stale_after`, `write_deadline` (seconds), `event_store` (an EventLog)."""
    settings = settings or Settings()
    infra: list[Infrastructure] = []

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        connected = await Infrastructure.connect(settings, "users", (USUARIOS, RESERVAS))
        infra.append(connected)
        # Reads and projections follow the family's current generation, so `make rebuild` can run beside them.
        generation = Generation(connected.redis, FAMILY)
        try:
            await generation.start()
            app.state.deps = await _dependencies(connected, generation, overrides)
            app.state.redis = ReadModelRedis(connected.redis, generation)
            app.state.runners = {r.projection.name: r for r in connected.runners}
            app.state.generation = generation
            connected.start_projections()
            yield
        finally:
            if hasattr(app.state, "deps"):
                await app.state.deps.reconciler.close()
            await generation.stop()
            await connected.close()
            infra.clear()

    def check(name: str) -> ReadyCheck:
        async def run() -> None:
            if not infra:
                raise RuntimeError("not started")
            await infra[0].ready_checks()[name]()

        return run

    app = create_web_app("EventFlow users", lifespan, {"nats": check("nats"), "redis": check("redis")})
    app.include_router(api.router)
    return app


async def _dependencies(
    infra: Infrastructure, generation: Generation, overrides: dict[str, Any]
) -> handlers.Dependencias:
    settings = infra.settings
    store = EventStore(infra.js, USUARIOS)
    claims = UniquenessClaims(await ensure_bucket(infra.js, CLAIMS_BUCKET, settings.replicas))
    keys_kv = await ensure_bucket(infra.js, KEYS_BUCKET, settings.replicas)

    event_log: handlers.EventLog = overrides.get("event_store", store)

    async def appeared(usuario_id: str) -> bool:
        events, _ = await event_log.load(usuario_id)
        return bool(events)

    data_keys = DataKeys(keys_kv, infra.redis, infra.key_ring())
    runners = [ProjectionRunner(infra.js, infra.redis, s, p, generation) for s, p in read_models()]
    infra.runners.extend(runners)
    deps = handlers.Dependencias(
        store=event_log,
        unicidad=Unicidad(claims, appeared, overrides.get("claim_stale_after", STALE_AFTER_S)),
        data_keys=data_keys,
        pseudonyms=infra.pseudonymizer(),
        usuarios=runners[0],
        reconciler=Reconciler(claims, data_keys, appeared),
        read_your_writes_timeout=settings.read_your_writes_timeout,
    )
    if "write_deadline" in overrides:
        deps.write_deadline = overrides["write_deadline"]
    return deps
