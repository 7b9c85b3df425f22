"""Composition root of the reservations service: settings, adapters, the chain, the orchestrator.

Tests pass adapters as overrides (in-memory fakes of our ports, or real ones built on the fixtures).
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import socket
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import aiohttp
from fastapi import FastAPI
from pydantic_settings import BaseSettings, SettingsConfigDict

from eventflow.config import Settings
from eventflow.errors import NotFound
from eventflow.eventstore import EventStore
from eventflow.generations import Generation
from eventflow.http import client_session, exit_requested
from eventflow.jetstream import RESERVAS, StreamSpec, connect
from eventflow.projections import Projection, ProjectionRunner
from eventflow.runtime import Infrastructure
from eventflow.service_token import ServiceToken
from eventflow.web import IdempotencyKeyMiddleware, ReadyCheck
from eventflow.web import create_app as create_base_app
from services.reservations import api, entradas_api, live, mias
from services.reservations.catalog import (
    CatalogoEventos,
    DirectorioUsuarios,
    HttpCatalogoEventos,
    HttpDirectorioUsuarios,
)
from services.reservations.chain import (
    CalculadorDePrecio,
    Manejador,
    Reloj,
    TokenizadorDePago,
    ValidadorDeDatos,
    ValidadorDeEvento,
    ValidadorDeInventario,
    ValidadorDeLimite,
    ValidadorDeUsuario,
    encadenar,
    reloj_utc,
)
from services.reservations.checkin_store import CheckinStore
from services.reservations.domain import Saga
from services.reservations.entradas import EntradasDeps
from services.reservations.handlers import Deps
from services.reservations.inventory import InventoryStore
from services.reservations.inventory_store import JetStreamInventoryStore
from services.reservations.payments import PaymentGateway
from services.reservations.payments_sim import SimulatedPaymentGateway
from services.reservations.saga import Orquestador, SagaConfig
from services.reservations.saga_store import BUCKET, ReservationArchive, SagaStore
from services.reservations.steps import SagaDeps
from services.reservations.ticket_keys import TicketKeys

INTERVENTIONS_KEY = "reservas:requiere_intervencion"


class ReservasSettings(BaseSettings):
    """EVENTFLOW_RESERVAS_*: the service's own knobs (the shared Settings hold connections and keys)."""

    model_config = SettingsConfigDict(env_prefix="EVENTFLOW_RESERVAS_", extra="ignore")

    espera_s: float = 5.0  # how long POST waits for an outcome before answering 202 + Location
    hold_ttl_s: float = 120.0
    # The per-user limit and the per-request maximum are the event's (set by its organizer); the chain's
    # limit pre-check reads the buyer's quota (one CP read per request), the hold enforces it atomically.
    precheck_limite: bool = True
    max_por_solicitud: int = 50  # a hard cap whatever the event says (a request lists at most 50 seats)
    tasa_cargo_bp: int = 500
    cargo_minimo_centimos: int = 50
    step_timeout_s: float = 10.0
    retry_for_s: float = 8.0
    record_retry_for_s: float = 60.0
    compensation_retry_for_s: float = 30.0
    lease_s: float = 30.0
    # The saga owner: distinct per process (two workers on one host must not share it). A restart with the
    # same id resumes its sagas at once, so the supervisor and the deployments set a stable one per replica;
    # the default (host and pid) is unique, and its sagas are picked up when their lease runs out.
    instancia: str = f"{socket.gethostname()}-{os.getpid()}"
    cache_eventos_s: float = 1.0
    cache_usuarios_s: float = 5.0


class PaymentsSimSettings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="EVENTFLOW_PAYMENTS_", extra="ignore")

    latency_s: float = 0.0
    failure_rate: float = 0.0
    # The simulated processor's ledger is the processor's state, not ours: it may live on its own NATS
    # (as a real processor's would), so it does not share our fsync budget. Default: our NATS.
    nats_url: str | None = None


def build_chain(
    cfg: ReservasSettings,
    usuarios: DirectorioUsuarios,
    eventos: CatalogoEventos,
    inventario: InventoryStore,
    pagos: PaymentGateway,
    reloj: Reloj = reloj_utc,
) -> Manejador:
    return encadenar(
        ValidadorDeDatos(cfg.max_por_solicitud),
        ValidadorDeUsuario(usuarios),
        ValidadorDeEvento(eventos, reloj),
        ValidadorDeLimite(inventario, activo=cfg.precheck_limite),
        ValidadorDeInventario(),
        CalculadorDePrecio(cfg.tasa_cargo_bp, cfg.cargo_minimo_centimos),
        TokenizadorDePago(pagos),
    )


def saga_config(cfg: ReservasSettings) -> SagaConfig:
    return SagaConfig(
        owner=cfg.instancia,
        step_timeout_s=cfg.step_timeout_s,
        retry_for_s=cfg.retry_for_s,
        record_retry_for_s=cfg.record_retry_for_s,
        compensation_retry_for_s=cfg.compensation_retry_for_s,
        lease_s=cfg.lease_s,
    )


def own_token(settings: Settings, session: aiohttp.ClientSession) -> ServiceToken:
    """This service's own token for the users service, from its client credential (eventflow.system.service_env)."""
    assert settings.client_id and settings.client_secret, "checked in create_app"
    return ServiceToken(session, settings.users_url, settings.client_id, settings.client_secret)


def create_app(
    settings: Settings | None = None,
    *,
    reservas: ReservasSettings | None = None,
    usuarios: DirectorioUsuarios | None = None,
    eventos: CatalogoEventos | None = None,
    inventario: InventoryStore | None = None,
    pagos: PaymentGateway | None = None,
    reloj: Reloj = reloj_utc,
) -> FastAPI:
    settings = settings or Settings()
    cfg = reservas or ReservasSettings()
    if usuarios is None and not (settings.client_id and settings.client_secret):
        raise RuntimeError(
            "EVENTFLOW_CLIENT_ID and EVENTFLOW_CLIENT_SECRET are required: the reservation chain asks the users "
            "service with this service's own token (make run gives every service its credential)"
        )
    checks: dict[str, ReadyCheck] = {}

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        infra = await Infrastructure.connect(settings, "reservations", streams=(RESERVAS,))
        checks.update(infra.ready_checks())
        session = client_session()
        inv = inventario or await JetStreamInventoryStore.create(
            infra.js, replicas=settings.replicas, on_commit=live.Publisher(infra.nc)
        )
        sim = PaymentsSimSettings()
        processor_nc = await connect(sim.nats_url, "payments-sim") if sim.nats_url and pagos is None else None
        processor_js = processor_nc.jetstream(timeout=5.0) if processor_nc else infra.js
        pay = pagos or SimulatedPaymentGateway(
            processor_js, sim.latency_s, sim.failure_rate, replicas=settings.replicas
        )
        store = await SagaStore.open(infra.js, BUCKET, settings.replicas)
        reservas = EventStore(infra.js, RESERVAS)

        async def count_intervention(saga: Saga) -> None:
            await infra.redis.incr(INTERVENTIONS_KEY)

        orquestador = Orquestador(
            store,
            SagaDeps(inv, pay, reservas, cfg.hold_ttl_s),
            saga_config(cfg),
            on_intervention=count_intervention,
        )
        catalogo = eventos or HttpCatalogoEventos(session, settings.events_url, cfg.cache_eventos_s)
        directorio = usuarios or HttpDirectorioUsuarios(
            own_token(settings, session), settings.users_url, cfg.cache_usuarios_s
        )
        cadena = build_chain(cfg, directorio, catalogo, inv, pay, reloj)
        app.state.verifier = await infra.token_verifier(session)
        app.state.deps = Deps(
            store,
            ReservationArchive(reservas),
            orquestador,
            cadena,
            cfg.instancia,
            cfg.lease_s,
            eventos=catalogo,
            ids=infra.pseudonymizer(),
        )
        app.state.entradas = EntradasDeps(
            app.state.deps,
            await TicketKeys.open(infra.js, infra.key_ring(), settings.replicas),
            await CheckinStore.open(infra.js, settings.replicas),
        )
        leer = live.lector(inv) if isinstance(inv, live.InventarioLegible) else _sin_mapa
        app.state.leer_estado = leer
        app.state.relay = live.Relay(infra.nc, leer, exit_requested())
        app.state.espera_s = cfg.espera_s
        app.state.orquestador = orquestador
        # "My tickets" (mias.py): follows its family's generation, so `make rebuild` can run beside it.
        generation = Generation(infra.redis, mias.FAMILY)
        await generation.start()
        infra.runners.extend(ProjectionRunner(infra.js, infra.redis, s, p, generation) for s, p in read_models())
        app.state.redis, app.state.generation = infra.redis, generation
        infra.start_projections()
        app.state.inventario, app.state.pagos = inv, pay
        await orquestador.resume_all()
        supervisor = asyncio.create_task(orquestador.supervise(), name="sagas:supervisor")
        try:
            yield
        finally:
            supervisor.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await supervisor
            await orquestador.shutdown()
            await generation.stop()
            drain: Any = getattr(inv, "drain", None)
            if drain is not None:
                await drain()
            await session.close()
            if processor_nc is not None:
                await processor_nc.drain()
            await infra.close()

    app = create_base_app("EventFlow reservations", lifespan, checks, required=("nats",))  # CP only: Redis is optional
    app.add_middleware(IdempotencyKeyMiddleware, paths=("/api/reservar",))
    app.include_router(api.router)
    app.include_router(entradas_api.router)
    return app


async def _sin_mapa(evento_id: str) -> dict[str, Any]:
    """An inventory adapter without whole-state reads (a test's fake) has no seat map to show."""
    raise NotFound(f"no availability map for event {evento_id!r}")


def read_models() -> list[tuple[StreamSpec, Projection]]:
    """Only which reservations a buyer has (mias.py); each one is read from the CP store (always current)."""
    return [(RESERVAS, mias.MisReservasProjection())]
