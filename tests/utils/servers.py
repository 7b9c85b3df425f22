"""Real nats-server and redis-server for the tests, on free ports, with data in a temporary folder."""

from __future__ import annotations

import base64
import os
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from eventflow.config import Settings
from eventflow.servers import ServerProcess, free_port, start_nats, start_redis
from eventflow.system import client_secret


@dataclass
class Servers:
    nats: ServerProcess
    redis: ServerProcess
    root: Path

    def settings(self, **overrides: object) -> Settings:
        values: dict[str, object] = {
            "nats_url": self.nats.url,
            "redis_url": self.redis.url,
            "master_key": TEST_MASTER_KEY,
            "pseudonym_key": TEST_PSEUDONYM_KEY,
            # Accounts: the first admin, a weak password hash (hundreds of users per run), and the service
            # key; the one client credential in these shared settings is the reservations service's.
            "service_key": TEST_SERVICE_KEY,
            "admin_email": ADMIN_EMAIL,
            "admin_password": ADMIN_PASSWORD,
            "password_hash_profile": "test",
            "client_id": "reservations",
            "client_secret": client_secret(TEST_SERVICE_KEY, "reservations"),
        }
        values.update(overrides)
        return Settings(**values)  # type: ignore[arg-type]

    def restart_nats(self) -> None:
        self.nats.stop()
        self.nats = start_nats(self.nats.port, self.nats.data_dir, self.nats.log_path)


TEST_MASTER_KEY = base64.b64encode(os.urandom(32)).decode()
TEST_PSEUDONYM_KEY = base64.b64encode(os.urandom(32)).decode()
TEST_SERVICE_KEY = base64.b64encode(os.urandom(32)).decode()
ADMIN_EMAIL = "admin@pruebas.eventflow.example"
ADMIN_PASSWORD = "frase secreta del operador principal"


@contextmanager
def running_servers(root: Path) -> Iterator[Servers]:
    nats = start_nats(free_port(), root / "nats", root / "nats.log")
    try:
        redis = start_redis(free_port(), root / "redis", root / "redis.log")
    except BaseException:
        nats.stop()
        raise
    servers = Servers(nats, redis, root)
    try:
        yield servers
    finally:
        servers.redis.stop()
        servers.nats.stop()
