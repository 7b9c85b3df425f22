"""The authorization matrix: every route of the events and reservations services, with every kind of caller,
through the gateway and on each service's own port, gets exactly the status the table below says.

Real servers throughout: the users (token issuer), events, reservations and gateway apps on real uvicorn servers,
real NATS and Redis. Callers sign in through the real token endpoint. The bad tokens all claim the admin role, so
one that slipped through would show up as a 200/201 instead of a 401:
- forged: the current key id, signed with another key;
- expired: the real issuer's key and code, issued an hour ago (as a replayed old token would be);
- alg none, and a real token whose payload was edited (roles: admin) keeping its signature;
- another audience: the real issuer's key and code, for an audience that is not ours;
- identity headers only: an anonymous request that claims to be an admin in X-User-Id and friends.
"""

from __future__ import annotations

import base64
import time
import uuid
from collections.abc import AsyncIterator, Callable
from contextlib import AsyncExitStack
from dataclasses import dataclass, field
from typing import Any

import httpx
import orjson
import pytest
import pytest_asyncio
from fastapi import FastAPI
from joserfc import jwt
from joserfc.jwk import ECKey

from eventflow.auth import ADMIN, CONTROL, ORGANIZADOR
from services.events.bootstrap import create_app as events_app
from services.gateway.bootstrap import create_app as gateway_app
from services.gateway.config import GatewaySettings
from services.reservations.bootstrap import ReservasSettings
from services.reservations.bootstrap import create_app as reservations_app
from services.users.bootstrap import create_app as users_app
from services.users.identidad import Emisor
from tests.reservations.helpers import pago, serve
from tests.utils.auth import Cuenta, admin, bearer, con_rol, datos_de_registro, registrar
from tests.utils.servers import Servers

pytestmark = [pytest.mark.asyncio(loop_scope="module"), pytest.mark.slow]

PEOPLE = ("buyer", "stranger", "organizer", "other_organizer", "control", "admin")
BAD = ("anonymous", "identity_headers", "forged", "expired", "alg_none", "tampered", "other_audience")
CALLERS = PEOPLE + BAD
NO_SUCH_RESERVATION = "/problems/reserva-no-encontrada"


def row(default: int, **cells: int) -> dict[str, int]:
    """Every caller gets `default`, except those named; every bad token gets 401 unless named."""
    return {caller: cells.get(caller, 401 if caller in BAD else default) for caller in CALLERS}


def public(status: int) -> dict[str, int]:
    return dict.fromkeys(CALLERS, status)


# The table. "buyer" bought the reservation R on event E of "organizer".
TABLE: dict[str, dict[str, int]] = {
    "GET /api/eventos": public(200),  # public reads take no caller: a token sent along is not even looked at
    "GET /api/eventos/{E}": public(200),
    "POST /api/eventos": row(403, organizer=201, other_organizer=201, admin=201),
    "POST /api/reservar (usuario_id: buyer)": row(403, buyer=201),  # another user's id: 403 for everyone
    "POST /api/reservar (no usuario_id)": row(201),  # every person buys in their own name
    "GET /api/reservas/{R}": row(404, buyer=200, organizer=200, admin=200),  # others: as if it did not exist
    "GET /api/reservar/{R}": row(404, buyer=200, organizer=200, admin=200),
    "POST /api/reservas/{R}/cancelar": row(404, buyer=200, admin=200, organizer=403),  # organizer may read it
    "GET /api/usuarios/exportar": row(403, admin=200),
    "GET /api/usuarios/exportar/resumen": row(403, admin=200),
    "DELETE /api/usuarios/{U}": row(404, admin=204),  # U: another user (a fresh one); one's own is in tests/users
    # Issue 9. T is R's first ticket; a check-in that may succeed scans a ticket of its own (else 409 ya_usado).
    "GET /api/reservas": row(200),  # "my tickets": every person sees their own (none but the buyer has any)
    "GET /api/reservas/{R}/pdf": row(404, buyer=200),
    "GET /api/tickets/{T}/qr": row(404, buyer=200),
    "GET /api/tickets/{T}/pdf": row(404, buyer=200),
    "POST /api/checkin": row(403, organizer=200, control=200, admin=200),
    "GET /api/checkin/eventos/{E}": row(403, organizer=200, control=200, admin=200),
    "GET /api/checkin/claves/{E}": public(200),
    "GET /api/disponibilidad/{E}": public(200),
    "GET /api/eventos/{E}/ventas": row(403, organizer=200, admin=200),
}
# /metrics is not in the table: it is for the scraper, guarded by its own token (eventflow.metrics), not by a role,
# and the gateway never forwards it to a service (tests/gateway/test_gateway.py).


@dataclass
class World:
    urls: dict[str, str]  # gateway, users, events, reservations
    headers: dict[str, dict[str, str]]
    people: dict[str, Cuenta]
    evento: str
    reserva: str
    http: httpx.AsyncClient
    codigo: str = ""  # the code of R's first ticket
    seen: list[httpx.Response] = field(default_factory=list)

    async def call(self, target: str, service: str, method: str, path: str, caller: str, **kw: Any) -> httpx.Response:
        base = self.urls["gateway" if target == "gateway" else service]
        response = await self.http.request(method, base + path, headers=self.headers[caller], **kw)
        self.seen.append(response)
        return response

    async def compra(self, target: str, caller: str = "buyer") -> str:
        """A fresh confirmed reservation of `caller` (for the cells that change it)."""
        return str((await self.confirmada(target, caller))["id"])

    async def confirmada(self, target: str, caller: str = "buyer") -> dict[str, Any]:
        response = await self.call(target, "reservations", "POST", "/api/reservar", caller, json=self.body(None))
        assert response.status_code == 201 and response.json()["estado"] == "confirmada", response.text
        return dict(response.json())

    def body(self, usuario_id: str | None) -> dict[str, Any]:
        body: dict[str, Any] = {"evento_id": self.evento, "cantidad": 1, "pago": pago()}
        if usuario_id is not None:
            body["usuario_id"] = usuario_id
        return body


def evento_body() -> dict[str, Any]:
    return {
        "nombre": f"Matriz {uuid.uuid4().hex[:6]}",
        "fecha": "2031-06-01T21:00:00+00:00",
        "lugar": "Sala",
        "aforo_total": 500,
        "precio": 10,
        "categoria": "pruebas",
        "limite_por_usuario": 50,
    }


def part(doc: dict[str, Any]) -> str:
    return base64.urlsafe_b64encode(orjson.dumps(doc)).rstrip(b"=").decode()


def unpart(text: str) -> dict[str, Any]:
    decoded: dict[str, Any] = orjson.loads(base64.urlsafe_b64decode(text + "=" * (-len(text) % 4)))
    return decoded


async def bad_tokens(users: FastAPI, model: Cuenta, boss: Cuenta) -> dict[str, str]:
    """Each way a token must be refused; all of them claim the admin role."""
    header, payload, signature = model.token.split(".")
    claims = {**unpart(boss.token.split(".")[1]), "jti": uuid.uuid4().hex}
    real: Emisor = users.state.identidad.emisor
    forger = ECKey.generate_key("P-256", parameters={"kid": unpart(header)["kid"]})

    def issuer(audience: str = real.audience, clock: Callable[[], float] = time.time) -> Emisor:
        return Emisor(real.keys, real.issuer, audience, real.ttl_s, clock)

    expired, _ = await issuer(clock=lambda: time.time() - 3600).acceso(boss.id, (ADMIN,))
    other_audience, _ = await issuer(audience="someone-elses-api").acceso(boss.id, (ADMIN,))
    return {
        "forged": jwt.encode({"alg": "ES256", "kid": forger.kid, "typ": "JWT"}, claims, forger),
        "expired": expired,
        "alg_none": f"{part({'alg': 'none', 'typ': 'JWT'})}.{part(claims)}.",
        "tampered": f"{header}.{part({**unpart(payload), 'roles': [ADMIN, ORGANIZADOR]})}.{signature}",
        "other_audience": other_audience,
    }


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def world(servers: Servers) -> AsyncIterator[World]:
    settings = servers.settings()
    users = users_app(settings)
    async with AsyncExitStack() as stack:
        urls = {"users": await stack.enter_async_context(serve(users))}
        urls["events"] = await stack.enter_async_context(serve(events_app(settings)))
        wired = settings.model_copy(update={"users_url": urls["users"], "events_url": urls["events"]})
        cfg = ReservasSettings(instancia=f"matrix-{uuid.uuid4().hex[:8]}", espera_s=20)
        urls["reservations"] = await stack.enter_async_context(serve(reservations_app(wired, reservas=cfg)))
        gateway = GatewaySettings(
            redis_url=settings.redis_url,
            users_url=urls["users"],
            events_url=urls["events"],
            reservations_url=urls["reservations"],
        )
        urls["gateway"] = await stack.enter_async_context(serve(gateway_app(gateway)))
        http = await stack.enter_async_context(httpx.AsyncClient(timeout=60))
        via_users = await stack.enter_async_context(httpx.AsyncClient(base_url=urls["gateway"], timeout=60))
        people = {
            "buyer": await registrar(via_users),
            "stranger": await registrar(via_users),
            "organizer": await con_rol(via_users, ORGANIZADOR),
            "other_organizer": await con_rol(via_users, ORGANIZADOR),
            "control": await con_rol(via_users, CONTROL),
            "admin": await admin(via_users),
        }
        headers = {name: cuenta.headers for name, cuenta in people.items()}
        headers["anonymous"] = {}
        headers["identity_headers"] = {
            "X-User-Id": people["admin"].id,
            "X-Usuario-Id": people["buyer"].id,
            "X-Roles": ADMIN,
            "X-Forwarded-User": people["admin"].id,
        }
        for name, token in (await bad_tokens(users, people["buyer"], people["admin"])).items():
            headers[name] = bearer(token)
        created = await http.post(f"{urls['events']}/api/eventos", json=evento_body(), headers=headers["organizer"])
        assert created.status_code == 201, created.text
        world = World(urls, headers, people, created.json()["id"], "", http)
        first = await world.confirmada("direct")
        world.reserva, world.codigo = first["id"], first["tickets"][0]["codigo"]
        yield world


async def walk(world: World, target: str) -> dict[str, dict[str, int]]:
    got: dict[str, dict[str, int]] = {}
    r, e = world.reserva, world.evento

    async def status(route: str, caller: str, service: str, method: str, path: str, **kw: Any) -> None:
        got.setdefault(route, {})[caller] = (await world.call(target, service, method, path, caller, **kw)).status_code

    for caller in CALLERS:
        await status("GET /api/eventos", caller, "events", "GET", "/api/eventos?limit=1")
        await status("GET /api/eventos/{E}", caller, "events", "GET", f"/api/eventos/{e}")
        await status("POST /api/eventos", caller, "events", "POST", "/api/eventos", json=evento_body())
        buyer_id = world.people["buyer"].id
        await status(
            "POST /api/reservar (usuario_id: buyer)",
            caller,
            "reservations",
            "POST",
            "/api/reservar",
            json=world.body(buyer_id),
        )
        await status(
            "POST /api/reservar (no usuario_id)", caller, "reservations", "POST", "/api/reservar", json=world.body(None)
        )
        await status("GET /api/reservas/{R}", caller, "reservations", "GET", f"/api/reservas/{r}")
        await status("GET /api/reservar/{R}", caller, "reservations", "GET", f"/api/reservar/{r}")
        allowed = TABLE["POST /api/reservas/{R}/cancelar"][caller] == 200
        target_id = await world.compra(target) if allowed else r  # a cancellation that may happen gets its own
        await status(
            "POST /api/reservas/{R}/cancelar", caller, "reservations", "POST", f"/api/reservas/{target_id}/cancelar"
        )
        await status("GET /api/usuarios/exportar", caller, "users", "GET", "/api/usuarios/exportar?formato=ndjson")
        await status("GET /api/usuarios/exportar/resumen", caller, "users", "GET", "/api/usuarios/exportar/resumen")
        victim = await world.http.post(f"{world.urls['users']}/api/usuarios", json=datos_de_registro())
        await status("DELETE /api/usuarios/{U}", caller, "users", "DELETE", f"/api/usuarios/{victim.json()['id']}")
        await entradas(world, caller, target, status)
    return got


async def entradas(world: World, caller: str, target: str, status: Callable[..., Any]) -> None:
    r, e, t = world.reserva, world.evento, f"{world.reserva}-1"
    await status("GET /api/reservas", caller, "reservations", "GET", "/api/reservas?limit=1")
    await status("GET /api/reservas/{R}/pdf", caller, "reservations", "GET", f"/api/reservas/{r}/pdf")
    await status("GET /api/tickets/{T}/qr", caller, "reservations", "GET", f"/api/tickets/{t}/qr")
    await status("GET /api/tickets/{T}/pdf", caller, "reservations", "GET", f"/api/tickets/{t}/pdf")
    fresh = TABLE["POST /api/checkin"][caller] == 200
    codigo = (await world.confirmada(target))["tickets"][0]["codigo"] if fresh else world.codigo
    await status("POST /api/checkin", caller, "reservations", "POST", "/api/checkin", json={"codigo": codigo})
    await status("GET /api/checkin/eventos/{E}", caller, "reservations", "GET", f"/api/checkin/eventos/{e}")
    await status("GET /api/checkin/claves/{E}", caller, "reservations", "GET", f"/api/checkin/claves/{e}")
    await status("GET /api/disponibilidad/{E}", caller, "reservations", "GET", f"/api/disponibilidad/{e}")
    await status("GET /api/eventos/{E}/ventas", caller, "events", "GET", f"/api/eventos/{e}/ventas")


@pytest.mark.parametrize("target", ["gateway", "direct"])
async def test_every_route_with_every_caller_gets_the_tables_status(world: World, target: str) -> None:
    world.seen.clear()
    assert await walk(world, target) == TABLE

    for response in world.seen:
        if response.status_code == 401:  # RFC 6750: the challenge, and a problem body
            assert response.headers["www-authenticate"].startswith("Bearer "), response.request.url
            assert response.headers["content-type"] == "application/problem+json"
            assert response.json()["type"] == "/problems/unauthenticated"
        path = response.request.url.path
        if response.status_code == 404 and "/api/reserva" in path and not path.endswith("/pdf"):
            assert response.json()["type"] == NO_SUCH_RESERVATION, "a hidden reservation reads as an unknown one"
    reserva = await world.call(target, "reservations", "GET", f"/api/reservas/{world.reserva}", "buyer")
    assert reserva.json()["estado"] == "confirmada", "no refused cancellation changed the reservation"


async def test_a_hidden_reservation_is_indistinguishable_from_one_that_does_not_exist(world: World) -> None:
    def shape(response: httpx.Response) -> tuple[int, dict[str, Any]]:
        body = {k: v for k, v in response.json().items() if k not in ("instance", "request_id")}
        return response.status_code, body

    unknown = str(uuid.uuid4())
    for path in ("/api/reservas/{}", "/api/reservar/{}", "/api/reservas/{}/cancelar"):
        method = "POST" if path.endswith("cancelar") else "GET"
        hidden = await world.call("gateway", "reservations", method, path.format(world.reserva), "stranger")
        missing = await world.call("gateway", "reservations", method, path.format(unknown), "stranger")
        assert shape(hidden) == shape(missing)
