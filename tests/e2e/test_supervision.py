"""Supervision under `make up`: a crashed service, NATS node or Redis is started again and the system keeps working;
a child that keeps crashing stops everything with a clear message; `EVENTFLOW_NATS_CLUSTER=3` runs three nodes."""

from __future__ import annotations

import asyncio
import os
import signal
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from eventflow.jetstream import connect
from eventflow.supervisor import CRASH_LIMIT
from tests.e2e.system import (
    admin_token,
    bearer,
    cli,
    cluster_base_port,
    detached,
    pid_running,
    state,
    system_env,
    url,
    wait_until_gone,
)

pytestmark = pytest.mark.slow


def eventually(check: Callable[[], Any], seconds: float = 60, what: str = "condition") -> Any:
    deadline = time.monotonic() + seconds
    while not (found := check()) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert found, f"{what}: not reached"
    return found


def entry(env: dict[str, str], name: str) -> dict[str, Any]:
    return next(p for p in state(env)["processes"] if p["name"] == name)


def kill_and_wait_for_restart(env: dict[str, str], name: str) -> dict[str, Any]:
    """SIGKILL `name`, then wait until the supervisor has started it again (a new pid, running)."""
    before = entry(env, name)
    os.kill(before["pid"], signal.SIGKILL)

    def restarted() -> dict[str, Any] | None:
        now = entry(env, name)
        fresh = now["pid"] != before["pid"] and now["restarts"] == before["restarts"] + 1
        return now if fresh and pid_running(now["pid"]) else None

    return eventually(restarted, what=f"{name} restarted")


def all_ready(env: dict[str, str], services: list[str]) -> bool:
    try:
        return all(httpx.get(f"{url(env, s)}/health/ready", timeout=5).status_code == 200 for s in services)
    except httpx.HTTPError:
        return False


def status_rows(env: dict[str, str]) -> dict[str, list[str]]:
    status = cli(env, "--status")
    lines = status.stdout.splitlines()
    return {line.split()[0]: line.split(maxsplit=6) for line in lines[2:-1]}


def create_event(env: dict[str, str], token: str) -> str:
    """The admin creates an event (events, NATS) and reads it back (Redis, read-your-writes)."""
    with httpx.Client(timeout=30) as api:
        body = {
            "nombre": f"Tras la caída {uuid.uuid4().hex[:6]}",
            "descripcion": "",
            "fecha": "2031-06-01T21:00:00+02:00",
            "lugar": "Teatro",
            "aforo_total": 10,
            "precio": 10,
            "categoria": "musica",
        }
        # A verifier that started before the issuer published its first key refuses that key's first token (a
        # known gap of eventflow.auth, reported); later ones pass. Not what this test is about: ask again.
        deadline = time.monotonic() + 30
        while (
            created := api.post(f"{url(env, 'events')}/api/eventos", json=body, headers=bearer(token))
        ).status_code == 401:
            assert time.monotonic() < deadline, created.text
            time.sleep(0.5)
        assert created.status_code == 201, created.text
        read = api.get(f"{url(env, 'events')}/api/eventos/{created.json()['id']}")
        assert read.status_code == 200, read.text
        return str(created.json()["id"])


@pytest.fixture
def system(tmp_path: Path) -> Iterator[dict[str, str]]:
    env = system_env(tmp_path / "var", EVENTFLOW_SERVICES="users,events")
    with detached(env):
        yield env


def test_a_killed_service_nats_or_redis_is_restarted_and_the_system_keeps_working(system: dict[str, str]) -> None:
    env = system
    supervisor, users = state(env)["supervisor"]["pid"], entry(env, "users")["pid"]
    token = admin_token(env)
    create_event(env, token)
    for name in ("events", "nats", "redis"):
        kill_and_wait_for_restart(env, name)
        eventually(lambda: all_ready(env, ["users", "events"]), what=f"ready again after {name} was killed")
        create_event(env, token)  # writes (NATS) and reads (Redis) work again, through the restarted process
    assert admin_token(env), "signing in (users, NATS) works again too"
    assert state(env)["supervisor"]["pid"] == supervisor and state(env)["phase"] == "ready"
    assert entry(env, "users")["pid"] == users, "the others were left alone"
    rows = status_rows(env)
    for name in ("events", "nats", "redis"):
        assert rows[name][3:5] == ["yes", "yes"] and rows[name][5] == "1", rows[name]
        assert rows[name][6].startswith("killed by SIGKILL at "), rows[name]
    assert rows["users"][5:] == ["0", "-"]
    assert cli(env, "--status").returncode == 0


def test_a_child_that_keeps_crashing_stops_everything_with_a_clear_message(tmp_path: Path) -> None:
    env = system_env(tmp_path / "var", EVENTFLOW_SERVICES="gateway")
    started = cli(env, "--detach")
    assert started.returncode == 0, started.stdout + started.stderr
    try:
        pids = [state(env)["supervisor"]["pid"], *(p["pid"] for p in state(env)["processes"])]
        for _ in range(CRASH_LIMIT - 1):
            pids.append(kill_and_wait_for_restart(env, "gateway")["pid"])
        os.kill(entry(env, "gateway")["pid"], signal.SIGKILL)  # the last straw
        assert wait_until_gone(pids) == [], "everything stopped"
        status = cli(env, "--status")
        assert status.returncode == 1
        expected = f"gateway keeps crashing: {CRASH_LIMIT} times in 60 s (last: killed by SIGKILL); stopped everything"
        assert expected in status.stdout, status.stdout
        assert expected in (Path(env["EVENTFLOW_VAR_DIR"]) / "log" / "supervisor.log").read_text()
    finally:
        assert cli(env, "--down").returncode == 0


async def stream_peers(nats_url: str, stream: str) -> tuple[str | None, list[tuple[str, bool]]]:
    nc = await connect(nats_url, "e2e-cluster")
    try:
        info = await nc.jetstream(timeout=10).stream_info(stream)
        cluster = info.cluster
        assert cluster is not None
        return cluster.leader, [(peer.name, bool(peer.current)) for peer in cluster.replicas or []]
    finally:
        await nc.close()


def test_a_local_three_node_cluster_runs_r3_and_a_killed_node_comes_back(tmp_path: Path) -> None:
    """Also read-your-writes right after the kill: when the killed node was the meta leader, no new consumer can be
    made for seconds, and the event's GET used to 404 (issue 11); the projections now read the log directly."""
    env = system_env(tmp_path / "var", EVENTFLOW_SERVICES="users,events", EVENTFLOW_NATS_CLUSTER="3")
    env["EVENTFLOW_NATS_PORT"] = str(cluster_base_port())
    started = cli(env, "--detach")
    assert started.returncode == 0, started.stdout + started.stderr
    try:
        names = [p["name"] for p in state(env)["processes"]]
        assert names[:3] == ["nats1", "nats2", "nats3"], names
        nats_url = entry(env, "nats1")["url"] + "," + entry(env, "nats2")["url"] + "," + entry(env, "nats3")["url"]
        leader, followers = asyncio.run(stream_peers(nats_url, "EVENTOS"))
        assert leader and len(followers) == 2, "EVENTOS has three replicas"
        token = admin_token(env)
        create_event(env, token)
        victim = next(p["name"] for p in state(env)["processes"] if p["name"].startswith("nats"))
        kill_and_wait_for_restart(env, victim)
        create_event(env, token)
        eventually(
            lambda: all(current for _, current in asyncio.run(stream_peers(nats_url, "EVENTOS"))[1]),
            what="the restarted node caught up",
        )
        rows = status_rows(env)
        assert rows[victim][5] == "1" and all(rows[n][3:5] == ["yes", "yes"] for n in ("nats1", "nats2", "nats3"))
    finally:
        assert cli(env, "--down").returncode == 0
