"""Where an EventFlow system on one machine lives: ports, data folders, secrets, and its state file.

Shared by the supervisor (`eventflow.run`) and the rebuild CLI (`eventflow.rebuild`), so both talk to the
same servers with the same keys.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import http.client
import os
import secrets
import signal
import time
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import orjson

from eventflow.servers import ClusterPorts, url_listening

ROOT = Path(__file__).resolve().parents[1]
# Start order; stopping goes the other way. The gateway starts last: it is ready once its upstreams are.
SERVICES = {"users": 8001, "events": 8002, "reservations": 8003, "gateway": 8080}
SECRETS = ("EVENTFLOW_MASTER_KEY", "EVENTFLOW_PSEUDONYM_KEY", "EVENTFLOW_SERVICE_KEY")
ADMIN = ("EVENTFLOW_ADMIN_EMAIL", "EVENTFLOW_ADMIN_PASSWORD")
LOCAL_ADMIN_EMAIL = "admin@eventflow.example"  # RFC 2606: never a real mailbox
# Who gets which secret (least privilege): the gateway decrypts nothing and signs nothing; only the users service
# (the token issuer) holds the service key and the first admin's credentials; every other service gets its own
# client credential, derived from the service key, and nothing that would let it pose as another.
SERVICE_SECRETS = {
    "users": ("EVENTFLOW_MASTER_KEY", "EVENTFLOW_PSEUDONYM_KEY", "EVENTFLOW_SERVICE_KEY", *ADMIN),
    "events": ("EVENTFLOW_MASTER_KEY", "EVENTFLOW_PSEUDONYM_KEY"),
    "reservations": ("EVENTFLOW_MASTER_KEY", "EVENTFLOW_PSEUDONYM_KEY"),
    "gateway": (),
}
STOP_TIMEOUT_S = 10.0


@dataclass(frozen=True)
class Layout:
    var_dir: Path
    nats_port: int
    redis_port: int
    external_nats: str | None
    external_redis: str | None
    host: str
    ports: dict[str, int]
    ready_timeout: float
    nats_cluster: int = 1  # EVENTFLOW_NATS_CLUSTER: 3 runs a local 3-node JetStream cluster (R3 streams and buckets)

    @classmethod
    def from_env(cls, env: Mapping[str, str]) -> Layout:
        wanted = [s.strip() for s in env.get("EVENTFLOW_SERVICES", ",".join(SERVICES)).split(",") if s.strip()]
        present = [name for name in SERVICES if name in wanted and (ROOT / "services" / name / "main.py").exists()]
        return cls(
            var_dir=Path(env.get("EVENTFLOW_VAR_DIR", str(ROOT / "var"))).resolve(),
            nats_port=int(env.get("EVENTFLOW_NATS_PORT", "14222")),
            redis_port=int(env.get("EVENTFLOW_REDIS_PORT", "16379")),
            external_nats=env.get("EVENTFLOW_NATS_URL") or None,
            external_redis=env.get("EVENTFLOW_REDIS_URL") or None,
            host=env.get("EVENTFLOW_BIND_HOST", "127.0.0.1"),
            ports={name: int(env.get(f"EVENTFLOW_{name.upper()}_PORT", str(SERVICES[name]))) for name in present},
            ready_timeout=float(env.get("EVENTFLOW_READY_TIMEOUT", "60")),
            nats_cluster=_cluster_size(env.get("EVENTFLOW_NATS_CLUSTER", "1")),
        )

    def cluster_ports(self) -> list[ClusterPorts]:
        """Node i (from 0) of the local cluster: clients on nats_port + i, routes + 100, monitoring + 200."""
        base = self.nats_port
        return [ClusterPorts(base + i, base + 100 + i, base + 200 + i) for i in range(self.nats_cluster)]

    @property
    def nats_url(self) -> str:
        if self.external_nats:
            return self.external_nats
        return ",".join(f"nats://127.0.0.1:{node.client}" for node in self.cluster_ports())

    @property
    def replicas(self) -> int:
        return 3 if self.nats_cluster >= 3 and not self.external_nats else 1

    @property
    def redis_url(self) -> str:
        return self.external_redis or f"redis://127.0.0.1:{self.redis_port}/0"

    @property
    def state_file(self) -> Path:
        return self.var_dir / "run" / "eventflow.json"

    @property
    def log_dir(self) -> Path:
        return self.var_dir / "log"

    def url(self, service: str) -> str:
        default = SERVICES[service]
        return f"http://127.0.0.1:{self.ports.get(service, default)}"


def _cluster_size(value: str) -> int:
    if value.strip() not in ("1", "3"):
        raise ValueError(f"EVENTFLOW_NATS_CLUSTER must be 1 or 3, not {value!r}")
    return int(value)


def secrets_file(var_dir: Path) -> Path:
    return var_dir / "secrets.env"


def load_secrets(var_dir: Path, env: Mapping[str, str]) -> dict[str, str]:
    """Keys from the environment win; the others are made once into `secrets.env` (0600) and reused.

    Losing that file makes every stored personal datum unreadable: back it up with `var/nats`. The first
    admin comes from EVENTFLOW_ADMIN_EMAIL and EVENTFLOW_ADMIN_PASSWORD; with neither set, a local admin
    (LOCAL_ADMIN_EMAIL) gets a generated password, kept in the same file.
    """
    given = [name for name in ADMIN if env.get(name)]
    if len(given) == 1:
        raise ValueError(f"{given[0]} is set without its pair: set both EVENTFLOW_ADMIN_EMAIL and _PASSWORD")
    path = secrets_file(var_dir)
    stored: dict[str, str] = {}
    if path.exists():
        for line in path.read_text().splitlines():
            name, sep, value = line.partition("=")
            if sep and name.strip() in (*SECRETS, *ADMIN):
                stored[name.strip()] = value.strip()
    wanted = [*SECRETS] + ([] if given else list(ADMIN))
    missing = [name for name in wanted if not env.get(name) and not stored.get(name)]
    if missing:
        fresh = {name: base64.b64encode(os.urandom(32)).decode() for name in missing if name in SECRETS}
        if "EVENTFLOW_ADMIN_EMAIL" in missing:
            fresh["EVENTFLOW_ADMIN_EMAIL"] = LOCAL_ADMIN_EMAIL
        if "EVENTFLOW_ADMIN_PASSWORD" in missing:
            fresh["EVENTFLOW_ADMIN_PASSWORD"] = secrets.token_urlsafe(18)
        stored.update(fresh)
        var_dir.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(".tmp")
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as out:
            out.write("".join(f"{name}={value}\n" for name, value in stored.items()))
        os.replace(tmp, path)
    return {name: env.get(name) or stored[name] for name in wanted} | {name: env[name] for name in given}


def client_secret(service_key: str, client_id: str) -> str:
    """A service's own credential for the token endpoint (client credentials): derived, so only the issuer,
    which holds the service key, can check it, and each service holds only its own."""
    digest = hmac.new(base64.b64decode(service_key), f"client:{client_id}".encode(), hashlib.sha256).digest()
    return base64.urlsafe_b64encode(digest).rstrip(b"=").decode()


def service_env(service: str, system: Mapping[str, str]) -> dict[str, str]:
    """What one service of the system gets: its own secrets only (SERVICE_SECRETS) and its client credential."""
    env = {name: value for name, value in system.items() if name not in (*SECRETS, *ADMIN)}
    env.update({name: system[name] for name in SERVICE_SECRETS.get(service, ()) if name in system})
    if service != "users" and "EVENTFLOW_SERVICE_KEY" in system:
        env["EVENTFLOW_CLIENT_ID"] = service
        env["EVENTFLOW_CLIENT_SECRET"] = client_secret(system["EVENTFLOW_SERVICE_KEY"], service)
    return env


def system_env(env: Mapping[str, str] | None = None) -> dict[str, str]:
    """The EVENTFLOW_* settings every service of this system runs with (also used by `eventflow.rebuild`)."""
    env = os.environ if env is None else env
    layout = Layout.from_env(env)
    return {
        "EVENTFLOW_NATS_URL": layout.nats_url,
        "EVENTFLOW_REDIS_URL": layout.redis_url,
        "EVENTFLOW_USERS_URL": layout.url("users"),
        "EVENTFLOW_EVENTS_URL": layout.url("events"),
        "EVENTFLOW_RESERVATIONS_URL": layout.url("reservations"),
        "EVENTFLOW_GATEWAY_UPSTREAMS": ",".join(name for name in layout.ports if name != "gateway"),
        "EVENTFLOW_REPLICAS": env.get("EVENTFLOW_REPLICAS") or str(layout.replicas),
        **load_secrets(layout.var_dir, env),
    }


# -- the state file and the processes it names ---------------------------------------------------
def read_state(layout: Layout) -> dict[str, Any] | None:
    try:
        return dict(orjson.loads(layout.state_file.read_bytes()))
    except (FileNotFoundError, orjson.JSONDecodeError):
        return None


def write_state(layout: Layout, state: dict[str, Any]) -> None:
    layout.state_file.parent.mkdir(parents=True, exist_ok=True)
    tmp = layout.state_file.with_suffix(".tmp")
    tmp.write_bytes(orjson.dumps(state, option=orjson.OPT_INDENT_2))
    os.replace(tmp, layout.state_file)


def alive(entry: Mapping[str, Any]) -> bool:
    """The pid exists and still runs what we started (pids get reused; zombies have no command line)."""
    pid = entry.get("pid")
    if not pid:
        return False
    try:
        os.kill(pid, 0)
    except (ProcessLookupError, PermissionError):
        return False
    try:
        cmdline = Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
    except FileNotFoundError:
        return not Path("/proc/self").exists()  # no procfs (macOS): trust the pid
    return bool(cmdline) and all(token in cmdline for token in entry.get("match", []))


def ready(entry: Mapping[str, Any]) -> bool:
    if entry.get("ready_url"):
        parts = urlsplit(entry["ready_url"])
        conn = http.client.HTTPConnection(parts.hostname or "127.0.0.1", parts.port or 80, timeout=2)
        try:
            conn.request("GET", parts.path)
            return conn.getresponse().status == 200
        except OSError:
            return False
        finally:
            conn.close()
    return url_listening(str(entry["url"]))


def tail(path: str | Path, lines: int = 25) -> str:
    try:
        return "\n".join(Path(path).read_text(errors="replace").splitlines()[-lines:])
    except FileNotFoundError:
        return f"(no log at {path})"


def terminate(pid: int, entry: Mapping[str, Any], timeout: float = STOP_TIMEOUT_S) -> None:
    """SIGTERM, then SIGKILL if it does not go within `timeout`."""
    try:
        os.kill(pid, signal.SIGTERM)
    except ProcessLookupError:
        return
    deadline = time.monotonic() + timeout
    while alive(entry) and time.monotonic() < deadline:
        time.sleep(0.05)
    if alive(entry):
        os.kill(pid, signal.SIGKILL)
