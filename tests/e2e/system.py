"""Drive `python -m eventflow.run` as a user would, on free ports with its data in a temporary folder."""

from __future__ import annotations

import contextlib
import os
import random
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import orjson

from eventflow.servers import free_port, port_open
from eventflow.system import ROOT, SERVICES, secrets_file

TEST_OWNER = "EVENTFLOW_TEST_OWNER"


def folder_env(var_dir: Path) -> dict[str, str]:
    """The environment of a system in `var_dir`, and no EVENTFLOW_* from the caller's shell (it could point at
    other servers): what `--down` or `--status` of that system needs."""
    env = {name: value for name, value in os.environ.items() if not name.startswith("EVENTFLOW_")}
    env["EVENTFLOW_VAR_DIR"] = str(var_dir)
    return env


def system_env(var_dir: Path, **extra: str) -> dict[str, str]:
    """Our own ports and folder (folder_env)."""
    env = folder_env(var_dir)
    env[TEST_OWNER] = str(os.getpid())  # which test run started it: tests/conftest.py stops what its own run left
    env["EVENTFLOW_NATS_PORT"] = str(free_port())
    env["EVENTFLOW_REDIS_PORT"] = str(free_port())
    for name in SERVICES:
        env[f"EVENTFLOW_{name.upper()}_PORT"] = str(free_port())
    env.update(extra)
    return env


def cluster_base_port() -> int:
    """A base for EVENTFLOW_NATS_PORT with a 3-node cluster (base + 0..2, + 100..102, + 200..202 all free), below
    the kernel's ephemeral range so that no free_port() of the same system lands on one of them."""
    while True:
        base = random.randrange(20_000, 29_000)
        if not any(port_open(base + k) for k in (0, 1, 2, 100, 101, 102, 200, 201, 202)):
            return base


def cli(env: dict[str, str], *args: str, module: str = "eventflow.run") -> subprocess.CompletedProcess[str]:
    """Longer than `--detach` may take (the ready timeout, its 60 s grace, 30 s to stop what did not get ready),
    so that this never kills the client while the system it started in its own session runs on."""
    timeout = float(env.get("EVENTFLOW_READY_TIMEOUT", "60")) + 120
    return subprocess.run(
        [sys.executable, "-m", module, *args], env=env, cwd=ROOT, capture_output=True, text=True, timeout=timeout
    )


def url(env: dict[str, str], service: str) -> str:
    return f"http://127.0.0.1:{env[f'EVENTFLOW_{service.upper()}_PORT']}"


def state(env: dict[str, str]) -> dict[str, Any]:
    return dict(orjson.loads((Path(env["EVENTFLOW_VAR_DIR"]) / "run" / "eventflow.json").read_bytes()))


def pid_running(pid: int) -> bool:
    """Running, not a zombie waiting for its parent to reap it."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except FileNotFoundError:
        return False
    return stat.rsplit(")", 1)[1].split()[0] != "Z"


def wait_until_gone(pids: list[int], timeout: float = 60) -> list[int]:
    deadline = time.monotonic() + timeout
    while (left := [pid for pid in pids if pid_running(pid)]) and time.monotonic() < deadline:
        time.sleep(0.1)
    return left


def admin_credentials(env: dict[str, str]) -> tuple[str, str]:
    """The first admin's email and password: the test's own, or the local one generated into <var>/secrets.env."""
    if env.get("EVENTFLOW_ADMIN_PASSWORD"):
        return env["EVENTFLOW_ADMIN_EMAIL"], env["EVENTFLOW_ADMIN_PASSWORD"]
    lines = secrets_file(Path(env["EVENTFLOW_VAR_DIR"])).read_text().splitlines()
    stored = dict(line.split("=", 1) for line in lines if "=" in line)
    return stored["EVENTFLOW_ADMIN_EMAIL"], stored["EVENTFLOW_ADMIN_PASSWORD"]


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


def sign_in(api: Any, email: str, password: str) -> dict[str, Any]:
    """`POST /api/auth/token` through whatever `api` (an httpx.Client) points at: the tokens."""
    resp = api.post("/api/auth/token", json={"email": email, "password": password})
    assert resp.status_code == 200, resp.text
    tokens: dict[str, Any] = resp.json()
    return tokens


@contextlib.contextmanager
def detached(env: dict[str, str]) -> Iterator[str]:
    """`make up` for a test: the system started in the background, and always stopped after (a start that failed
    halfway too: what it left running would slow every later test). Yields what the start printed."""
    try:
        started = cli(env, "--detach")
        assert started.returncode == 0, started.stdout + started.stderr
        yield started.stdout
    finally:
        cli(env, "--down")


def admin_token(env: dict[str, str]) -> str:
    """The first admin's access token, from the users service's own port."""
    with httpx.Client(base_url=url(env, "users"), timeout=30) as users:
        return str(sign_in(users, *admin_credentials(env))["access_token"])
