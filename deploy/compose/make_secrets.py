"""The secrets bootstrap of docker-compose.yml: run once before anything else starts, in the EventFlow image.

It makes every secret the system needs (or takes the operator's from the environment: EVENTFLOW_MASTER_KEY,
EVENTFLOW_PSEUDONYM_KEY, EVENTFLOW_SERVICE_KEY, EVENTFLOW_ADMIN_EMAIL/_PASSWORD), keeps them in the `secrets`
volume (reused at every start: new personal-data keys would make the stored personal data unreadable), and hands
each container only its own, in a volume only that container mounts:

- /out/<service>/env      the service's EVENTFLOW_* secrets (eventflow.system.service_env: least privilege) plus its
                          own NATS and Redis credentials and the metrics token; read by the image's entrypoint;
- /out/nats/passwords.env   the NATS users' passwords, the variables deploy/nats/auth.conf names;
- /out/redis/users.acl      Redis ACL users (SHA-256 of the passwords only), /out/redis/replica.conf (the replica's
                          login to the primary), /out/redis/health.password (the healthcheck's PING-only user);
- /out/prometheus/metrics-token  the bearer token Prometheus scrapes /metrics with.

Nothing is printed. Run again, it rewrites the hand-outs from the same stored secrets.
"""

from __future__ import annotations

import hashlib
import os
import secrets
import shlex
import sys
from collections.abc import Callable, Mapping
from pathlib import Path

from eventflow.system import SECRETS, load_secrets, service_env

SERVICE_UID = 10001  # the EventFlow image's user (Dockerfile)
NATS_HOSTS = ("nats1:4222", "nats2:4222", "nats3:4222")
REDIS_HOST = "redis:6379"
SERVICES = ("users", "events", "reservations", "gateway")
NATS_USERS = ("users", "events", "reservations")  # the gateway does not talk to NATS

# The Redis ACL users (deploy/redis/users.acl.template, shared with deploy/k8s): each service reaches only its own
# keys and channels, nobody may run admin or dangerous commands; `#<NAME>_SHA256` stands for a password's hash.
REDIS_USERS = (*SERVICES, "replica", "health")


def redis_acl(template: str, passwords: dict[str, str]) -> str:
    """The template with each `#<NAME>_SHA256` replaced by the SHA-256 of that user's password (Redis keeps only
    hashes); a user without a password here is left out."""
    lines = []
    for line in template.splitlines():
        for name, password in passwords.items():
            line = line.replace(f"#{name.upper()}_SHA256", "#" + hashlib.sha256(password.encode()).hexdigest())
        if "_SHA256" not in line:
            lines.append(line)
    return "\n".join(lines) + "\n"


def _stored(state: Path, name: str, make: Callable[[], str]) -> str:
    """A secret kept in the state volume (0600), made once."""
    path = state / name
    if path.exists():
        return path.read_text().strip()
    value = make()
    _write(path, value + "\n", 0o600)
    return value


def _write(path: Path, text: str, mode: int, uid: int = 0) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, mode)
    with os.fdopen(fd, "w") as out:
        out.write(text)
    os.chmod(tmp, mode)
    if os.geteuid() == 0:  # in the container; a test run as another user keeps its own files
        os.chown(tmp, uid, uid)
    os.replace(tmp, path)


def _password() -> str:
    return secrets.token_urlsafe(24)  # URL-safe: it goes into nats:// and redis:// URLs as is


def main(environ: Mapping[str, str] = os.environ) -> int:
    """SECRETS_STATE, SECRETS_OUT and ACL_TEMPLATE (the container's paths by default) say where things are."""
    state = Path(environ.get("SECRETS_STATE", "/state"))
    out = Path(environ.get("SECRETS_OUT", "/out"))
    template = Path(environ.get("ACL_TEMPLATE", "/opt/bootstrap/users.acl.template"))
    state.mkdir(parents=True, exist_ok=True)
    os.chmod(state, 0o700)
    names = (*SECRETS, "EVENTFLOW_ADMIN_EMAIL", "EVENTFLOW_ADMIN_PASSWORD")
    given = {name: environ[name] for name in names if environ.get(name)}  # Compose passes unset ones as ""
    try:
        system = load_secrets(state, given)
    except ValueError as err:
        print(f"secrets: {err}", file=sys.stderr)
        return 2
    nats = {name: _stored(state, f"nats-{name}.password", _password) for name in NATS_USERS}
    redis = {name: _stored(state, f"redis-{name}.password", _password) for name in REDIS_USERS}
    metrics_token = _stored(state, "metrics.token", _password)

    for service in SERVICES:
        env = {k: v for k, v in service_env(service, system).items() if k.startswith("EVENTFLOW_")}
        env["EVENTFLOW_REDIS_URL"] = f"redis://{service}:{redis[service]}@{REDIS_HOST}/0"
        env["EVENTFLOW_METRICS_TOKEN"] = metrics_token
        if service in nats:
            env["EVENTFLOW_NATS_URL"] = ",".join(f"nats://{service}:{nats[service]}@{host}" for host in NATS_HOSTS)
        lines = "".join(f"{name}={shlex.quote(value)}\n" for name, value in sorted(env.items()))
        _write(out / service / "env", lines, 0o400, SERVICE_UID)

    variables = "".join(f"EVENTFLOW_NATS_{name.upper()}_PASSWORD={nats[name]}\n" for name in NATS_USERS)
    _write(out / "nats" / "passwords.env", variables, 0o444)

    _write(out / "redis" / "users.acl", redis_acl(template.read_text(), redis), 0o444)
    _write(out / "redis" / "replica.conf", f"masteruser replica\nmasterauth {redis['replica']}\n", 0o444)
    _write(out / "redis" / "health.password", redis["health"] + "\n", 0o444)

    _write(out / "prometheus" / "metrics-token", metrics_token + "\n", 0o444)
    print("secrets: ready (" + ", ".join(SERVICES) + ", nats, redis, prometheus)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
