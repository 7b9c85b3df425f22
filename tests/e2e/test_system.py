"""The whole system as `make up` starts it: every process, through the gateway, then `make down`."""

from __future__ import annotations

import asyncio
import base64
import random
import signal
import socket
import subprocess
import sys
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import orjson
import pytest

from eventflow.jetstream import connect
from eventflow.servers import port_open
from eventflow.system import ROOT
from tests.e2e.system import (
    admin_credentials,
    bearer,
    cli,
    detached,
    pid_running,
    sign_in,
    state,
    system_env,
    url,
    wait_until_gone,
)
from tests.utils.servers import Servers

pytestmark = pytest.mark.slow
HAS_RESERVATIONS = (ROOT / "services" / "reservations" / "main.py").exists()


@pytest.fixture
def running(tmp_path: Path) -> Iterator[tuple[dict[str, str], str]]:
    """The whole system, started as `make up` does: (its environment, what the start printed)."""
    env = system_env(tmp_path / "var")
    with detached(env) as printed:
        yield env, printed


def all_pids(env: dict[str, str]) -> list[int]:
    current = state(env)
    return [current["supervisor"]["pid"], *(p["pid"] for p in current["processes"] if p["pid"])]


def new_user() -> dict[str, str]:
    tag = uuid.uuid4().hex[:10]
    return {
        "tipo_documento": "DNI",
        "nro_documento": str(random.randint(10_000_000, 99_999_999)),
        "nombre": "Lucía",
        "apellido": "Fernández",
        "email": f"lucia.{tag}@example.com",
        "password": f"una frase de paso {uuid.uuid4().hex[:8]}",
    }


def new_event() -> dict[str, object]:
    return {
        "nombre": f"Concierto {uuid.uuid4().hex[:6]}",
        "descripcion": "Prueba de extremo a extremo",
        "fecha": "2031-06-01T21:00:00+02:00",
        "lugar": "Teatro Real",
        "aforo_total": 50,
        "precio": 30,
        "categoria": "musica",
    }


def kid_of(token: str) -> str:
    header = token.split(".")[0]
    return str(orjson.loads(base64.urlsafe_b64decode(header + "=" * (-len(header) % 4)))["kid"])


def eventually(check: Callable[[], Any], seconds: float = 30) -> Any:
    """`check()`'s first truthy answer, asked until a generous deadline (eventual consistency, not speed)."""
    deadline = time.monotonic() + seconds
    while not (found := check()) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert found, "condition not reached"
    return found


def register(api: httpx.Client, user_in: dict[str, str]) -> dict[str, Any]:
    created = api.post("/api/usuarios", json=user_in)
    assert created.status_code == 201, created.text
    user: dict[str, Any] = created.json()
    return user


def signed_in(api: httpx.Client, user_in: dict[str, str]) -> dict[str, str]:
    return bearer(sign_in(api, user_in["email"], user_in["password"])["access_token"])


def test_the_whole_system_answers_through_the_gateway_and_stops(running: tuple[dict[str, str], str]) -> None:
    """The journey of the assignment, signed in, all through the gateway's port: a buyer registers and signs
    in, the first admin (the generated local one) makes another user an organizer, who creates an event; the
    buyer reserves and reads it back."""
    env, printed = running
    admin_email, admin_password = admin_credentials(env)
    secrets_at = Path(env["EVENTFLOW_VAR_DIR"]) / "secrets.env"
    assert f"{admin_email} (password: EVENTFLOW_ADMIN_PASSWORD in {secrets_at})" in printed, printed
    assert admin_password not in printed
    with httpx.Client(base_url=url(env, "gateway"), timeout=30) as api:
        buyer_in = new_user()
        user = register(api, buyer_in)
        buyer = signed_in(api, buyer_in)
        assert api.get(f"/api/usuarios/{user['id']}").status_code == 401
        fetched = api.get(f"/api/usuarios/{user['id']}", headers=buyer)
        assert fetched.status_code == 200, fetched.text
        assert fetched.json()["email"] == buyer_in["email"]
        assert kid_of(buyer["Authorization"].split()[1]) in {
            key["kid"] for key in api.get("/.well-known/jwks.json").json()["keys"]
        }

        organizer_in = new_user()
        organizer_id = register(api, organizer_in)["id"]
        boss = bearer(sign_in(api, admin_email, admin_password)["access_token"])
        made = api.put(f"/api/usuarios/{organizer_id}/roles", json={"roles": ["organizador"]}, headers=boss)
        assert made.status_code == 200, made.text
        organizer = signed_in(api, organizer_in)  # signed in after the change: the token carries the role
        event_in = new_event()
        assert api.post("/api/eventos", json=event_in).status_code == 401
        assert api.post("/api/eventos", json=event_in, headers=buyer).status_code == 403
        created = api.post("/api/eventos", json=event_in, headers=organizer)
        assert created.status_code == 201, created.text
        event = created.json()
        fetched = api.get(f"/api/eventos/{event['id']}")
        assert fetched.status_code == 200
        assert fetched.json()["entradas_disponibles"] == 50

        if HAS_RESERVATIONS:
            booking = {
                "usuario_id": user["id"],
                "evento_id": event["id"],
                "cantidad": 2,
                "pago": {"numero_tarjeta": "4242424242424242", "vencimiento": "12/30", "cvc": "123"},
            }
            key = {"Idempotency-Key": uuid.uuid4().hex}
            assert api.post("/api/reservar", json=booking, headers=key).status_code == 401
            reserved = api.post("/api/reservar", json=booking, headers={**key, **buyer})
            assert reserved.status_code in (201, 202), reserved.text
            reserva_id = reserved.json()["id"]

            def confirmed() -> dict[str, Any] | None:
                read = api.get(f"/api/reservas/{reserva_id}", headers=buyer)
                assert read.status_code == 200, read.text
                return read.json() if read.json()["estado"] == "confirmada" else None

            done = eventually(confirmed)
            assert (done["usuario_id"], done["evento_id"], done["entradas"]["cantidad"]) == (user["id"], event["id"], 2)
            assert api.get(f"/api/reservas/{reserva_id}", headers=organizer).status_code == 200, "its organizer"
            assert api.get(f"/api/reservas/{reserva_id}").status_code == 401

            def in_history() -> bool:
                me = api.get("/api/usuarios/me", headers=buyer).json()
                return reserva_id in {compra["reserva_id"] for compra in me["historial_compras"]}

            eventually(in_history)  # the purchase reached the buyer's profile (RESERVAS projected by users)

        assert api.get("/api/nada").status_code == 404
        gateway_ready = api.get("/health/ready")
        assert gateway_ready.status_code == 200, gateway_ready.text

    services = [p["name"] for p in state(env)["processes"] if p["name"] not in ("nats", "redis")]
    assert {"users", "events", "gateway"} <= set(services)
    for name in services:
        assert httpx.get(f"{url(env, name)}/health/ready", timeout=10).status_code == 200, name

    rebuilt = cli(env, module="eventflow.rebuild")
    assert rebuilt.returncode == 0, rebuilt.stderr
    assert "USUARIOS" in rebuilt.stdout and "EVENTOS" in rebuilt.stdout
    with httpx.Client(base_url=url(env, "gateway"), timeout=30) as api:
        assert api.get(f"/api/usuarios/{user['id']}", headers=buyer).json()["email"] == buyer_in["email"]
        assert api.get(f"/api/eventos/{event['id']}").json()["nombre"] == event["nombre"]

    status = cli(env, "--status")
    assert status.returncode == 0, status.stdout
    rows = {line.split()[0]: line.split() for line in status.stdout.splitlines()[2:-1]}
    assert set(rows) == {"nats", "redis", *services}
    assert all(row[3:7] == ["yes", "yes", "0", "-"] for row in rows.values()), status.stdout

    pids = all_pids(env)
    stopped = cli(env, "--down")
    assert stopped.returncode == 0, stopped.stderr
    assert wait_until_gone(pids) == []
    ports = [int(value) for name, value in env.items() if name.endswith("_PORT")]
    assert [port for port in ports if port_open(port)] == []
    assert cli(env, "--status").returncode == 3
    assert cli(env, "--down").returncode == 0  # nothing left to stop is not an error


async def account_revision(env: dict[str, str], usuario_id: str) -> int:
    """The revision of the user's key in CUENTAS, read straight from the system's NATS."""
    nc = await connect(f"nats://127.0.0.1:{env['EVENTFLOW_NATS_PORT']}", "e2e-accounts")
    try:
        entry = await (await nc.jetstream().key_value("CUENTAS")).get(usuario_id)
        return int(entry.revision or 0)
    finally:
        await nc.drain()


@pytest.mark.parametrize("admin", ["given", "generated"])
def test_a_second_start_with_the_same_admin_values_changes_nothing(tmp_path: Path, admin: str) -> None:
    given = {"EVENTFLOW_ADMIN_EMAIL": "ops@pruebas.example", "EVENTFLOW_ADMIN_PASSWORD": "frase larga de operaciones"}
    env = system_env(tmp_path / "var", EVENTFLOW_SERVICES="users", **(given if admin == "given" else {}))
    seen: list[tuple[str, int]] = []
    for _ in range(2):
        started = cli(env, "--detach")
        assert started.returncode == 0, started.stdout + started.stderr
        try:
            email, password = admin_credentials(env)
            where = "the EVENTFLOW_ADMIN_PASSWORD you set" if admin == "given" else "EVENTFLOW_ADMIN_PASSWORD in"
            assert f"{email} (password: {where}" in started.stdout and password not in started.stdout
            with httpx.Client(base_url=url(env, "users"), timeout=30) as users:
                me = users.get("/api/usuarios/me", headers=bearer(sign_in(users, email, password)["access_token"]))
                assert me.status_code == 200 and "admin" in me.json()["roles"], me.text
            seen.append((me.json()["id"], asyncio.run(account_revision(env, me.json()["id"]))))
        finally:
            assert cli(env, "--down").returncode == 0
    assert seen[0] == seen[1], "the same admin, and its account not written again"
    if admin == "given":
        assert given["EVENTFLOW_ADMIN_PASSWORD"] not in (tmp_path / "var" / "secrets.env").read_text()


def test_an_admin_email_without_its_password_stops_the_start_before_anything_runs(tmp_path: Path) -> None:
    env = system_env(tmp_path / "var", EVENTFLOW_SERVICES="users", EVENTFLOW_ADMIN_EMAIL="ops@pruebas.example")
    result = cli(env, "--detach")
    assert result.returncode == 1
    assert "EVENTFLOW_ADMIN_EMAIL is set without its pair" in result.stderr, result.stderr
    assert state(env)["phase"] == "failed" and state(env)["processes"] == []


def test_detach_fails_with_the_reason_when_a_port_is_taken(tmp_path: Path) -> None:
    env = system_env(tmp_path / "var", EVENTFLOW_SERVICES="gateway")
    with socket.socket() as squatter:
        squatter.bind(("127.0.0.1", int(env["EVENTFLOW_GATEWAY_PORT"])))
        squatter.listen()
        result = cli(env, "--detach")
    assert result.returncode != 0
    assert f"{env['EVENTFLOW_GATEWAY_PORT']} for gateway (EVENTFLOW_GATEWAY_PORT)" in result.stderr
    assert not any(pid_running(pid) for pid in all_pids(env))


def test_ctrl_c_stops_a_foreground_run_and_exits_0(tmp_path: Path) -> None:
    env = system_env(tmp_path / "var", EVENTFLOW_SERVICES="gateway")
    run = subprocess.Popen(
        [sys.executable, "-m", "eventflow.run"], env=env, cwd=ROOT, stdout=subprocess.PIPE, text=True
    )
    try:
        deadline = time.monotonic() + 60
        while (
            not (Path(env["EVENTFLOW_VAR_DIR"]) / "run" / "eventflow.json").exists() or state(env)["phase"] != "ready"
        ):
            assert run.poll() is None and time.monotonic() < deadline
            time.sleep(0.1)
        pids = all_pids(env)
        run.send_signal(signal.SIGINT)
        output, _ = run.communicate(timeout=60)
    finally:
        if run.poll() is None:
            run.kill()
    assert run.returncode == 0
    assert "EventFlow is ready" in output and "Ctrl-C stops everything" in output
    assert wait_until_gone(pids) == []
    assert state(env)["phase"] == "stopped"


def test_external_servers_are_used_and_none_is_started(tmp_path: Path, servers: Servers) -> None:
    env = system_env(
        tmp_path / "var",
        EVENTFLOW_SERVICES="gateway",
        EVENTFLOW_NATS_URL=servers.nats.url,
        EVENTFLOW_REDIS_URL=servers.redis.url,
    )
    started = cli(env, "--detach")
    assert started.returncode == 0, started.stdout + started.stderr
    try:
        entries = {p["name"]: p for p in state(env)["processes"]}
        assert entries["nats"]["external"] and entries["nats"]["pid"] is None
        assert entries["redis"]["url"] == servers.redis.url
        assert not (Path(env["EVENTFLOW_VAR_DIR"]) / "nats").exists()
        status = cli(env, "--status")
        assert status.returncode == 0, status.stdout
        assert [line.split()[3] for line in status.stdout.splitlines() if line.startswith(("nats", "redis"))] == [
            "external",
            "external",
        ]
    finally:
        assert cli(env, "--down").returncode == 0
    assert servers.nats.proc.poll() is None and servers.redis.proc.poll() is None
