"""The whole system as `make up` starts it: every process, through the gateway, then `make down`."""

from __future__ import annotations

import os
import random
import signal
import socket
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from eventflow.servers import port_open
from eventflow.system import ROOT
from tests.e2e.system import cli, pid_running, state, system_env, url, wait_until_gone
from tests.utils.servers import Servers

pytestmark = pytest.mark.slow
HAS_RESERVATIONS = (ROOT / "services" / "reservations" / "main.py").exists()


@pytest.fixture
def running(tmp_path: Path) -> Iterator[dict[str, str]]:
    env = system_env(tmp_path / "var")
    started = cli(env, "--detach")
    assert started.returncode == 0, started.stdout + started.stderr
    try:
        yield env
    finally:
        cli(env, "--down")


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


def test_the_whole_system_answers_through_the_gateway_and_stops(running: dict[str, str]) -> None:
    env = running
    with httpx.Client(base_url=url(env, "gateway"), timeout=30) as api:
        user_in = new_user()
        created = api.post("/api/usuarios", json=user_in)
        assert created.status_code == 201, created.text
        user = created.json()
        fetched = api.get(f"/api/usuarios/{user['id']}")
        assert fetched.status_code == 200
        assert fetched.json()["email"] == user_in["email"]

        created = api.post("/api/eventos", json=new_event())
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
            reserved = api.post("/api/reservar", json=booking, headers={"Idempotency-Key": uuid.uuid4().hex})
            assert reserved.status_code in (201, 202), reserved.text
            reservation = api.get(f"/api/reservas/{reserved.json()['id']}")
            assert reservation.status_code == 200
            assert reservation.json()["estado"] in ("pendiente", "confirmada")

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
        assert api.get(f"/api/usuarios/{user['id']}").json()["email"] == user_in["email"]
        assert api.get(f"/api/eventos/{event['id']}").json()["nombre"] == event["nombre"]

    status = cli(env, "--status")
    assert status.returncode == 0, status.stdout
    rows = {line.split()[0]: line.split() for line in status.stdout.splitlines()[2:-1]}
    assert set(rows) == {"nats", "redis", *services}
    assert all(row[3:] == ["yes", "yes"] for row in rows.values()), status.stdout

    pids = all_pids(env)
    stopped = cli(env, "--down")
    assert stopped.returncode == 0, stopped.stderr
    assert wait_until_gone(pids) == []
    ports = [int(value) for name, value in env.items() if name.endswith("_PORT")]
    assert [port for port in ports if port_open(port)] == []
    assert cli(env, "--status").returncode == 3
    assert cli(env, "--down").returncode == 0  # nothing left to stop is not an error


def test_a_dying_service_stops_the_whole_system(tmp_path: Path) -> None:
    env = system_env(tmp_path / "var", EVENTFLOW_SERVICES="events")
    started = cli(env, "--detach")
    assert started.returncode == 0, started.stdout + started.stderr
    try:
        pids = all_pids(env)
        events_pid = next(p["pid"] for p in state(env)["processes"] if p["name"] == "events")
        os.kill(events_pid, signal.SIGKILL)
        assert wait_until_gone(pids) == []
        status = cli(env, "--status")
        assert status.returncode == 1
        assert "events was killed by SIGKILL" in status.stdout
    finally:
        assert cli(env, "--down").returncode == 0


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
