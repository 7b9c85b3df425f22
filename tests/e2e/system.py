"""Drive `python -m eventflow.run` as a user would, on free ports with its data in a temporary folder."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import orjson

from eventflow.servers import free_port
from eventflow.system import ROOT, SERVICES


def system_env(var_dir: Path, **extra: str) -> dict[str, str]:
    """Our own ports and folder; no EVENTFLOW_* from the caller's shell (it could point at other servers)."""
    env = {name: value for name, value in os.environ.items() if not name.startswith("EVENTFLOW_")}
    env["EVENTFLOW_VAR_DIR"] = str(var_dir)
    env["EVENTFLOW_NATS_PORT"] = str(free_port())
    env["EVENTFLOW_REDIS_PORT"] = str(free_port())
    for name in SERVICES:
        env[f"EVENTFLOW_{name.upper()}_PORT"] = str(free_port())
    env.update(extra)
    return env


def cli(env: dict[str, str], *args: str, module: str = "eventflow.run") -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", module, *args], env=env, cwd=ROOT, capture_output=True, text=True, timeout=180
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
