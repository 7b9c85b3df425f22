"""The supervisor behind `make run` / `make up`: starts NATS, Redis and the services, restarts what crashes, stops
in order.

Once everything is ready, a child that dies (a service, a NATS node, Redis) is started again with the same
command line, port and data, after a backoff that doubles with each crash of the last minute (0.5 s, 1 s, 2 s, ...).
Restarts and the last exit reason are in the state file, so `make status` shows them. A child that crashes
CRASH_LIMIT times within CRASH_WINDOW_S is not going to get better by itself: the system stops, saying which and
why. A child that dies while the system is still starting stops the start (a configuration error, not a crash).
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from collections import deque
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from eventflow.servers import ServerProcess, port_open, start_nats, start_nats_cluster, start_redis
from eventflow.system import (
    ADMIN,
    ROOT,
    SECRETS,
    STOP_TIMEOUT_S,
    Layout,
    ready,
    secrets_file,
    service_env,
    system_env,
    tail,
    write_state,
)

CRASH_LIMIT = 5  # crashes of one child within CRASH_WINDOW_S that stop the system
CRASH_WINDOW_S = 60.0
BACKOFF_FIRST_S = 0.5
BACKOFF_MAX_S = 10.0


@dataclass
class Child:
    name: str
    url: str
    log: Path
    proc: subprocess.Popen[bytes] | None = None  # None: an external server we only point at
    server: ServerProcess | None = None
    ready_url: str | None = None
    match: list[str] = field(default_factory=list)
    port: int | None = None
    argv: list[str] = field(default_factory=list)  # a service's command line (servers keep their own)
    env: dict[str, str] = field(default_factory=dict)
    restarts: int = 0
    last_exit: str | None = None
    crashes: deque[float] = field(default_factory=deque)  # monotonic times of the crashes of the last window
    restart_at: float | None = None  # set while waiting out the backoff

    def entry(self) -> dict[str, Any]:
        pid = self.proc.pid if self.proc else None
        return {"name": self.name, "pid": pid, "port": self.port, "url": self.url, "log": str(self.log),
                "ready_url": self.ready_url, "match": self.match, "external": self.proc is None,
                "restarts": self.restarts, "last_exit": self.last_exit,
                "restarting": self.restart_at is not None}  # fmt: skip

    def spawn(self) -> None:
        """Start (or start again) this child's process with its own command line, port and data."""
        if self.server is not None:
            self.server.start_again()
            self.proc = self.server.proc
            return
        with open(self.log, "ab") as log:
            log.write(f"--- {time.strftime('%Y-%m-%dT%H:%M:%S%z')} {' '.join(self.argv[1:])}\n".encode())
            log.flush()
            self.proc = subprocess.Popen(
                self.argv, cwd=ROOT, env=self.env, stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT,
                start_new_session=True,  # Ctrl-C reaches only us; we stop the children in order
            )  # fmt: skip


def exit_reason(code: int) -> str:
    return f"killed by {signal.Signals(-code).name}" if code < 0 else f"exited with code {code}"


class Failed(Exception):
    def __init__(self, message: str, child: Child | None = None) -> None:
        super().__init__(message)
        self.child = child


class Supervisor:
    def __init__(self, layout: Layout, env: Mapping[str, str], hint: str = "") -> None:
        self.layout = layout
        self.hint = hint
        self.env = dict(env)
        self.children: list[Child] = []
        self.nats_servers: list[ServerProcess] = []
        self.stopping = False
        self.state: dict[str, Any] = {
            "supervisor": {"pid": os.getpid(), "match": ["eventflow.run"]},
            "phase": "starting",
            "started_at": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
            "var_dir": str(layout.var_dir),
        }

    def _on_signal(self, signum: int, frame: object) -> None:
        self.stopping = True

    def save(self, phase: str | None = None, **extra: Any) -> None:
        if phase:
            self.state["phase"] = phase
        self.state.update(extra, processes=[child.entry() for child in self.children])
        write_state(self.layout, self.state)

    def run(self) -> int:
        signal.signal(signal.SIGINT, self._on_signal)
        signal.signal(signal.SIGTERM, self._on_signal)
        try:
            self._check_ports()
            system = self._system()
            self._start_servers()
            self._start_services(system)
            self._wait_until_ready()
            self.save("ready")
            print(summary(self.state) + self.hint, flush=True)
            if self.env.get("EVENTFLOW_DEMO", "1") != "0" and "gateway" in self.layout.ports:
                from eventflow import demo  # issue 9: demo data, idempotent

                seeded = demo.seed(self.layout.url("gateway"), system, self.layout.var_dir, sys.stdout.isatty())
                print(seeded, flush=True)
            self._watch()
            return 0
        except Failed as failure:
            failed_log = str(failure.child.log) if failure.child else None
            self.save("failed", error=str(failure), failed_log=failed_log)
            print(f"\nEventFlow failed: {failure}", file=sys.stderr)
            if failure.child:
                print(f"--- last lines of {failure.child.log} ---\n{tail(failure.child.log)}", file=sys.stderr)
            return 1
        finally:
            self._stop_all()

    def _check_ports(self) -> None:
        wanted = {f"{name} (EVENTFLOW_{name.upper()}_PORT)": port for name, port in self.layout.ports.items()}
        if not self.layout.external_nats and self.layout.nats_cluster > 1:
            for i, node in enumerate(self.layout.cluster_ports(), start=1):
                wanted[f"nats{i} (EVENTFLOW_NATS_PORT + {i - 1})"] = node.client
                wanted[f"nats{i} routes (EVENTFLOW_NATS_PORT + {100 + i - 1})"] = node.route
                wanted[f"nats{i} monitoring (EVENTFLOW_NATS_PORT + {200 + i - 1})"] = node.monitor
        elif not self.layout.external_nats:
            wanted["nats (EVENTFLOW_NATS_PORT)"] = self.layout.nats_port
        if not self.layout.external_redis:
            wanted["redis (EVENTFLOW_REDIS_PORT)"] = self.layout.redis_port
        busy = [f"{port} for {what}" for what, port in wanted.items() if port_open(port)]
        if busy:
            raise Failed("ports already in use: " + ", ".join(busy) + "; pick others with those variables")

    def _start_servers(self) -> None:
        var, logs = self.layout.var_dir, self.layout.log_dir
        if self.layout.external_nats:
            self.children.append(Child("nats", self.layout.nats_url, logs / "nats.log"))
        elif self.layout.nats_cluster > 1:
            self._start_cluster()
        else:
            nats = self._server(start_nats, "nats", self.layout.nats_port)
            conf = str(var / f"nats-{nats.port}.conf")
            self.children.append(Child("nats", nats.url, nats.log_path, nats.proc, nats, None, [conf], nats.port))
        if self.layout.external_redis:
            self.children.append(Child("redis", self.layout.redis_url, logs / "redis.log"))
        else:
            redis = self._server(start_redis, "redis", self.layout.redis_port)
            match = ["redis-server", f":{redis.port}"]
            self.children.append(Child("redis", redis.url, redis.log_path, redis.proc, redis, None, match, redis.port))
        self.save()

    def _start_cluster(self) -> None:
        """EVENTFLOW_NATS_CLUSTER=3: three nats-server processes routed to each other; R3 streams and buckets."""
        nodes = self.layout.cluster_ports()
        root = self.layout.var_dir / "nats"
        try:
            servers = start_nats_cluster(nodes, root, self.layout.log_dir, timeout=self.layout.ready_timeout)
        except (OSError, RuntimeError, TimeoutError) as err:
            first = Child("nats1", "", self.layout.log_dir / "nats1.log")
            raise Failed(f"the NATS cluster did not start: {err}", first) from None
        for i, server in enumerate(servers, start=1):
            conf = str(root / f"nats-{server.port}.conf")
            child = Child(f"nats{i}", server.url, server.log_path, server.proc, server, None, [conf], server.port)
            self.children.append(child)
        self.nats_servers = servers

    def _server(self, start: Callable[[int, Path, Path], ServerProcess], name: str, port: int) -> ServerProcess:
        log_path = self.layout.log_dir / f"{name}.log"
        try:
            return start(port, self.layout.var_dir / name, log_path)
        except (OSError, RuntimeError, TimeoutError) as err:
            raise Failed(f"{name}-server did not start: {err}", Child(name, "", log_path)) from None

    def _system(self) -> dict[str, str]:
        """Every service's settings and secrets, before anything starts: a bad admin pair stops us cleanly."""
        try:
            return system_env(self.env)
        except ValueError as err:
            raise Failed(str(err)) from None

    def _start_services(self, system: dict[str, str]) -> None:
        base = {k: v for k, v in self.env.items() if k not in (*SECRETS, *ADMIN)}
        # Where the first admin's password is (never the password itself: the summary ends up in terminals and logs).
        self.state["admin_email"] = system.get("EVENTFLOW_ADMIN_EMAIL") if "users" in self.layout.ports else None
        generated = not self.env.get("EVENTFLOW_ADMIN_PASSWORD")
        self.state["admin_password_in"] = str(secrets_file(self.layout.var_dir)) if generated else None
        for name, port in self.layout.ports.items():
            env = {**base, **service_env(name, system), "PYTHONUNBUFFERED": "1"}  # each its own secrets only
            if name == "reservations":  # stable across restarts, so a restarted process resumes its sagas at once
                env.setdefault("EVENTFLOW_RESERVAS_INSTANCIA", f"reservations@{socket.gethostname()}:{port}")
            module = f"services.{name}.main"
            log_path = self.layout.log_dir / f"{name}.log"
            log_path.parent.mkdir(parents=True, exist_ok=True)
            argv = [sys.executable, "-m", module, "--host", self.layout.host, "--port", str(port)]
            url = self.layout.url(name)
            child = Child(name, url, log_path, None, None, f"{url}/health/ready", [module], port, argv, env)
            child.spawn()
            self.children.append(child)
        self.save()

    def _wait_until_ready(self) -> None:
        pending = [child for child in self.children if child.ready_url]
        deadline = time.monotonic() + self.layout.ready_timeout
        while pending:
            self._check_alive()
            pending = [child for child in pending if not ready(child.entry())]
            if pending and time.monotonic() > deadline:
                names = ", ".join(child.name for child in pending)
                raise Failed(f"not ready after {self.layout.ready_timeout:g}s: {names}", pending[0])
            time.sleep(0.2)

    def _check_alive(self) -> None:
        """While starting, a child that dies stops the start: it is a configuration error, not a crash."""
        if self.stopping:
            raise KeyboardInterrupt
        for child in self.children:
            if child.proc and child.proc.poll() is not None:
                raise Failed(f"{child.name} {exit_reason(child.proc.returncode)}", child)

    def _watch(self) -> None:
        try:
            while True:
                if self.stopping:
                    raise KeyboardInterrupt
                for child in self.children:
                    self._supervise(child)
                time.sleep(0.2)
        except KeyboardInterrupt:
            print("\nstopping EventFlow ...", flush=True)

    def _supervise(self, child: Child) -> None:
        """Notice a crash and schedule the restart (backoff), or restart once the backoff is over."""
        if child.proc is None:
            return  # an external server: not ours to restart
        if child.restart_at is None:
            code = child.proc.poll()
            if code is not None:
                self._crashed(child, exit_reason(code))
            return
        if time.monotonic() < child.restart_at or self.stopping:
            return
        child.restart_at = None
        child.restarts += 1
        try:
            child.spawn()
            print(f"{child.name} restarted (restart {child.restarts}, pid {child.proc.pid})", flush=True)
        except (OSError, RuntimeError, TimeoutError) as err:
            if child.proc.poll() is None:
                child.proc.kill()
                child.proc.wait()
            self._crashed(child, f"did not start again: {err}")
        self.save()

    def _crashed(self, child: Child, reason: str) -> None:
        now = time.monotonic()
        child.crashes.append(now)
        while child.crashes and child.crashes[0] < now - CRASH_WINDOW_S:
            child.crashes.popleft()
        child.last_exit = f"{reason} at {time.strftime('%H:%M:%S')}"
        if len(child.crashes) >= CRASH_LIMIT:
            raise Failed(
                f"{child.name} keeps crashing: {len(child.crashes)} times in {CRASH_WINDOW_S:g} s "
                f"(last: {reason}); stopped everything",
                child,
            )
        delay = min(BACKOFF_FIRST_S * 2 ** (len(child.crashes) - 1), BACKOFF_MAX_S)
        child.restart_at = now + delay
        print(f"{child.name} {reason}; restarting it in {delay:g} s", flush=True)
        self.save()

    def _stop_all(self) -> None:
        self.stopping = True
        signal.signal(signal.SIGINT, signal.SIG_IGN)  # a second Ctrl-C must not leave orphans behind
        if self.state["phase"] != "failed":
            self.save("stopping")
        for child in reversed(self.children):
            child.restart_at = None
            if child.server:
                child.server.stop(STOP_TIMEOUT_S)
            elif child.proc and child.proc.poll() is None:
                child.proc.terminate()
                try:
                    child.proc.wait(STOP_TIMEOUT_S)
                except subprocess.TimeoutExpired:
                    child.proc.kill()
                    child.proc.wait()
        if self.state["phase"] != "failed":
            self.save("stopped")


def summary(state: Mapping[str, Any]) -> str:
    lines = ["", "EventFlow is ready:"]
    for entry in state["processes"]:
        note = "  (the public API: /api/...)" if entry["name"] == "gateway" else ""
        if entry["name"] in ("nats", "redis"):
            note = "  (external)" if entry["external"] else f"  data: {Path(state['var_dir']) / entry['name']}"
        lines.append(f"  {entry['name']:<13} {entry['url']}{note}")
    lines += [f"  {'logs':<13} {Path(state['var_dir']) / 'log'}/"]
    if state.get("admin_email"):
        where = state.get("admin_password_in")
        password = f"EVENTFLOW_ADMIN_PASSWORD in {where}" if where else "the EVENTFLOW_ADMIN_PASSWORD you set"
        lines.append(f"  {'admin':<13} {state['admin_email']} (password: {password})")
    lines.append("")
    return "\n".join(lines)


def failure_report(state: Mapping[str, Any] | None, layout: Layout) -> str:
    state = state or {}
    log_path = state.get("failed_log") or layout.log_dir / "supervisor.log"
    reason = state.get("error") or "the supervisor exited"
    return f"EventFlow did not start: {reason}\n--- last lines of {log_path} ---\n{tail(log_path)}"
