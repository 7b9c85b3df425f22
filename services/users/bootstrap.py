"""Composition root of the users service: real adapters by default, overridable by tests."""

from __future__ import annotations

import asyncio
import hashlib
import logging
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from typing import Any

from fastapi import FastAPI

from eventflow import keys
from eventflow.breaker import Breaker
from eventflow.claims import UniquenessClaims
from eventflow.config import Settings
from eventflow.contracts import EVENTO_CREADO
from eventflow.eventstore import EventStore
from eventflow.generations import Generation, ReadModelRedis
from eventflow.http import client_session
from eventflow.jetstream import EVENTOS, RESERVAS, USUARIOS, StreamSpec, ensure_bucket
from eventflow.projections import Projection, ProjectionRunner
from eventflow.retry import retry_by_time
from eventflow.runtime import Infrastructure
from eventflow.signing_keys import SigningKeys, open_buckets
from eventflow.web import ReadyCheck
from eventflow.web import create_app as create_web_app
from services.users import api, auth_api, borrado, contrasenas, handlers, identidad
from services.users.contrasenas import Hasher
from services.users.cuentas import BUCKET as CUENTAS_BUCKET
from services.users.cuentas import Cuentas
from services.users.documentos import TipoDocumento
from services.users.domain import RegistrarUsuario
from services.users.privacy import KEYS_BUCKET, DataKeys
from services.users.projections import FAMILY, HistorialProjection, UsuariosProjection
from services.users.reconcile import Reconciler
from services.users.sesiones import BUCKET as SESIONES_BUCKET
from services.users.sesiones import TTL_S as SESIONES_TTL_S
from services.users.sesiones import Sesiones
from services.users.throttle import SignInThrottle
from services.users.unicidad import STALE_AFTER_S, Unicidad

CLAIMS_BUCKET = "USER_CLAIMS"
ADMIN_NAMES = ("Administrador", "EventFlow")  # the first admin's nombre and apellido, when it is registered
log = logging.getLogger(__name__)


def read_models() -> list[tuple[StreamSpec, Projection]]:
    return [(USUARIOS, UsuariosProjection()), (RESERVAS, HistorialProjection())]


def create_app(settings: Settings | None = None, **overrides: Any) -> FastAPI:
    """Overrides: `claim_stale_after`, `write_deadline` (seconds), `event_store` (an EventLog), `throttle_redis`
    (the sign-in throttle's own Redis client, e.g. one whose server is gone), `read_model_breaker`."""
    settings = settings or Settings()
    infra: list[Infrastructure] = []

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        connected = await Infrastructure.connect(settings, "users", (USUARIOS, RESERVAS))
        infra.append(connected)
        # Reads and projections follow the family's current generation, so `make rebuild` can run beside them.
        generation = Generation(connected.redis, FAMILY)
        session = client_session()
        try:
            await generation.start()
            app.state.verifier = await connected.token_verifier(session)
            app.state.published_keys = connected.published_keys
            app.state.trusted_proxies = settings.trusted_proxies
            app.state.deps = await _dependencies(connected, generation, overrides)
            app.state.identidad = await _identidad(connected, app.state.deps, overrides)
            app.state.redis = ReadModelRedis(connected.redis, generation)
            # The existence check skips Redis for a while after a failure (eventflow.breaker).
            app.state.read_model_breaker = overrides.get("read_model_breaker") or Breaker()
            app.state.info_evento = _info_evento(EventStore(connected.js, EVENTOS))
            app.state.runners = {r.projection.name: r for r in connected.runners}
            app.state.generation = generation
            connected.start_projections()
            app.state.borrados_pendientes = asyncio.create_task(_sweep(connected, app.state.deps, app.state.identidad))
            connected.background.append(app.state.borrados_pendientes)
            if settings.admin_email and settings.admin_password:
                await _first_admin(settings.admin_email, settings.admin_password, app.state.deps, app.state.identidad)
            yield
        finally:
            await session.close()
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

    # Ready on NATS (sign-up, sign-in, the log): with Redis down reads answer 503 quickly; it stays in rotation.
    checks = {"nats": check("nats"), "redis": check("redis")}
    app = create_web_app("EventFlow users", lifespan, checks, required=("nats",))
    app.include_router(auth_api.router)
    app.include_router(api.router)
    return app


def _info_evento(eventos: EventStore) -> Callable[[str], Awaitable[dict[str, Any] | None]]:
    """An event's EventoCreado data, read from the EVENTOS stream (any replica: a category and a date), for the
    export; None when it cannot be read (the export says `desconocida`)."""

    async def info(evento_id: str) -> dict[str, Any] | None:
        try:
            events, _ = await eventos.load(evento_id, direct=True)
        except Exception:
            log.warning("event unreadable for the export", extra={"evento_id": evento_id})
            return None
        created = next((e for e in events if e.type == EVENTO_CREADO), None)
        return created.data if created else None

    return info


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

    data_keys = DataKeys(keys_kv, infra.redis, keys.key_ring(settings))
    cuentas = Cuentas(await ensure_bucket(infra.js, CUENTAS_BUCKET, settings.replicas))
    runners = [ProjectionRunner(infra.js, infra.redis, s, p, generation) for s, p in read_models()]
    infra.runners.extend(runners)
    hasher = Hasher(settings.password_hash_profile)
    if settings.password_hash_profile == "test":
        log.warning("passwords are hashed with the weak test profile: never use it for real accounts")
    deps = handlers.Dependencias(
        store=event_log,
        unicidad=Unicidad(claims, appeared, overrides.get("claim_stale_after", STALE_AFTER_S)),
        data_keys=data_keys,
        pseudonyms=infra.pseudonymizer(),
        usuarios=runners[0],
        reconciler=Reconciler(claims, data_keys, appeared, cuentas),
        read_your_writes_timeout=settings.read_your_writes_timeout,
        cuentas=cuentas,
        hasher=hasher,
        cp_connected=lambda: infra.nc.is_connected,
    )
    if "write_deadline" in overrides:
        deps.write_deadline = overrides["write_deadline"]
    return deps


async def _identidad(
    infra: Infrastructure, deps: handlers.Dependencias, overrides: dict[str, Any]
) -> identidad.Identidad:
    """The token issuer: its signing keys (one is made and published at the first start), sessions, throttle."""
    settings = infra.settings
    private_kv, jwks_kv = await open_buckets(infra.js, settings.replicas)
    signing = SigningKeys(
        private_kv,
        jwks_kv,
        keys.key_ring(settings),
        rotate_after_s=settings.signing_key_rotation_s,
        token_ttl_s=settings.access_token_ttl_s,
    )
    # A fresh R3 bucket may not answer for a moment after its creation (a leader being elected): retry by time.
    await retry_by_time(signing.current, 20.0)
    if infra.published_keys is not None:
        await infra.published_keys.refresh(force=True)
    infra.background.append(asyncio.create_task(_prune_keys(signing), name="auth:prune-keys"))
    sesiones_kv = await ensure_bucket(infra.js, SESIONES_BUCKET, settings.replicas, ttl_s=SESIONES_TTL_S)
    claims = UniquenessClaims(await ensure_bucket(infra.js, CLAIMS_BUCKET, settings.replicas))
    return identidad.Identidad(
        cuentas=deps.cuentas,
        sesiones=Sesiones(sesiones_kv, infra.js),
        emisor=identidad.Emisor(
            signing,
            settings.auth_issuer,
            settings.auth_audience,
            settings.access_token_ttl_s,
            published=infra.published_keys,
        ),
        hasher=deps.hasher,
        throttle=SignInThrottle(overrides.get("throttle_redis", infra.redis)),
        claims=claims,
        pseudonyms=deps.pseudonyms,
        usuarios=deps.store,
        service_key=settings.service_key,
    )


async def _sweep(infra: Infrastructure, deps: handlers.Dependencias, ids: identidad.Identidad) -> list[str]:
    """Erasures a crash left halfway are completed at every start (services/users/borrado.py)."""
    try:
        done = await borrado.completar_pendientes(infra.js, deps, ids)
    except Exception:
        log.exception("could not complete pending erasures; the next start tries again")
        return []
    if done:
        log.info("pending erasures completed", extra={"count": len(done)})
    return done


async def _prune_keys(signing: SigningKeys, every_s: float = 600.0) -> None:
    """Retired public keys leave the JWKS once no token they signed can be valid."""
    while True:
        await asyncio.sleep(every_s)
        try:
            await signing.prune()
        except Exception:
            log.exception("could not prune retired signing keys; will try again")


async def _first_admin(email: str, password: str, deps: handlers.Dependencias, ids: identidad.Identidad) -> None:
    """EVENTFLOW_ADMIN_EMAIL / _PASSWORD, at every start; idempotent across restarts and replicas. The most
    powerful account meets the same password policy as everyone's (checked here, not only when it is registered,
    since a start may also set the password of an account that exists)."""
    if problems := contrasenas.problemas(password, email, *ADMIN_NAMES):
        codes = ", ".join(p.code for p in problems)
        raise RuntimeError(f"EVENTFLOW_ADMIN_PASSWORD breaks the password policy ({codes}); choose another")
    digest = hashlib.sha256(email.strip().casefold().encode()).hexdigest()

    async def registrar() -> str:
        cmd = RegistrarUsuario(
            tipo_documento=TipoDocumento.PASAPORTE,
            nro_documento=f"AD{digest[:7].upper()}",
            nombre=ADMIN_NAMES[0],
            apellido=ADMIN_NAMES[1],
            email=email,
            password=password,
        )
        usuario, _ = await handlers.registrar_usuario(cmd, deps, idempotency_key=f"first-admin:{digest}")
        return usuario.id

    await identidad.asegurar_admin(email, password, ids, registrar)
