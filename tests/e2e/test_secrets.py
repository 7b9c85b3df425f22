from __future__ import annotations

import base64
import stat
from pathlib import Path

import pytest

from eventflow.system import ADMIN, LOCAL_ADMIN_EMAIL, SECRETS, client_secret, load_secrets, service_env


def test_keys_are_made_once_in_a_private_file_and_reused(tmp_path: Path) -> None:
    first = load_secrets(tmp_path, {})
    assert set(first) == {*SECRETS, *ADMIN}
    assert all(len(base64.b64decode(first[name])) == 32 for name in SECRETS)
    assert stat.S_IMODE((tmp_path / "secrets.env").stat().st_mode) == 0o600
    assert load_secrets(tmp_path, {}) == first


def test_with_no_admin_configured_a_local_admin_gets_a_generated_password(tmp_path: Path) -> None:
    made = load_secrets(tmp_path, {})
    assert made["EVENTFLOW_ADMIN_EMAIL"] == LOCAL_ADMIN_EMAIL
    assert len(made["EVENTFLOW_ADMIN_PASSWORD"]) >= 20
    assert made["EVENTFLOW_ADMIN_PASSWORD"] in (tmp_path / "secrets.env").read_text()


def test_a_configured_admin_is_used_and_never_written(tmp_path: Path) -> None:
    env = {"EVENTFLOW_ADMIN_EMAIL": "ops@example.com", "EVENTFLOW_ADMIN_PASSWORD": "a long secret phrase"}
    made = load_secrets(tmp_path, env)
    assert (made["EVENTFLOW_ADMIN_EMAIL"], made["EVENTFLOW_ADMIN_PASSWORD"]) == tuple(env.values())
    assert "a long secret phrase" not in (tmp_path / "secrets.env").read_text()
    with pytest.raises(ValueError, match="pair"):
        load_secrets(tmp_path, {"EVENTFLOW_ADMIN_EMAIL": "ops@example.com"})


def test_keys_from_the_environment_win_and_are_not_written(tmp_path: Path) -> None:
    mine = base64.b64encode(b"k" * 32).decode()
    keys = load_secrets(tmp_path, {"EVENTFLOW_MASTER_KEY": mine})
    assert keys["EVENTFLOW_MASTER_KEY"] == mine
    assert mine not in (tmp_path / "secrets.env").read_text()
    assert load_secrets(tmp_path, {})["EVENTFLOW_PSEUDONYM_KEY"] == keys["EVENTFLOW_PSEUDONYM_KEY"]


def test_each_service_gets_only_its_own_secrets(tmp_path: Path) -> None:
    system = {**load_secrets(tmp_path, {}), "EVENTFLOW_NATS_URL": "nats://x"}
    gateway, users, reservations = (service_env(name, system) for name in ("gateway", "users", "reservations"))
    assert not set(gateway) & {*SECRETS, *ADMIN} and gateway["EVENTFLOW_NATS_URL"] == "nats://x"
    assert set(users) >= {*SECRETS, *ADMIN}
    assert "EVENTFLOW_SERVICE_KEY" not in reservations and "EVENTFLOW_ADMIN_PASSWORD" not in reservations
    assert reservations["EVENTFLOW_CLIENT_SECRET"] == client_secret(system["EVENTFLOW_SERVICE_KEY"], "reservations")
    assert reservations["EVENTFLOW_CLIENT_SECRET"] != client_secret(system["EVENTFLOW_SERVICE_KEY"], "events")
