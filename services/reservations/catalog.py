"""Ports to the users and events services, their aiohttp adapters, and a short in-process cache.

The chain reads these to fail fast; none of them is an authority (the inventory hold is). Caching an
event for a second or two keeps a hot event from costing one HTTP round trip per request. The users service
is asked with this service's own token (client credentials, eventflow.service_token); events are public.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from datetime import datetime
from typing import Any, Generic, Protocol, TypeVar

import aiohttp

from eventflow.errors import Unavailable
from eventflow.http import get_json
from eventflow.service_token import ServiceToken, ServiceTokenError
from services.reservations.domain import EventoInfo


class DirectorioUsuarios(Protocol):
    async def existe(self, usuario_id: str) -> bool: ...


class CatalogoEventos(Protocol):
    async def evento(self, evento_id: str) -> EventoInfo | None: ...


# Events created before the organizer could set them carry neither: these are the events service's defaults.
LIMITE_POR_DEFECTO = 10
MAX_POR_DEFECTO = 10


def _instante(value: Any) -> datetime | None:
    return datetime.fromisoformat(value) if isinstance(value, str) and value else None


def evento_desde_documento(doc: dict[str, Any]) -> EventoInfo:
    """Reads the events service's document; `precio_centimos` preferred, a decimal `precio` accepted."""
    if doc.get("precio_centimos") is not None:
        precio = int(doc["precio_centimos"])
    else:
        precio = round(float(doc.get("precio") or 0) * 100)
    fecha = _instante(doc.get("fecha"))
    if fecha is None:
        raise ValueError("event without fecha")
    aforo = int(doc.get("aforo_total") or 0)
    limite = int(doc.get("limite_por_usuario") or LIMITE_POR_DEFECTO)
    return EventoInfo(
        id=str(doc.get("id") or doc.get("evento_id")),
        aforo_total=aforo,
        entradas_disponibles=int(doc.get("entradas_disponibles", aforo)),
        precio_centimos=precio,
        fecha=fecha,
        venta_desde=_instante(doc.get("venta_desde")),
        numerado=bool(doc.get("secciones")),
        limite_por_usuario=limite,
        max_por_solicitud=min(limite, int(doc.get("max_por_solicitud") or MAX_POR_DEFECTO)),
        organizador_id=str(doc["organizador_id"]) if doc.get("organizador_id") else None,
        nombre=str(doc.get("nombre") or ""),
        lugar=str(doc.get("lugar") or ""),
    )


V = TypeVar("V")


class _TtlCache(Generic[V]):
    """Caches found values for `ttl_s`; concurrent misses for one key share one fetch."""

    def __init__(self, ttl_s: float) -> None:
        self.ttl_s = ttl_s
        self._values: dict[str, tuple[float, V]] = {}
        self._inflight: dict[str, asyncio.Future[V | None]] = {}

    async def get(self, key: str, fetch: Callable[[], Awaitable[V | None]]) -> V | None:
        hit = self._values.get(key)
        if hit and hit[0] > time.monotonic():
            return hit[1]
        if key in self._inflight:
            return await asyncio.shield(self._inflight[key])
        future: asyncio.Future[V | None] = asyncio.get_running_loop().create_future()
        self._inflight[key] = future
        try:
            value = await fetch()
            if value is not None:
                self._values[key] = (time.monotonic() + self.ttl_s, value)
            future.set_result(value)
            return value
        except BaseException as err:
            future.set_exception(err)
            future.exception()  # mark retrieved: waiters (if any) re-raise it
            raise
        finally:
            del self._inflight[key]


class HttpDirectorioUsuarios:
    """GET {users_url}/api/usuarios/{id}/existe with our service token: 204 exists, 404 does not, anything else
    (a token the users service keeps refusing included) is unavailable. It answers no personal data."""

    def __init__(self, token: ServiceToken, base_url: str, cache_s: float = 5.0) -> None:
        self.token = token
        self.base_url = base_url.rstrip("/")
        self._cache: _TtlCache[bool] = _TtlCache(cache_s)

    async def existe(self, usuario_id: str) -> bool:
        async def fetch() -> bool | None:
            url = f"{self.base_url}/api/usuarios/{usuario_id}/existe"
            status, _ = await _get(self.token.get_json, url, "users")
            return True if status == 204 else None

        return bool(await self._cache.get(usuario_id, fetch))


class HttpCatalogoEventos:
    def __init__(self, session: aiohttp.ClientSession, base_url: str, cache_s: float = 1.0) -> None:
        self.session = session
        self.base_url = base_url.rstrip("/")
        self._cache: _TtlCache[EventoInfo] = _TtlCache(cache_s)

    async def evento(self, evento_id: str) -> EventoInfo | None:
        async def fetch() -> EventoInfo | None:
            url = f"{self.base_url}/api/eventos/{evento_id}"
            status, body = await _get(lambda u: get_json(self.session, u), url, "events")
            return evento_desde_documento(body) if status == 200 and isinstance(body, dict) else None

        return await self._cache.get(evento_id, fetch)


async def _get(get: Callable[[str], Awaitable[tuple[int, Any]]], url: str, service: str) -> tuple[int, Any]:
    """One retry for a dropped keep-alive connection (the server closed it as we reused it): GET is safe."""
    for attempt in (1, 2):
        try:
            status, body = await get(url)
            break
        except (aiohttp.ServerDisconnectedError, aiohttp.ClientOSError):
            if attempt == 2:
                raise Unavailable(f"the {service} service dropped the connection") from None
        except (aiohttp.ClientError, TimeoutError) as err:
            raise Unavailable(f"the {service} service did not answer ({type(err).__name__})") from None
        except ServiceTokenError as err:
            raise Unavailable(f"no service token to call the {service} service ({err})") from None
    if status not in (200, 204, 404):
        raise Unavailable(f"the {service} service answered {status}")
    return status, body
