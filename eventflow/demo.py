"""Demo data for `make run` (unless EVENTFLOW_DEMO=0): three accounts and a few events, so the web app has
something to show the first time it opens.

Everything goes through the public API on the gateway, as a client would (the admin grants the roles), except the
past event: the API rightly refuses to create one, so it is recorded through the events service's own write path
with a clock a month back, as if it had been created then. Idempotent: the accounts' credentials are kept in
var/secrets.env (as the first admin's are) and reused; the events are made only while the demo organizer has none.
"""

from __future__ import annotations

import asyncio
import json
import os
import secrets
import urllib.error
import urllib.request
from collections.abc import Mapping
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any

from eventflow.auth import CONTROL, ORGANIZADOR
from eventflow.config import Settings
from eventflow.crypto import Pseudonymizer
from eventflow.eventstore import EventStore
from eventflow.jetstream import EVENTOS, connect, ensure_stream
from eventflow.system import secrets_file

ACCOUNTS = {  # name -> (email, role); RFC 2606 domain: never a real mailbox
    "ORGANIZER": ("organizador@demo.eventflow.example", ORGANIZADOR),
    "CONTROL": ("control@demo.eventflow.example", CONTROL),
    "BUYER": ("comprador@demo.eventflow.example", None),
}
TEST_CARD = {"numero_tarjeta": "4242424242424242", "vencimiento": "12/34", "cvc": "123"}  # the simulator's "approved"
TIMEOUT_S = 30.0


class DemoError(Exception):
    """The demo could not be seeded; the system runs anyway."""


def _call(base: str, method: str, path: str, body: Any = None, token: str | None = None, **headers: str) -> Any:
    data = None if body is None else json.dumps(body).encode()
    request = urllib.request.Request(base + path, data=data, method=method)
    request.add_header("Content-Type", "application/json")
    if token:
        request.add_header("Authorization", f"Bearer {token}")
    for name, value in headers.items():
        request.add_header(name.replace("_", "-"), value)
    try:
        with urllib.request.urlopen(request, timeout=TIMEOUT_S) as response:
            return json.loads(response.read() or b"null")
    except urllib.error.HTTPError as err:
        raise DemoError(f"{method} {path}: {err.code} {err.read()[:300]!r}") from None


def _token(base: str, email: str, password: str) -> str | None:
    try:
        return str(_call(base, "POST", "/api/auth/token", {"email": email, "password": password})["access_token"])
    except DemoError:
        return None


def credentials(var_dir: Path) -> dict[str, str]:
    """EVENTFLOW_DEMO_<ACCOUNT>_EMAIL / _PASSWORD from secrets.env, the missing ones made and appended (0600)."""
    path = secrets_file(var_dir)
    stored = dict(line.split("=", 1) for line in path.read_text().splitlines() if "=" in line) if path.exists() else {}
    fresh: dict[str, str] = {}
    for name, (email, _) in ACCOUNTS.items():
        if f"EVENTFLOW_DEMO_{name}_PASSWORD" not in stored:
            fresh[f"EVENTFLOW_DEMO_{name}_EMAIL"] = email
            fresh[f"EVENTFLOW_DEMO_{name}_PASSWORD"] = secrets.token_urlsafe(15)
    if fresh:
        var_dir.mkdir(parents=True, exist_ok=True)
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
        with os.fdopen(fd, "a") as out:
            out.write("".join(f"{name}={value}\n" for name, value in fresh.items()))
    return {**stored, **fresh}


def _account(base: str, admin: str, name: str, creds: Mapping[str, str]) -> tuple[str, str]:
    """(user id, token carrying its role) of one demo account, registered and given its role if need be."""
    email, role = creds[f"EVENTFLOW_DEMO_{name}_EMAIL"], ACCOUNTS[name][1]
    password = creds[f"EVENTFLOW_DEMO_{name}_PASSWORD"]
    token = _token(base, email, password)
    if token is None:
        nombre = {"ORGANIZER": "Organizadora", "CONTROL": "Puerta", "BUYER": "Comprador"}[name]
        body = {
            "tipo_documento": "Pasaporte",
            "nro_documento": f"D{secrets.randbelow(10**8):08d}",
            "nombre": nombre,
            "apellido": "Demo",
            "email": email,
            "password": password,
        }
        _call(base, "POST", "/api/usuarios", body)
        token = _token(base, email, password)
        if token is None:
            raise DemoError(f"{email} was registered but cannot sign in")
    usuario_id = str(_call(base, "GET", "/api/usuarios/me", token=token)["id"])
    if role is not None:
        _call(base, "PUT", f"/api/usuarios/{usuario_id}/roles", {"roles": [role]}, admin)
        token = _token(base, email, password) or token  # signed in again: the token carries the role
    return usuario_id, token


def _events(now: datetime) -> dict[str, dict[str, Any]]:
    def at(days: int, hour: int = 21) -> str:
        return (now + timedelta(days=days)).replace(hour=hour, minute=0, second=0, microsecond=0).isoformat()

    common = {"descripcion": "Evento de demostración.", "categoria": "musica"}
    return {
        "butacas": {
            **common,
            "nombre": "Concierto sinfónico (butacas numeradas)",
            "fecha": at(30),
            "lugar": "Teatro Colón",
            "precio": "35.00",
            "secciones": [{"nombre": "Platea", "asientos": 30}, {"nombre": "Pullman", "asientos": 20}],
        },
        "casi_agotado": {
            **common,
            "nombre": "Festival indie (últimas entradas)",
            "fecha": at(14, 20),
            "lugar": "Club Demo",
            "precio": "20.00",
            "aforo_total": 20,
            "limite_por_usuario": 20,
            "max_por_solicitud": 20,
        },
        "general": {
            **common,
            "nombre": "Noche de stand-up",
            "fecha": at(7),
            "lugar": "Sala Demo",
            "precio": "15.00",
            "aforo_total": 200,
            "categoria": "humor",
        },
    }


async def _past_event(settings: Settings, organizador_id: str, now: datetime) -> str:
    """Recorded as the events service records one, with a clock 40 days back (the API refuses past dates)."""
    from services.events.domain import CrearEvento
    from services.events.handlers import WriteDeps, crear_evento

    class _NoWait:
        async def wait_for(self, seq: int, timeout: float) -> bool:
            return True

    nc = await connect(settings.nats_url, "demo")
    try:
        js = nc.jetstream(timeout=10)
        await ensure_stream(js, EVENTOS, settings.replicas)
        then = now - timedelta(days=40)
        ids = Pseudonymizer(settings.pseudonym_key_bytes)
        deps = WriteDeps(EventStore(js, EVENTOS), _NoWait(), lambda: then, 0.0, ids)
        cmd = CrearEvento(
            nombre="Obra de teatro (función pasada)",
            descripcion="Evento de demostración que ya ocurrió.",
            fecha=(now - timedelta(days=7)).replace(microsecond=0).isoformat(),
            lugar="Teatro Demo",
            aforo_total=100,
            precio=Decimal("25.00"),
            categoria="teatro",
            secciones=None,
            venta_desde=None,
            limite_por_usuario=None,
            max_por_solicitud=None,
        )
        return (await crear_evento(cmd, organizador_id, deps, idempotency_key="demo-pasado")).id
    finally:
        await nc.drain()


def seed(gateway_url: str, system: Mapping[str, str], var_dir: Path, show_passwords: bool = False) -> str:
    """Seed (idempotently) and say who can sign in; never raises: a failed demo is a warning, not a failed start.

    The demo passwords are printed only to a person at a terminal (`show_passwords`); otherwise (a detached
    start, whose output is a log file) only where they are."""
    try:
        return _seed(gateway_url, system, var_dir, show_passwords)
    except (DemoError, OSError, KeyError, ValueError) as err:
        return f"  demo data not seeded: {err}"


def _seed(base: str, system: Mapping[str, str], var_dir: Path, show_passwords: bool) -> str:
    admin = _token(base, system["EVENTFLOW_ADMIN_EMAIL"], system["EVENTFLOW_ADMIN_PASSWORD"])
    if admin is None:
        raise DemoError("the admin cannot sign in")
    creds = credentials(var_dir)
    ids = {name: _account(base, admin, name, creds) for name in ACCOUNTS}
    organizer_id, organizer = ids["ORGANIZER"]
    buyer = ids["BUYER"][1]
    mine = _call(base, "GET", f"/api/eventos?organizador_id={organizer_id}&limit=1")
    made = ""
    if mine["total"] == 0:
        now = datetime.now(UTC)
        created = {
            key: _call(base, "POST", "/api/eventos", body, organizer, Idempotency_Key=f"demo-{key}")["id"]
            for key, body in _events(now).items()
        }
        given: dict[str, Any] = {k.removeprefix("EVENTFLOW_").lower(): v for k, v in system.items()}
        settings = Settings(**given)
        asyncio.run(_past_event(settings, organizer_id, now))
        purchases: list[tuple[str, dict[str, Any]]] = [
            ("casi_agotado", {"cantidad": 18}),
            ("butacas", {"cantidad": 2, "asientos": ["Platea-5", "Platea-6"]}),
        ]
        for key, order in purchases:
            body = {"evento_id": created[key], **order, "pago": TEST_CARD}
            _call(base, "POST", "/api/reservar", body, buyer, Idempotency_Key=f"demo-compra-{key}")
        made = " (4 events, 2 purchases made now)"
    lines = [f"  demo data{made}; its accounts (kept in {secrets_file(var_dir)}):"]
    for name, (email, role) in ACCOUNTS.items():
        variable = f"EVENTFLOW_DEMO_{name}_PASSWORD"
        shown = f"password: {creds[variable]}" if show_passwords else f"(password: {variable})"
        lines.append(f"    {role or 'comprador':<11} {email}  {shown}")
    return "\n".join(lines)
