"""The secrets bootstrap of docker-compose.yml (deploy/compose/make_secrets.py) and the Redis ACL it writes: each
container gets only its own secrets, Redis keeps only password hashes, and a real redis-server with that ACL (and
protected mode) lets each service reach its own keys only."""

from __future__ import annotations

import base64
import os
import shlex
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest
import redis
from redis.backoff import NoBackoff
from redis.exceptions import AuthenticationError, NoPermissionError, ResponseError
from redis.retry import Retry

from eventflow.servers import free_port, wait_for_port
from eventflow.system import SERVICE_SECRETS, client_secret
from tests.deploy.helpers import ROOT, load

make_secrets = load("deploy/compose/make_secrets.py")
MASTER_KEY = base64.b64encode(os.urandom(32)).decode()


def run_bootstrap(tmp: Path, **extra: str) -> dict[str, Path]:
    environ = {
        "SECRETS_STATE": str(tmp / "state"),
        "SECRETS_OUT": str(tmp / "out"),
        "ACL_TEMPLATE": str(ROOT / "deploy" / "redis" / "users.acl.template"),
        "EVENTFLOW_ADMIN_EMAIL": "admin@pruebas.eventflow.example",
        "EVENTFLOW_ADMIN_PASSWORD": "una frase del operador que nadie adivina",
        **extra,
    }
    assert make_secrets.main(environ) == 0
    return {"state": tmp / "state", "out": tmp / "out"}


def read_env(path: Path) -> dict[str, str]:
    """What the image's entrypoint gets by sourcing the file (`set -a; . file`)."""
    script = f"set -a; . {shlex.quote(str(path))}; env -0"
    out = subprocess.run(["sh", "-c", script], capture_output=True, check=True, env={}).stdout.decode()
    return dict(item.split("=", 1) for item in out.split("\0") if item.startswith("EVENTFLOW_"))


def test_each_service_gets_only_its_own_secrets_and_credentials(tmp_path: Path) -> None:
    paths = run_bootstrap(tmp_path, EVENTFLOW_MASTER_KEY=MASTER_KEY)
    envs = {service: read_env(paths["out"] / service / "env") for service in make_secrets.SERVICES}
    service_key = envs["users"]["EVENTFLOW_SERVICE_KEY"]
    for service, env in envs.items():
        secrets = {name for name in env if name in ("EVENTFLOW_SERVICE_KEY", *SERVICE_SECRETS["users"])}
        assert secrets == set(SERVICE_SECRETS[service]), service
        assert env["EVENTFLOW_REDIS_URL"].startswith(f"redis://{service}:")
        assert env["EVENTFLOW_METRICS_TOKEN"]
        if service == "gateway":
            assert "EVENTFLOW_NATS_URL" not in env
        else:
            urls = env["EVENTFLOW_NATS_URL"].split(",")
            assert [u.split("@")[1] for u in urls] == ["nats1:4222", "nats2:4222", "nats3:4222"]
            assert all(u.startswith(f"nats://{service}:") for u in urls)
        if service in ("events", "reservations"):
            assert env["EVENTFLOW_CLIENT_ID"] == service
            assert env["EVENTFLOW_CLIENT_SECRET"] == client_secret(service_key, service)
    assert envs["users"]["EVENTFLOW_MASTER_KEY"] == MASTER_KEY  # the operator's key wins
    assert envs["users"]["EVENTFLOW_ADMIN_PASSWORD"] == "una frase del operador que nadie adivina"
    assert (paths["out"] / "users" / "env").stat().st_mode & 0o777 == 0o400


def test_a_second_start_hands_out_the_same_secrets(tmp_path: Path) -> None:
    first = run_bootstrap(tmp_path)
    before = {service: read_env(first["out"] / service / "env") for service in make_secrets.SERVICES}
    second = run_bootstrap(tmp_path)
    after = {service: read_env(second["out"] / service / "env") for service in make_secrets.SERVICES}
    assert before == after


def test_redis_and_nats_get_hashes_and_passwords_only_for_their_own_use(tmp_path: Path) -> None:
    paths = run_bootstrap(tmp_path)
    acl = (paths["out"] / "redis" / "users.acl").read_text()
    redis_passwords = {p.name: p.read_text().strip() for p in paths["state"].glob("redis-*.password")}
    assert len(redis_passwords) == len(make_secrets.REDIS_USERS)
    for password in redis_passwords.values():
        assert password not in acl
    assert "_SHA256" not in acl and acl.count(" on #") == len(make_secrets.REDIS_USERS)
    nats = (paths["out"] / "nats" / "passwords.env").read_text()
    assert set(line.split("=")[0] for line in nats.splitlines()) == {
        "EVENTFLOW_NATS_USERS_PASSWORD",
        "EVENTFLOW_NATS_EVENTS_PASSWORD",
        "EVENTFLOW_NATS_RESERVATIONS_PASSWORD",
    }


@pytest.fixture
def acl_redis(tmp_path: Path) -> Iterator[tuple[int, dict[str, str]]]:
    paths = run_bootstrap(tmp_path)
    passwords = {p.stem.removeprefix("redis-").removesuffix(".password"): p.read_text().strip()
                 for p in paths["state"].glob("redis-*.password")}  # fmt: skip
    port = free_port()
    binary = shutil.which("redis-server")
    assert binary, "redis-server not on PATH (make installs it)"
    acl = str(paths["out"] / "redis" / "users.acl")
    args = [binary, "--port", str(port), "--bind", "127.0.0.1", "--protected-mode", "yes", "--save", "",
            "--appendonly", "no", "--dir", str(tmp_path), "--aclfile", acl]  # fmt: skip
    proc = subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        wait_for_port(port, proc, 20, "redis-server")
        yield port, passwords
    finally:
        proc.terminate()
        proc.wait(10)


def login(port: int, user: str | None = None, password: str | None = None) -> redis.Redis:
    """No retries: a refused login is the answer, not a hiccup."""
    return redis.Redis(
        host="127.0.0.1",
        port=port,
        username=user,
        password=password,
        decode_responses=True,
        retry=Retry(NoBackoff(), 0),
    )


def test_redis_acl_lets_each_service_reach_its_own_keys_only(acl_redis: tuple[int, dict[str, str]]) -> None:
    port, passwords = acl_redis
    events = login(port, "events", passwords["events"])
    events.set("events:doc:uno", "{}")
    events.set("proj:events-sales:RESERVAS", 3)
    with pytest.raises(NoPermissionError):
        events.set("usuarios:doc:uno", "{}")  # another service's read model
    with pytest.raises(NoPermissionError):
        events.get("ratelimit:10.0.0.1")
    with pytest.raises(NoPermissionError):
        events.flushall()
    with pytest.raises(NoPermissionError):
        events.config_get("*")
    users = login(port, "users", passwords["users"])
    users.set("usuarios:doc:uno", "{}")
    with pytest.raises(NoPermissionError):
        users.get("events:doc:uno")
    gateway = login(port, "gateway", passwords["gateway"])
    gateway.hset("ratelimit:10.0.0.1", mapping={"tokens": 1})
    with pytest.raises(NoPermissionError):
        gateway.get("reservas:requiere_intervencion")
    health = login(port, "health", passwords["health"])
    assert health.ping()
    with pytest.raises(NoPermissionError):
        health.get("events:doc:uno")


def test_redis_refuses_the_default_user_and_wrong_passwords(acl_redis: tuple[int, dict[str, str]]) -> None:
    port, passwords = acl_redis
    with pytest.raises((AuthenticationError, ResponseError)):
        login(port).ping()
    with pytest.raises((AuthenticationError, ResponseError)):
        login(port, "events", passwords["users"]).ping()
