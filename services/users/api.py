"""HTTP API of the users service: thin; builds commands, calls the handler or a view, shapes responses."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator
from typing import Annotated, Any

import orjson
from fastapi import APIRouter, Depends, Header, Query, Request, Response
from fastapi.responses import StreamingResponse
from pydantic import BaseModel, Field
from redis.asyncio import Redis
from redis.exceptions import RedisError

from eventflow.auth import ADMIN, COMPRADOR, ROLES, Caller, Principal, con_rol
from eventflow.breaker import Breaker
from eventflow.responses import JsonResponse
from services.users import borrado, exportacion, handlers, views
from services.users import identidad as auth_handlers
from services.users.anonimato import MAX_SUPRIMIDAS
from services.users.documentos import TipoDocumento
from services.users.domain import CuentaNoDisponible, RegistrarUsuario, Usuario, UsuarioNoEncontrado

MAX_AGE_S = 5
router = APIRouter(prefix="/api/usuarios", tags=["usuarios"])
IdempotencyKey = Annotated[str | None, Header(alias="Idempotency-Key", min_length=1, max_length=200)]


class UsuarioNuevo(BaseModel):
    """Only types and sizes here; the registration rules (formats, check digits) live in the domain."""

    tipo_documento: TipoDocumento
    nro_documento: str = Field(max_length=64, examples=["12.345.678"])
    nombre: str = Field(max_length=400)
    apellido: str = Field(max_length=400)
    email: str = Field(max_length=400, json_schema_extra={"format": "email"})
    password: str = Field(
        max_length=1_000, json_schema_extra={"format": "password", "writeOnly": True}, description="10+ characters"
    )


class Compra(BaseModel):
    reserva_id: str
    evento_id: str
    cantidad: int
    asientos: list[str]
    importe: float
    fecha: str
    estado: str
    cancelada_en: str | None = None
    importe_reembolsado: float | None = None


class UsuarioPublico(BaseModel):
    id: str
    tipo_documento: TipoDocumento
    nro_documento: str
    nombre: str
    apellido: str
    email: str
    registrado_en: str
    historial_compras: list[Compra]
    historial_url: str
    roles: list[str] = []


class CambioDePassword(BaseModel):
    actual: str = Field(max_length=1_000, json_schema_extra={"format": "password", "writeOnly": True})
    nueva: str = Field(max_length=1_000, json_schema_extra={"format": "password", "writeOnly": True})


class RolesIn(BaseModel):
    roles: list[str] = Field(max_length=len(ROLES), examples=[["organizador"]])


class RolesOut(BaseModel):
    id: str
    roles: list[str]


class Historial(BaseModel):
    usuario_id: str
    pagina: int
    tamano: int
    total: int
    compras: list[Compra]


async def get_deps(request: Request) -> handlers.Dependencias:
    deps: handlers.Dependencias = request.app.state.deps
    return deps


async def get_redis(request: Request) -> Redis:
    redis: Redis = request.app.state.redis
    return redis


async def get_identidad(request: Request) -> auth_handlers.Identidad:
    identidad: auth_handlers.Identidad = request.app.state.identidad
    return identidad


def get_breaker(request: Request) -> Breaker:
    breaker: Breaker = request.app.state.read_model_breaker
    return breaker


Deps = Annotated[handlers.Dependencias, Depends(get_deps)]
BreakerDep = Annotated[Breaker, Depends(get_breaker)]
RedisDep = Annotated[Redis, Depends(get_redis)]
IdentidadDep = Annotated[auth_handlers.Identidad, Depends(get_identidad)]


def publico(usuario: Usuario) -> dict[str, Any]:
    """The registration's answer: the same document a GET right after gives (every new account is a comprador)."""
    return {
        "id": usuario.id,
        "tipo_documento": usuario.tipo_documento.value,
        **usuario.personal_data(),
        "registrado_en": usuario.registrado_en,
        "historial_compras": [],
        "historial_url": views.historial_url(usuario.id),
        "roles": [COMPRADOR],
    }


def cacheable(request: Request, body: dict[str, Any], etag: str) -> Response:
    """Short-lived and private: these documents carry personal data, so no shared cache may keep them."""
    headers = {"ETag": etag, "Cache-Control": f"private, max-age={MAX_AGE_S}"}
    wanted = {tag.strip().removeprefix("W/") for tag in request.headers.get("if-none-match", "").split(",")}
    if etag in wanted or "*" in wanted:
        return Response(status_code=304, headers=headers)
    return Response(orjson.dumps(body), media_type="application/json", headers=headers)


@router.post("", status_code=201, response_model=UsuarioPublico)
async def registrar(body: UsuarioNuevo, deps: Deps, idempotency_key: IdempotencyKey = None) -> Response:
    """Anyone may register, as a comprador. 201 when registered; 200 with the same user when the same
    Idempotency-Key and body are sent again (the password of the first request stays). The answer never holds
    the password or its hash."""
    cmd = RegistrarUsuario(**body.model_dump())
    usuario, created = await handlers.registrar_usuario(cmd, deps, idempotency_key)
    headers = {"Location": f"/api/usuarios/{usuario.id}"}
    if idempotency_key is not None:
        headers["Idempotency-Key"] = idempotency_key
    return JsonResponse(publico(usuario), status_code=201 if created else 200, headers=headers)


@router.get("/me", response_model=UsuarioPublico)
async def yo(caller: Caller, request: Request, deps: Deps, redis: RedisDep, identidad: IdentidadDep) -> Response:
    """The signed-in user; 404 for a caller with no user here (a service, or an external issuer's user)."""
    return await _usuario(caller.sub, caller, request, deps, redis, identidad)


@router.put("/me/password", status_code=204)
async def cambiar_password(
    body: CambioDePassword, caller: Caller, deps: Deps, redis: RedisDep, identidad: IdentidadDep
) -> Response:
    """Needs the current password; every other session of the user ends (refresh tokens stop working). The new
    one meets the registration's policy, the user's own name and email included (422 otherwise)."""
    personal = await _personal_words(caller, deps, redis, identidad)
    await auth_handlers.cambiar_password(caller, body.actual, body.nueva, caller.session_id, identidad, personal)
    return Response(status_code=204)


Admin = Annotated[Principal, Depends(con_rol(ADMIN))]
K = Annotated[int, Query(ge=2, le=1_000, description="every quasi-identifier combination appears at least k times")]


async def get_exportador(request: Request) -> exportacion.Exportador:
    """A new one per export: its event cache lives as long as the export."""
    state = request.app.state
    return exportacion.Exportador(state.redis, state.deps.data_keys, state.info_evento)


Suprimir = Annotated[
    float, Query(ge=0, le=1, description="share of rows that may be suppressed before generalizing further")
]
ExportadorDep = Annotated[exportacion.Exportador, Depends(get_exportador)]


@router.get(
    "/exportar",  # every format documented (the fuzz suite checks each answer against the schema)
    responses={200: {"content": {media: {} for media in exportacion.MEDIA_TYPES.values()}}},
)
async def exportar(
    caller: Admin,
    exportador: ExportadorDep,
    formato: exportacion.Formato = exportacion.Formato.JSON,
    k: K = 5,
    suprimir_hasta: Suprimir = MAX_SUPRIMIDAS,
) -> StreamingResponse:
    """Admin only. Anonymized, k-anonymous, streamed; the summary is in `resumen` (JSON), the last line (NDJSON)
    or GET /exportar/resumen (every format, and the Export-* headers)."""
    plan = await exportador.planificar(k, suprimir_hasta)
    resumen, contador = plan.resumen(), [0]

    async def body() -> AsyncIterator[bytes]:
        try:
            async for chunk in exportacion.serializar(exportador.registros(plan), formato, resumen, contador):
                yield chunk
        finally:
            exportacion.auditar(caller.sub, formato.value, k, contador[0], plan.suprimidas)

    headers = {"Export-K": str(k), "Export-Suprimidas": str(plan.suprimidas), "Cache-Control": "no-store"}
    headers["Content-Disposition"] = f'attachment; filename="usuarios.{formato.value}"'
    return StreamingResponse(body(), media_type=exportacion.MEDIA_TYPES[formato], headers=headers)


@router.get("/exportar/resumen")
async def exportar_resumen(
    caller: Admin, exportador: ExportadorDep, k: K = 5, suprimir_hasta: Suprimir = MAX_SUPRIMIDAS
) -> Response:
    """What an export with these parameters would apply and suppress (computed now; no rows)."""
    return JsonResponse(
        (await exportador.planificar(k, suprimir_hasta)).resumen(), headers={"Cache-Control": "no-store"}
    )


@router.delete("/{usuario_id}", status_code=204)
async def borrar(usuario_id: str, caller: Caller, deps: Deps, identidad: IdentidadDep) -> Response:
    """The user themself or an admin: crypto-shredding (see services/users/borrado.py). Idempotent: 204 again."""
    _own_or_admin(usuario_id, caller, identidad)
    await borrado.borrar_usuario(usuario_id, caller.sub, deps, identidad)
    return Response(status_code=204)


@router.get("/{usuario_id}", response_model=UsuarioPublico)
async def obtener(
    usuario_id: str, caller: Caller, request: Request, deps: Deps, redis: RedisDep, identidad: IdentidadDep
) -> Response:
    """That user or an admin; anyone else gets 404, as for a user that does not exist."""
    return await _usuario(usuario_id, caller, request, deps, redis, identidad)


@router.get("/{usuario_id}/existe", status_code=204)
async def existe(
    usuario_id: str, caller: Caller, redis: RedisDep, identidad: IdentidadDep, breaker: BreakerDep
) -> Response:
    """For our services (the reservation chain): whether the user exists, without any of their personal data."""
    if not (caller.es_servicio or caller.es_admin or auth_handlers.usuario_local(caller, identidad) == usuario_id):
        raise UsuarioNoEncontrado(usuario_id)
    if not await _existe(redis, identidad, usuario_id, breaker):
        raise UsuarioNoEncontrado(usuario_id)
    return Response(status_code=204)


async def _existe(redis: Redis, identidad: auth_handlers.Identidad, usuario_id: str, breaker: Breaker) -> bool:
    """The read model first (one EXISTS); on a miss or with Redis down, the log on the CP side: a user who
    registered a moment ago is not projected yet, and must be able to buy at once; an erased one never can.
    After a Redis failure the log answers alone for a moment (eventflow.breaker): a hung Redis costs its timeout
    once, not on every reservation."""
    if not breaker.open:
        try:
            if await views.existe(redis, usuario_id):
                return True
        except RedisError:
            breaker.failed()
    return await auth_handlers.registrado_y_vigente(identidad.usuarios, usuario_id)


@router.get("/{usuario_id}/historial", response_model=Historial)
async def historial(
    usuario_id: str,
    caller: Caller,
    request: Request,
    redis: RedisDep,
    identidad: IdentidadDep,
    pagina: Annotated[int, Query(ge=1, le=10_000)] = 1,
    tamano: Annotated[int, Query(ge=1, le=100)] = 20,
) -> Response:
    _own_or_admin(usuario_id, caller, identidad)
    body, etag = await views.historial(redis, usuario_id, pagina, tamano)
    return cacheable(request, body, etag)


@router.put("/{usuario_id}/roles", response_model=RolesOut)
async def roles(usuario_id: str, body: RolesIn, caller: Caller, identidad: IdentidadDep) -> Response:
    """Admin only: the user's roles (comprador is always kept). They apply from the user's next token."""
    cuenta = await auth_handlers.asignar_roles(caller, usuario_id, body.roles, identidad)
    return JsonResponse({"id": cuenta.usuario_id, "roles": list(cuenta.roles)})


async def _personal_words(
    caller: Principal, deps: Deps, redis: Redis, identidad: auth_handlers.Identidad
) -> tuple[str, ...]:
    """The caller's email and names, for the password policy; none if the profile cannot be read right now."""
    usuario_id = auth_handlers.usuario_local(caller, identidad)
    if usuario_id is None:
        return ()
    try:
        body, _ = await views.usuario(redis, deps.data_keys, usuario_id)
    except Exception:  # the policy's other rules still apply; the profile is not worth refusing the change for
        return ()
    return body["email"], body["nombre"], body["apellido"]


def _own_or_admin(usuario_id: str, caller: Principal, identidad: auth_handlers.Identidad) -> None:
    if auth_handlers.usuario_local(caller, identidad) != usuario_id and not caller.es_admin:
        raise UsuarioNoEncontrado(usuario_id)  # existence is not revealed


async def _usuario(
    usuario_id: str, caller: Principal, request: Request, deps: Deps, redis: Redis, identidad: auth_handlers.Identidad
) -> Response:
    _own_or_admin(usuario_id, caller, identidad)
    try:
        body, etag = await views.usuario(redis, deps.data_keys, usuario_id)
    except UsuarioNoEncontrado:
        if not await handlers.esperar_proyeccion(usuario_id, deps):
            raise
        body, etag = await views.usuario(redis, deps.data_keys, usuario_id)
    own = auth_handlers.usuario_local(caller, identidad) == usuario_id
    roles = await _roles(usuario_id, caller if own else None, deps)
    # The ETag covers the roles too: a role change must not be answered with a 304 of the old document.
    return cacheable(request, {**body, "roles": roles}, views.etag(etag, ",".join(roles)))


async def _roles(usuario_id: str, own: Principal | None, deps: Deps) -> list[str]:
    """The account's roles, from CUENTAS (CP side). While NATS is unreachable a profile still reads, like the rest
    of it: one's own (`own`, the caller) with the roles of one's verified token; another user's is a 503."""
    with contextlib.suppress(Exception):  # unreachable, or no answer in time: as a disconnection
        if deps.cp_connected():
            cuenta = await deps.cuentas.get(usuario_id)
            return list(cuenta.roles) if cuenta else [COMPRADOR]
    if own is None:
        raise CuentaNoDisponible()
    return [role for role in ROLES if role in own.roles]
