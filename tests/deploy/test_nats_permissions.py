"""NATS least privilege (deploy/nats/auth.conf): each service logs in as itself and may touch only what it owns.

A real nats-server runs with the committed auth.conf. The three services start on it with their own credentials
(their startup declares streams and buckets, subscribes projections and watchers), a user registers through the
users service, and then each service's credentials are refused on the others' subjects: the events service cannot
write the INVENTARIO bucket, nobody can delete or purge a stream, and so on.
"""

from __future__ import annotations

import asyncio
import secrets
from collections.abc import AsyncIterator, Iterator
from typing import Any

import nats
import pytest
import pytest_asyncio
from nats.aio.client import Client as NATS

from eventflow.servers import ServerProcess, free_port, start_nats
from eventflow.system import client_secret
from tests.deploy.helpers import ROOT, load
from tests.utils.app import api_client
from tests.utils.servers import TEST_SERVICE_KEY, Servers

on_module_loop = pytest.mark.asyncio(loop_scope="module")  # the services start once for the module
module_fixture = pytest_asyncio.fixture(scope="module", loop_scope="module")


permissions = load("deploy/nats/permissions.py")
PASSWORDS = {service: secrets.token_urlsafe(16) for service in permissions.SERVICES}


def test_committed_auth_conf_is_what_the_permissions_generate() -> None:
    expected = permissions.auth_conf()
    assert (ROOT / "deploy" / "nats" / "auth.conf").read_text() == expected, "run deploy/nats/permissions.py"
    assert (ROOT / "deploy" / "k8s" / "base" / "nats" / "auth.conf").read_text() == expected


@pytest.fixture(scope="module")
def secured(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    root = tmp_path_factory.mktemp("secured-nats")
    (root / "auth.conf").write_text((ROOT / "deploy" / "nats" / "auth.conf").read_text())
    env = {permissions.password_variable(service): password for service, password in PASSWORDS.items()}
    server = start_nats(free_port(), root / "data", root / "nats.log", extra_config='include "auth.conf"\n', env=env)
    yield server
    server.stop()


def url(server: ServerProcess, service: str) -> str:
    return f"nats://{service}:{PASSWORDS[service]}@127.0.0.1:{server.port}"


@module_fixture
async def system(secured: ServerProcess, servers: Servers) -> AsyncIterator[dict[str, Any]]:
    """The three NATS-using services, started in that order (users publishes the keys the others verify with)."""
    from services.events.bootstrap import create_app as events_app
    from services.reservations.bootstrap import create_app as reservations_app
    from services.users.bootstrap import create_app as users_app

    def settings(service: str) -> Any:
        own = {"client_id": service, "client_secret": client_secret(TEST_SERVICE_KEY, service)}
        return servers.settings(nats_url=url(secured, service), **({} if service == "users" else own))

    users = users_app(settings("users"))
    events = events_app(settings("events"))
    reservations = reservations_app(settings("reservations"))
    async with api_client(users) as u, api_client(events) as e, api_client(reservations) as r:
        yield {"users": u, "events": e, "reservations": r}


@on_module_loop
async def test_every_service_starts_and_is_ready_with_its_own_credentials(system: dict[str, Any]) -> None:
    for name, client in system.items():
        resp = await client.get("/health/ready")
        assert resp.status_code == 200, (name, resp.text)


@on_module_loop
async def test_a_user_registers_through_the_users_service_credentials(system: dict[str, Any]) -> None:
    body = {
        "tipo_documento": "DNI",
        "nro_documento": str(secrets.randbelow(90_000_000) + 10_000_000),
        "nombre": "Permisos",
        "apellido": "Prueba",
        "email": f"permisos.{secrets.token_hex(4)}@pruebas.eventflow.example",
        "password": f"pw-{secrets.token_hex(12)}",
    }
    resp = await system["users"].post("/api/usuarios", json=body)
    assert resp.status_code == 201, resp.text
    token = await system["users"].post("/api/auth/token", json={"email": body["email"], "password": body["password"]})
    assert token.status_code == 200, token.text


class Session:
    """One service's connection, recording the permission errors the server sends back."""

    def __init__(self, nc: NATS, errors: list[str]) -> None:
        self.nc, self.errors = nc, errors

    async def refused(self, subject: str) -> bool:
        """Publish to `subject`; True once the server says it is not allowed."""
        await self.nc.publish(subject, b"{}")
        await self.nc.flush()
        for _ in range(100):
            if any("permissions violation" in e.lower() and subject.lower() in e.lower() for e in self.errors):
                return True
            await asyncio.sleep(0.02)
        return False


@module_fixture
async def connect_as(secured: ServerProcess) -> AsyncIterator[Any]:
    opened: list[NATS] = []

    async def open_session(service: str) -> Session:
        errors: list[str] = []

        async def on_error(err: Exception) -> None:
            errors.append(str(err))

        nc = await nats.connect(url(secured, service), error_cb=on_error, allow_reconnect=False)
        opened.append(nc)
        return Session(nc, errors)

    yield open_session
    for nc in opened:
        await nc.close()


REFUSED = [
    ("events", "$KV.INVENTARIO.un-evento"),  # the example: events cannot write the inventory
    ("events", "$JS.API.STREAM.PURGE.KV_INVENTARIO"),
    ("events", "$JS.API.STREAM.DELETE.KV_INVENTARIO"),
    ("events", "$JS.API.STREAM.MSG.DELETE.KV_INVENTARIO"),
    ("events", "reservas.una-reserva"),
    ("events", "usuarios.un-usuario"),
    ("events", "$KV.AUTH_JWKS.una-clave"),  # it reads the published keys, it cannot publish one
    ("users", "eventos.un-evento"),
    ("users", "$KV.SAGAS.una-saga"),
    ("reservations", "usuarios.un-usuario"),
    ("reservations", "$KV.CUENTAS.un-usuario"),
    ("reservations", "$KV.AUTH_SIGNING.current"),
    ("reservations", "$JS.API.STREAM.UPDATE.RESERVAS"),
    ("reservations", "$JS.API.STREAM.DELETE.EVENTOS"),
]


@on_module_loop
@pytest.mark.parametrize(("service", "subject"), REFUSED)
async def test_credentials_are_refused_on_another_services_subjects(
    system: dict[str, Any], connect_as: Any, service: str, subject: str
) -> None:
    session = await connect_as(service)
    assert await session.refused(subject), f"{service} may publish to {subject}"


@on_module_loop
async def test_the_owner_may_write_what_the_others_may_not(system: dict[str, Any], connect_as: Any) -> None:
    """The control: the same write is allowed to the inventory's owner, so the refusals above are permissions."""
    session = await connect_as("reservations")
    js = session.nc.jetstream()
    kv = await js.key_value("INVENTARIO")
    revision = await kv.put("control-de-permisos", b"{}")
    assert revision > 0
    assert not session.errors
    events = await connect_as("events")
    assert await events.refused("$KV.INVENTARIO.control-de-permisos")
    assert (await kv.get("control-de-permisos")).revision == revision  # the refused write changed nothing
